"""inventory: reserves stock for paid orders (all lines or none) and keeps stock levels in its own database."""

from .app import SERVICE, create_app
from .core import Reservation, reserve
from .settings import InventorySettings

__all__ = ["SERVICE", "InventorySettings", "Reservation", "create_app", "reserve"]
