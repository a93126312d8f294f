"""eventfleet's shared runtime: how events travel and how workers run (broker factory, middlewares, launcher, CLI)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
