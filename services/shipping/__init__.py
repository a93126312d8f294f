"""shipping: books a shipment for every reserved order."""

from .core import schedule

__all__ = ["schedule"]
