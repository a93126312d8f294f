"""tracker: the order-status read model (the CQRS read side), folded from every topic of the flow."""

from .core import OrderStatus, apply

__all__ = ["OrderStatus", "apply"]
