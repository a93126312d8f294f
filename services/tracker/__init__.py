"""tracker: the order-status read model (the CQRS read side), folded from every topic of the flow."""

from fleet.runtime.read_model import ReadModel

from .app import SERVICE, create_app, track
from .core import OrderStatus, apply
from .queries import MIGRATIONS, order_status
from .settings import TrackerSettings

# Its state is only a fold of the flow's events (it emits nothing): `fleet rebuild tracker` builds it again from them.
READ_MODEL = ReadModel(tables=("order_status",), migrations=MIGRATIONS, fold=track)

__all__ = ["READ_MODEL", "SERVICE", "OrderStatus", "TrackerSettings", "apply", "create_app", "order_status"]
