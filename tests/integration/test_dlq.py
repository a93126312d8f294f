"""Dead-letter tools on the real broker: operators count and inspect what payments refused, a dry run moves nothing,
and a stale order replayed with the replay key is processed by payments, once, as the same event."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from contracts import OrderPlaced, PaymentAuthorized, PaymentDeclined, PrivateKey, Record, sign
from fleet.ops.dlq import REPLAY_GROUP, count_dead_letters, replay_dead_letters
from fleet.runtime.keys import REPLAY_SIGNER, KeyStore
from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import (
    RunningApps,
    TopicReader,
    a_record,
    an_order,
    as_raw,
    committed_offsets,
    end_offsets,
    produce_raw,
    signer_of,
    start_group_at_end,
)

DLQ = "orders.placed.v1.dlq"
OUTCOMES = (PaymentAuthorized, PaymentDeclined)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Refused:
    """What this module made payments refuse, by the reason it was refused for."""

    group: str
    records: dict[str, Record]

    @property
    def ids(self) -> set[str]:
        return {record.envelope.id for record in self.records.values()}

    def mine(self, letter) -> bool:
        """Dead-letter topics are shared by the whole run (and earlier runs): only ours count here."""
        return letter.header("ce_id") in self.ids


def _poison() -> dict[str, Record]:
    def order():
        return a_record(an_order())

    return {
        "unknown_key": a_record(an_order(), signer=PrivateKey.generate(f"stranger-{uuid.uuid4().hex[:6]}")),
        "invalid_payload": sign(replace(order(), value=b'{"order_id": "x", "items": []}'), signer_of("storefront")),
        "stale": a_record(an_order(), now=datetime.now(timezone.utc) - timedelta(minutes=10)),
    }


@pytest.fixture(scope="module")
async def refused(kafka):
    """Payments runs for the whole module: it refuses three poison orders now, and handles what is replayed later."""
    group = f"it-dlq-{uuid.uuid4().hex[:8]}"
    await start_group_at_end(kafka, group, [OrderPlaced])
    made = Refused(group, _poison())
    payments = create_payments(PaymentsSettings(group_id=group, kafka=KafkaSettings(bootstrap_servers=kafka)))
    async with RunningApps(payments), TopicReader(kafka, raw_topics=[DLQ]) as reader:
        await produce_raw(kafka, [as_raw(record) for record in made.records.values()])
        await reader.wait_for(lambda seen: made.ids <= {s.headers.get("ce_id") for s in seen if s.headers.get("dlq-group") == group})
        yield made


def fleet_dlq(*args: str) -> subprocess.CompletedProcess:
    """The sub-app as an operator runs it, in its own process (it is registered in `fleet` as `fleet dlq`)."""
    command = [sys.executable, "-c", "from fleet.cli.dlq import dlq_app; dlq_app()", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return done


async def committed(kafka: str, group: str) -> dict:
    """What the group has committed on each partition of the dead-letter topic (-1 where it never committed)."""
    return await committed_offsets(kafka, group, [TopicPartition(DLQ, p) for p in range(6)])


def replay_keys(keys_dir) -> KeyStore:
    return KeyStore.for_signer(keys_dir, REPLAY_SIGNER)


async def test_ls_counts_the_dead_letters_by_reason_and_by_consumer_group(kafka, refused):
    counts = await count_dead_letters(kafka, [DLQ], select=refused.mine)
    assert counts == {DLQ: {("unknown_key", refused.group): 1, ("invalid_payload", refused.group): 1, ("stale", refused.group): 1}}
    listed = json.loads(fleet_dlq("ls", "orders.placed.v1", "--json").stdout)
    assert listed[DLQ]["by_reason"]["stale"]["by_group"][refused.group] == 1


async def test_show_tells_why_each_was_refused_where_it_came_from_and_whose_event_it_is(kafka, refused):
    rows = [row for row in json.loads(fleet_dlq("show", DLQ, "--limit", "10", "--json").stdout) if row["ce_id"] in refused.ids]
    assert {row["reason"]: row["ce_id"] for row in rows} == {reason: r.envelope.id for reason, r in refused.records.items()}
    for row in rows:
        assert (row["original_topic"], row["group"], row["service"]) == ("orders.placed.v1", refused.group, "payments")
        assert row["failed_at"] and row["detail"] and row["original_offset"] >= 0
    stale = refused.records["stale"]
    text = fleet_dlq("show", "orders.placed.v1", "--reason", "stale", "--limit", "1").stdout
    assert stale.key in text and stale.envelope.id in text and stale.envelope.keyid in text
    assert stale.envelope.signature not in text


async def test_a_dry_run_prints_exactly_what_would_move_and_moves_nothing(kafka, refused, keys_dir):
    before = (await end_offsets(kafka, ["orders.placed.v1"]), await committed(kafka, REPLAY_GROUP))
    would = json.loads(fleet_dlq("replay", "orders.placed.v1", "--reason", "stale", "--dry-run", "--json").stdout)
    assert would["dry_run"] and refused.records["stale"].envelope.id in [moved["ce_id"] for moved in would["moved"]]
    report = await replay_dead_letters(kafka, DLQ, replay_keys(keys_dir), dry_run=True, group=f"{refused.group}-dry", select=refused.mine)
    assert report.event_ids == [refused.records["stale"].envelope.id]
    assert {skip.why for skip in report.skipped} == {"unknown_key", "invalid_payload"}
    await asyncio.sleep(1)  # anything a dry run had sent would be on the broker by now
    assert (await end_offsets(kafka, ["orders.placed.v1"]), await committed(kafka, REPLAY_GROUP)) == before
    assert await committed(kafka, f"{refused.group}-dry") == await committed(kafka, f"never-used-{uuid.uuid4().hex}")


async def test_a_replayed_stale_order_is_processed_as_the_same_event_and_is_never_moved_twice(kafka, refused, keys_dir):
    stale, group = refused.records["stale"], f"{refused.group}-replay"
    async with TopicReader(kafka, (OrderPlaced, *OUTCOMES)) as reader:
        report = await replay_dead_letters(kafka, DLQ, replay_keys(keys_dir), reason="stale", group=group, select=refused.mine)
        assert report.event_ids == [stale.envelope.id] and report.moved_by_reason == {"stale": 1}
        seen = await reader.wait_for_keys([stale.key], per_key=2)
    [order] = [s for s in seen if s.topic == "orders.placed.v1"]
    [outcome] = [s for s in seen if s.topic != "orders.placed.v1"]
    assert outcome.headers["ce_causationid"] == stale.envelope.id, "payments handled the replayed order as the original event"
    assert order.headers["ce_id"] == stale.envelope.id and order.headers["ce_keyid"] == signer_of(REPLAY_SIGNER).kid
    assert order.headers["eventfleet-original-keyid"] == stale.envelope.keyid and order.headers["ce_time"] > stale.envelope.time
    assert order.headers["eventfleet-replayed-from"].startswith(f"{DLQ}:") and not [h for h in order.headers if h.startswith("dlq-")]

    again = await replay_dead_letters(kafka, DLQ, replay_keys(keys_dir), reason="stale", group=group, select=refused.mine)
    plain = await replay_dead_letters(kafka, DLQ, replay_keys(keys_dir), group=group, select=refused.mine)
    assert again.moved == plain.moved == [], "what the first replay moved is never moved again"
    assert {skip.why for skip in plain.skipped} == {"unknown_key", "invalid_payload"}, "the filtered replay lost none of the others"
