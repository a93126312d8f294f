"""Demo orders: a seeded generator of realistic OrderPlacedV2 events, and the upstream publisher `fleet demo` runs.

The generator is pure; the publishers sign and send as the storefront (orders) and the warehouse (stock)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import UTC, datetime
from typing import Callable, Iterator

from contracts import Envelope, OrderItem, OrderPlacedV2, PrivateKey, StockReceived
from contracts.connection import KafkaConnection
from contracts.publisher import Publisher

__all__ = [
    "CATALOGUE",
    "WAREHOUSE",
    "demo_orders",
    "demo_stock",
    "publish_demo_orders",
    "publish_demo_stock",
    "trickle_demo_orders",
]

# sku → unit price in cents
CATALOGUE = {
    "SKU-TEA-001": 1250,
    "SKU-MUG-002": 1800,
    "SKU-KETTLE-003": 4999,
    "SKU-BEANS-004": 1599,
    "SKU-GRINDER-005": 8900,
    "SKU-ESPRESSO-006": 64900,
    "SKU-FILTER-007": 499,
    "SKU-SCALE-008": 2990,
}
CUSTOMERS = tuple(f"cus-{n}" for n in range(1000, 1020))
DEMO_SERVICE = "storefront"
WAREHOUSE = "warehouse"
# Units per delivery: plenty of the cheap things, few espresso machines, so a backorder shows up now and then.
DELIVERY_UNITS = {"SKU-ESPRESSO-006": 4, "SKU-GRINDER-005": 12}
DEFAULT_DELIVERY_UNITS = 60


def demo_orders(count: int, *, seed: int | None = None, now: datetime | None = None) -> Iterator[OrderPlacedV2]:
    """Mostly small orders in accepted currencies; an espresso machine now and then goes over a customer's limit,
    and about one in twenty is in a currency payments does not take, so every outcome shows up. Half come through the
    web shop, the rest from stores and the phone line (orders.placed.v2)."""
    rng = random.Random(seed)
    for _ in range(count):
        lines = rng.sample(sorted(CATALOGUE), k=rng.randint(1, 3))
        items = tuple(
            OrderItem(sku=sku, quantity=_quantity(rng, CATALOGUE[sku]), unit_price_cents=CATALOGUE[sku])
            for sku in lines
        )
        yield OrderPlacedV2(
            order_id=f"ord-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
            customer_id=rng.choice(CUSTOMERS),
            items=items,
            currency="JPY" if rng.random() < 0.05 else rng.choice(("EUR", "EUR", "USD", "GBP")),
            total_cents=sum(i.quantity * i.unit_price_cents for i in items),
            placed_at=now or datetime.now(UTC),
            channel=rng.choice(("web", "web", "store", "phone")),
        )


def demo_stock(now: datetime | None = None, *, batch: str | None = None) -> list[StockReceived]:
    """One delivery of every catalogue product; `batch` names it (a new one per call unless given)."""
    batch = batch or uuid.uuid4().hex[:8]
    moment = now or datetime.now(UTC)
    return [
        StockReceived(
            receipt_id=f"rcpt-{batch}-{n:02d}",
            sku=sku,
            quantity=DELIVERY_UNITS.get(sku, DEFAULT_DELIVERY_UNITS),
            received_at=moment,
        )
        for n, sku in enumerate(sorted(CATALOGUE))
    ]


async def publish_demo_stock(bootstrap_servers: str | KafkaConnection, signer: PrivateKey) -> list[Envelope]:
    """Plays the warehouse: one delivery of every product, so inventory has stock to reserve."""
    async with Publisher(bootstrap_servers, service=WAREHOUSE, signer=signer) as publisher:
        return await publisher.publish_many(demo_stock())


def _quantity(rng: random.Random, unit_price_cents: int) -> int:
    # Nobody buys three espresso machines; two of them is what goes over a limit now and then.
    return rng.randint(1, 2) if unit_price_cents > 10_000 else rng.randint(1, 3)


async def publish_demo_orders(
    bootstrap_servers: str | KafkaConnection, count: int, signer: PrivateKey, *, seed: int | None = None
) -> list[Envelope]:
    """Publishes `count` signed orders and returns once the broker has acknowledged every one."""
    async with Publisher(bootstrap_servers, service=DEMO_SERVICE, signer=signer) as publisher:
        return await publisher.publish_many(demo_orders(count, seed=seed))


async def trickle_demo_orders(
    bootstrap_servers: str | KafkaConnection, every_s: float, stop: asyncio.Event, signer: Callable[[], PrivateKey]
) -> int:
    """Publishes one order every `every_s` seconds until `stop` is set, each signed by the signer's current key.

    Returns how many it published."""
    published = 0
    async with Publisher(bootstrap_servers, service=DEMO_SERVICE, signer=signer()) as publisher:
        while not stop.is_set():
            publisher.signer = signer()  # a key rotated while the trickle runs is picked up
            await publisher.publish(next(demo_orders(1)))
            published += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every_s)
    return published
