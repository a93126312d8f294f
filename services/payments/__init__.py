"""payments: authorizes or declines each placed order by the customer's credit rules."""

from .app import SERVICE, create_app
from .core import CreditPolicy, decide
from .settings import PaymentsSettings

__all__ = ["SERVICE", "CreditPolicy", "PaymentsSettings", "create_app", "decide"]
