"""Hostile records, fuzzed (hypothesis), thrown at a worker's consume path: truncated and oversized values, deep nesting,
huge integers, random bytes, non-UTF-8 and duplicated headers, header values near the size limit. None crashes the
worker, none is accepted, memory stays bounded, each is dead-lettered with a reason, and a valid order still gets through."""

import asyncio
import json
import time
import tracemalloc
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord
from faststream.kafka import TestKafkaBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import PaymentAuthorized, sign
from fleet.runtime.delivery.dead_letters import MemorySink
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import a_record, an_order, capture, in_memory, signer_of

# Every reason a refused record may carry (docs/wire-format.md, docs/dead-letters.md).
REASONS = {"oversize", "missing_header", "invalid_header", "duplicate_header", "wrong_type", "invalid_key", "unknown_key",
           "key_not_allowed", "key_expired", "bad_signature", "stale", "invalid_payload", "permanent_error", "retries_exhausted"}
TOPIC = "orders.placed.v1"
MAX_HEADER_BYTES = 1024 * 1024  # the broker's default message.max.bytes bounds what a header can carry on the wire


@dataclass(frozen=True)
class Hostile:
    """A record as the consumer would receive it, and how it was made (for the failure message)."""

    how: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def _base():
    return a_record(an_order())


def _signed(value: bytes) -> Hostile:
    """A correctly signed record around a hostile value: only the payload checks can refuse it."""
    from dataclasses import replace

    record = sign(replace(_base(), value=value), signer_of("storefront"))
    return Hostile("signed hostile value", record.key.encode(), record.value, tuple(record.raw_headers()))


def _nested(depth: int) -> bytes:
    return b'{"order_id": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


def _huge_integer(digits: int) -> bytes:
    order = json.loads(_base().value)
    order["items"][0]["quantity"] = int("9" * digits)
    return json.dumps(order).encode()


@st.composite
def hostile_records(draw) -> Hostile:
    record = _base()
    key, value, headers = record.key.encode(), record.value, tuple(record.raw_headers())
    kind = draw(st.sampled_from(["truncated", "oversized", "nested", "huge_int", "random_value", "random_key", "non_utf8",
                                 "duplicated", "huge_header", "no_key", "no_value"]))
    if kind == "truncated":
        return Hostile(kind, key, value[: draw(st.integers(0, len(value) - 1))], headers)
    if kind == "oversized":
        return draw(st.sampled_from([Hostile(kind, key, value + b" " * 20_000, headers), _signed(b" " * 17_000 + value)]))
    if kind == "nested":
        return _signed(_nested(draw(st.integers(50, 5_000))))
    if kind == "huge_int":
        return _signed(_huge_integer(draw(st.integers(20, 4_000))))
    if kind == "random_value":
        junk = draw(st.binary(max_size=2048))
        return Hostile(kind, key, junk, headers) if draw(st.booleans()) else _signed(junk)
    if kind == "random_key":
        return Hostile(kind, draw(st.binary(min_size=1, max_size=64).filter(lambda k: k != key)), value, headers)
    if kind == "non_utf8":
        name = draw(st.sampled_from([n for n, _ in headers]))
        junk = draw(st.binary(min_size=1, max_size=16).filter(lambda b: not _utf8(b)))
        return Hostile(f"{kind} {name}", key, value, tuple((n, junk if n == name else v) for n, v in headers))
    if kind == "duplicated":
        name, raw = draw(st.sampled_from(headers))
        copy = raw if draw(st.booleans()) else draw(st.binary(max_size=32))
        where = draw(st.integers(0, len(headers)))
        return Hostile(f"{kind} {name}", key, value, headers[:where] + ((name, copy),) + headers[where:])
    if kind == "huge_header":
        name = draw(st.sampled_from([n for n, _ in headers]))
        size = draw(st.integers(MAX_HEADER_BYTES // 2, MAX_HEADER_BYTES))
        return Hostile(f"{kind} {name}", key, value, tuple((n, b"x" * size if n == name else v) for n, v in headers))
    if kind == "no_key":
        return Hostile(kind, None, value, headers)
    return Hostile(kind, key, None, headers)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _consumer_record(hostile: Hostile, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic=TOPIC, partition=0, offset=offset, timestamp=int(time.time() * 1000), timestamp_type=1,
                          key=hostile.key, value=hostile.value, checksum=None, serialized_key_size=len(hostile.key or b""),
                          serialized_value_size=len(hostile.value or b""), headers=list(hostile.headers))


async def _throw(records: list[Hostile], store: str) -> tuple[list, list, int]:
    """Every hostile record, then a valid order, through the payments worker's own consume path (its batch runner and
    all)."""
    app = in_memory(create_payments, PaymentsSettings(store_url=store))
    app.broker.failures.sink = dead = MemorySink()
    authorized = capture(app.broker, PaymentAuthorized)
    valid = _base()
    async with TestKafkaBroker(app.broker):
        await app.start()
        subscriber = next(s for s in app.broker.subscribers if TOPIC in getattr(s, "topic_names_for_subscribe", ()))
        # One batch of them, as a poll would hand them over: it must return, whatever the records.
        await subscriber.consume(tuple(_consumer_record(hostile, offset) for offset, hostile in enumerate(records)))
        await app.broker.publish(valid.value, valid.topic, key=valid.key.encode(), headers=valid.headers)
        await app.stop()
    return dead.sent, authorized, valid


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=st.lists(hostile_records(), min_size=1, max_size=12))
def test_no_hostile_record_crashes_the_worker_or_is_accepted_and_each_is_dead_lettered_with_a_reason(records, tmp_path_factory):
    store = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'p.db'}"
    tracemalloc.start()
    try:
        dead, authorized, valid = asyncio.run(_throw(records, store))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [a.key for a in authorized] == [valid.key], "only the valid order is decided on, after all the hostile ones"
    assert len(dead) == len(records), f"one dead letter per hostile record: {[r.how for r in records]}"
    for (topic, _, _, headers), hostile in zip(dead, records):
        assert topic == "orders.placed.v1.dlq" and headers["dlq-reason"] in REASONS, (hostile.how, headers.get("dlq-reason"))
        assert headers["dlq-detail"], hostile.how
    # Bounded: a few copies of the largest record at most (a 1 MiB header is held by the record, its dead letter and a
    # copy or two on the way), never a blow-up from nesting or huge integers.
    largest = max(len(r.value or b"") + sum(len(v) for _, v in r.headers) for r in records)
    assert peak < 48 * 1024 * 1024 + 8 * largest, f"peak {peak / 2**20:.1f} MiB"
