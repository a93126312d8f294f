"""Notifications' table in its store: each notification once, by its id, whatever is redelivered or republished."""

from __future__ import annotations

from fleet.runtime.store import Transaction

from .core import FEED_COLUMNS, Notification, feed_line

__all__ = ["MIGRATIONS", "channel_of", "feed_lines", "record_once", "remember_channel"]

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
    # Where each order was placed (orders.placed.v2), for the text of its notifications.
    """CREATE TABLE IF NOT EXISTS order_channels (
        order_id TEXT PRIMARY KEY,
        channel TEXT NOT NULL
    )""",
]


async def remember_channel(tx: Transaction, order_id: str, channel: str) -> None:
    """Keeps the order's channel; the first one heard stays (a redelivery changes nothing)."""
    await tx.execute(
        "INSERT INTO order_channels (order_id, channel) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING",
        (order_id, channel),
    )


async def channel_of(tx: Transaction, order_id: str) -> str | None:
    """The order's channel, or None while its order has not been heard (it travels on another topic)."""
    row = await tx.fetchone("SELECT channel FROM order_channels WHERE order_id = ?", (order_id,))
    return None if row is None else str(row[0])


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
