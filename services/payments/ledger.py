"""Payments' ledger in its store: at most one charge per order, whatever is redelivered or republished."""

from __future__ import annotations

from contracts import PaymentAuthorized
from fleet.runtime.store import Transaction

__all__ = ["MIGRATIONS", "charge_for", "record_charge"]

MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS ledger (
        order_id TEXT PRIMARY KEY,
        payment_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        amount_cents BIGINT NOT NULL,
        currency TEXT NOT NULL,
        charged_at TEXT NOT NULL
    )""",
]


async def charge_for(tx: Transaction, order_id: str) -> str | None:
    """The payment id of the order's charge, if it was charged already."""
    row = await tx.fetchone("SELECT payment_id FROM ledger WHERE order_id = ?", (order_id,))
    return row[0] if row else None


async def record_charge(tx: Transaction, payment: PaymentAuthorized) -> None:
    await tx.execute(
        "INSERT INTO ledger (order_id, payment_id, customer_id, amount_cents, currency, charged_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            payment.order_id,
            payment.payment_id,
            payment.customer_id,
            payment.amount_cents,
            payment.currency,
            payment.authorized_at.isoformat(),
        ),
    )
