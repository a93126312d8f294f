"""shipping: books a shipment for every reserved order."""

from .app import SERVICE, create_app
from .core import schedule
from .settings import ShippingSettings

__all__ = ["SERVICE", "ShippingSettings", "create_app", "schedule"]
