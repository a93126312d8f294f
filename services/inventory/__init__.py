"""inventory: reserves stock for paid orders (all lines or none) and keeps stock levels in its own database."""

from .core import Reservation, reserve

__all__ = ["Reservation", "reserve"]
