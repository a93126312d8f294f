"""Operator control of a running worker: the standing orders folded from fleet.control.v1, and how a worker obeys."""

from .hold import CONTROL_TOPIC, Hold, attach_control, verified_command
from .state import ALL_TOPICS, Held, Seek, fold, held_topic

__all__ = [
    "ALL_TOPICS",
    "CONTROL_TOPIC",
    "Held",
    "Hold",
    "Seek",
    "attach_control",
    "fold",
    "held_topic",
    "verified_command",
]
