"""notifications: records a customer message for every payment outcome and says so on notifications.sent.v1."""

from .app import SERVICE, create_app
from .core import Notification, compose
from .outbox import FileOutbox
from .settings import NotificationsSettings

__all__ = ["SERVICE", "FileOutbox", "Notification", "NotificationsSettings", "compose", "create_app"]
