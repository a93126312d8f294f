"""The bench relay's contract: two event types and a registry of their topics, one registry per signing algorithm."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from contracts import Event, Registry, Topic
from contracts.signing import ED25519, HMAC_SHA256

__all__ = ["ALGORITHMS", "RELAY", "SOURCE", "BenchOrderReceived", "BenchOrderRelayed", "bench_registry", "relay"]

SOURCE = "bench-source"  # signs the prefilled input, as an upstream system would
RELAY = "bench-relay"  # the relay service: verifies the input, signs its output
ALGORITHMS = {"ed25519": ED25519, "hmac": HMAC_SHA256}


class BenchOrderReceived(Event):
    """An order the bench relay receives (tests.bench.events: about 500 bytes of JSON)."""

    event_id: str = Field(description="The bench's id of the event.", examples=["bench-000000001"])
    seq: int = Field(description="Position in the prefill.", examples=[1], ge=0)
    order_id: str = Field(description="The order, and the record key.", examples=["ORD-000001"], min_length=1, max_length=64)
    amount_cents: int = Field(description="Order total in cents.", examples=[1250], ge=0)
    currency: str = Field(description="ISO 4217 code.", examples=["EUR"], min_length=3, max_length=3)
    note: str = Field(description="Padding to the bench's event size.", examples=["xxxx"], max_length=1000)


class BenchOrderRelayed(Event):
    """The relay's decision on a received order: the same order, with its priority."""

    order_id: str = Field(description="The order, and the record key.", examples=["ORD-000001"], min_length=1, max_length=64)
    seq: int = Field(description="Position of the received event in the prefill.", examples=[1], ge=0)
    amount_cents: int = Field(description="Order total in cents.", examples=[1250], ge=0)
    currency: str = Field(description="ISO 4217 code.", examples=["EUR"], min_length=3, max_length=3)
    priority: str = Field(description="`high` from 50.00 up, else `normal`.", examples=["normal"], pattern="^(high|normal)$")
    note: str = Field(description="Carried over from the received event.", examples=["xxxx"], max_length=1000)


def relay(order: BenchOrderReceived) -> BenchOrderRelayed:
    """The relay's pure decision (its `core`): no I/O, as in every fleet service."""
    return BenchOrderRelayed(order_id=order.order_id, seq=order.seq, amount_cents=order.amount_cents, currency=order.currency,
                             priority="high" if order.amount_cents >= 5000 else "normal", note=order.note)


@lru_cache
def bench_registry(alg: str) -> Registry:
    """`bench_<alg>.order_received.v1` → `bench_<alg>.order_relayed.v1`: one pair per algorithm, so each keeps its input."""
    domain = f"bench_{alg}"
    return Registry([
        Topic(name=f"{domain}.order_received.v1", model=BenchOrderReceived, key_field="order_id", owner=SOURCE,
              consumers=(RELAY,), description="Orders the bench prefills, signed by bench-source."),
        Topic(name=f"{domain}.order_relayed.v1", model=BenchOrderRelayed, key_field="order_id", owner=RELAY,
              description="Orders relayed by the bench relay, signed by bench-relay."),
    ])
