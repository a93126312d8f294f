"""tracker: the order-status read model (the CQRS read side), folded from every topic of the flow."""

from .app import SERVICE, create_app
from .core import OrderStatus, apply
from .queries import order_status
from .settings import TrackerSettings

__all__ = ["SERVICE", "OrderStatus", "TrackerSettings", "apply", "create_app", "order_status"]
