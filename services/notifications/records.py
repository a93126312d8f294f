"""Notifications' table in its store: each notification once, by its id, whatever is redelivered or republished."""

from __future__ import annotations

from fleet.runtime.store import Transaction

from .core import FEED_COLUMNS, Notification, feed_line

__all__ = ["MIGRATIONS", "feed_lines", "record_once"]

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS notifications (
        notification_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        template TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )""",
]


async def record_once(tx: Transaction, notification: Notification) -> bool:
    """True if this is the first time; False when the notification was recorded before (nothing changes)."""
    sent = notification.sent
    changed = await tx.execute(
        "INSERT INTO notifications (notification_id, order_id, customer_id, template, subject, body, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (notification_id) DO NOTHING",
        (
            sent.notification_id,
            sent.order_id,
            sent.customer_id,
            sent.template,
            notification.subject,
            notification.body,
            sent.sent_at.isoformat(),
        ),
    )
    return changed == 1


async def feed_lines(tx: Transaction) -> list[dict]:
    """Every recorded notification as its mail-feed line, oldest first."""
    rows = await tx.fetchall(f"SELECT {', '.join(FEED_COLUMNS)} FROM notifications ORDER BY recorded_at")
    return [feed_line(*row) for row in rows]
