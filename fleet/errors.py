"""What a handler raises to say how its failure should be treated: never again (permanent) or later (transient)."""

__all__ = ["PermanentError", "TransientError"]


class PermanentError(Exception):
    """Retrying cannot help (the event contradicts the service's state, a rule refuses it): straight to the dead-letter topic."""


class TransientError(Exception):
    """It may work later (a dependency is down, a lock is taken): retried after growing delays, then dead-lettered."""
