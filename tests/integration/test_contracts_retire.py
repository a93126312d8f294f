"""`fleet contracts retire` on the real brokers (issue 19): refused while a consumer group has lag on the topic or on one
of its retry topics, or while an ACL lets a principal write it; allowed once neither holds, then lifecycle.json says it
is retired. Every lifecycle file written here is a temporary one: the repository's orders.placed.v1 is never retired.

On the shared test broker orders.placed.v1 has the lag of every test group that ever read it, so retiring it is refused
there for good; the way to retired is shown on a superseded topic of the test's own (a Registry of its own)."""

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts import REGISTRY, OrderPlaced, OrderPlacedV2, Registry, Topic
from contracts.connection import client_options
from contracts.registry import with_lifecycle
from fleet.ops.acls import Acl, _CreateAcls, _DeleteAcls, _existing_acls, gateway_acls, plan_acls, upstream_acls
from fleet.ops.retire import RetireBlocked, close, gather, read_lifecycle, retire
from tests.support import (
    NotYet,
    a_record,
    an_order,
    as_raw,
    assert_fails_in_one_line,
    commit_at_end,
    eventually,
    produce_raw,
    run_fleet,
)

REPO = Path(__file__).resolve().parents[2]
ORDERS_V1 = REGISTRY.named("orders.placed.v1")


def fleet(*args: str, cwd: Path = REPO, pythonpath: str = str(REPO)):
    return run_fleet(*args, cwd=cwd, env={**os.environ, "PYTHONPATH": pythonpath}, timeout_s=120)


def own_versions() -> Registry:
    """A superseded topic and its successor that only this test writes and reads, owned by the storefront."""
    family = f"retiretest{uuid.uuid4().hex[:10]}.placed"
    return Registry([
        Topic(f"{family}.v1", OrderPlaced, "order_id", "storefront", "Orders of the test.", consumers=("payments",), partitions=2),
        Topic(f"{family}.v2", OrderPlacedV2, "order_id", "storefront", "Orders of the test.", consumers=("payments",), partitions=2),
    ])


async def create_topics(connection, registry: Registry) -> None:
    admin = AIOKafkaAdminClient(**client_options(connection))
    await admin.start()
    try:
        names = [name for t in registry for name in (t.name, *t.retry_topics)]
        await admin.create_topics([NewTopic(name, 2, 1) for name in names])
    finally:
        await admin.close()


async def delete_topics(connection, registry: Registry) -> None:
    admin = AIOKafkaAdminClient(**client_options(connection))
    await admin.start()
    try:
        await admin.delete_topics([name for t in registry for name in (t.name, *t.retry_topics)])
    finally:
        await admin.close()


async def commit(connection, group: str, offsets: dict[tuple[str, int], int]) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    consumer = AIOKafkaConsumer(**client_options(connection), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
        consumer.assign(list(partitions))
        await consumer.commit(partitions)
    finally:
        await consumer.stop()


def raw(topic: str, n: int) -> list:
    """n records on partition 0 of the topic: lag counts records, whatever they hold."""
    return [(topic, f"k-{i}".encode(), b"{}", [], 0) for i in range(n)]


# ---- the shared broker's orders.placed.v1 ---------------------------------------------------------------------------


async def test_retiring_orders_placed_v1_is_refused_in_one_line_while_a_group_lags_on_it_and_nothing_is_written(kafka, group_id, tmp_path):
    await commit_at_end(kafka, group_id, [ORDERS_V1.name])
    await produce_raw(kafka, [as_raw(a_record(an_order()))])  # one order my group has not read
    lags = (await gather(kafka, ORDERS_V1)).lags[ORDERS_V1.name]
    assert lags[group_id] == 1

    lifecycle = tmp_path / "lifecycle.json"
    line = assert_fails_in_one_line(
        await asyncio.to_thread(fleet, "contracts", "retire", "orders.placed.v1", "--lifecycle", str(lifecycle), "--bootstrap", kafka), 1)
    assert line.startswith("orders.placed.v1 is not retired: ") and "consumer group(s) still have records of it to read" in line
    assert f"the broker at {kafka} has no authorizer" in line  # the plain test broker: no ACL could be read
    assert not lifecycle.exists()

    await commit_at_end(kafka, group_id, [ORDERS_V1.name])
    assert (await gather(kafka, ORDERS_V1)).lags[ORDERS_V1.name][group_id] == 0  # read to its end, it counts no more


async def test_a_topic_is_retired_once_no_group_lags_on_it_or_on_its_retry_topics(kafka, group_id, tmp_path):
    registry = own_versions()
    old = registry.topics[0]
    lifecycle = tmp_path / "lifecycle.json"
    await create_topics(kafka, registry)
    try:
        await produce_raw(kafka, raw(old.name, 3) + raw(old.retry_topic(2), 1))
        await commit(kafka, group_id, {(old.name, 0): 1})
        await commit(kafka, f"{group_id}.retry.2", {(old.retry_topic(2), 0): 0})

        with pytest.raises(RetireBlocked) as refused:
            await retire(kafka, old.name, lifecycle_file=lifecycle, registry=registry, no_acls=True)
        assert f"2 consumer group(s) still have records of it to read: {group_id} (2 on {old.name}); " \
               f"{group_id}.retry.2 (1 on {old.retry_topic(2)})" in str(refused.value)
        assert not lifecycle.exists()

        await commit(kafka, group_id, {(old.name, 0): 3})
        with pytest.raises(RetireBlocked, match=rf"1 consumer group\(s\) .*{group_id}\.retry\.2 \(1 on"):
            await retire(kafka, old.name, lifecycle_file=lifecycle, registry=registry, no_acls=True)
        with pytest.raises(RetireBlocked, match="has no authorizer"):  # without --no-acls, the plain broker refuses
            await retire(kafka, old.name, lifecycle_file=lifecycle, registry=registry)

        await commit(kafka, f"{group_id}.retry.2", {(old.retry_topic(2), 0): 1})
        done = await retire(kafka, old.name, lifecycle_file=lifecycle, registry=registry, no_acls=True)
        assert not done.already and done.facts.lags[old.name][group_id] == 0
        assert read_lifecycle(lifecycle) == {"retired": {old.name: done.day}}
        retired = Registry(with_lifecycle(registry.topics, read_lifecycle(lifecycle))).named(old.name)
        assert retired.retired and retired.retired_on == done.day
    finally:
        await delete_topics(kafka, registry)


@pytest.mark.parametrize("state", ["closed", "retired"])
async def test_fleet_publish_refuses_a_closed_or_retired_version_in_one_line(kafka, tmp_path, state):
    """A checkout whose lifecycle.json closed or retired orders.placed.v1 (a copy: the repository's stays as it is)."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "contracts", copy / "contracts", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "contracts" / "lifecycle.json").write_text(json.dumps({state: {"orders.placed.v1": "2026-12-07"}}))
    result = await asyncio.to_thread(fleet, "publish", "orders.placed.v1", "--json", an_order().model_dump_json(),
                                     "--bootstrap", kafka, cwd=copy, pythonpath=f"{copy}:{REPO}")
    line = assert_fails_in_one_line(result, 64)
    assert line == f"orders.placed.v1 is {state} (since 2026-12-07), contracts/lifecycle.json: nothing may write it; " \
                   "publish orders.placed.v2 (OrderPlacedV2) instead"


# ---- the secure broker: its ACLs ------------------------------------------------------------------------------------


async def acls_on(admin_connection, names: set[str]) -> set[Acl]:
    admin = AIOKafkaAdminClient(**client_options(admin_connection))
    await admin.start()
    try:
        return {acl for acl in await _existing_acls(admin) if acl.resource in names}
    finally:
        await admin.close()


async def change_acls(admin_connection, *, create=(), delete=()) -> None:
    admin = AIOKafkaAdminClient(**client_options(admin_connection))
    await admin.start()
    try:
        if create:
            await admin._send_request(_CreateAcls(tuple(create)))
        if delete:
            await admin._send_request(_DeleteAcls(tuple(delete)))
    finally:
        await admin.close()


def planned_writes(registry: Registry) -> set[Acl]:
    """What `fleet acl plan` grants the storefront and the gateway on the registry's topics."""
    names = {t.name for t in registry}
    return {a for a in upstream_acls("storefront", registry) | gateway_acls(registry) if a.resource in names}


async def test_on_a_secure_broker_the_fleet_s_acls_on_orders_placed_v1_refuse_its_retirement(secure_kafka, tmp_path):
    with pytest.raises(RetireBlocked) as refused:
        await retire(secure_kafka.admin, "orders.placed.v1", lifecycle_file=tmp_path / "lifecycle.json")
    assert "User:gateway WRITE on TOPIC:orders.placed.v1, User:storefront WRITE on TOPIC:orders.placed.v1" in str(refused.value)
    assert "has no authorizer" not in str(refused.value)
    assert not (tmp_path / "lifecycle.json").exists()


async def test_on_a_secure_broker_close_takes_the_producers_write_away_and_then_retire_is_allowed(secure_kafka, tmp_path):
    admin = secure_kafka.admin
    registry = own_versions()
    old = registry.topics[0]
    lifecycle = tmp_path / "lifecycle.json"
    names = {t.name for t in registry}
    await create_topics(admin, registry)
    before = planned_writes(registry)
    await change_acls(admin, create=before)
    try:
        await eventually(lambda: _shows(admin, names, before), "the broker to show the planned ACLs")
        with pytest.raises(RetireBlocked, match=rf"ACLs still let 2 principal\(s\) write it: User:gateway WRITE on TOPIC:{old.name}, "
                                                rf"User:storefront WRITE on TOPIC:{old.name}"):
            await retire(admin, old.name, lifecycle_file=lifecycle, registry=registry)

        close(old.name, lifecycle_file=lifecycle, registry=registry)
        closed = Registry(with_lifecycle(registry.topics, read_lifecycle(lifecycle)))
        plan = plan_acls(planned_writes(closed), await acls_on(admin, names), ["storefront", "gateway"])
        assert {(a.principal, a.resource, a.operation) for a in plan.remove} == {
            (p, old.name, op) for p in ("User:storefront", "User:gateway") for op in ("WRITE", "DESCRIBE")}
        await change_acls(admin, delete=plan.remove)  # what `fleet acl apply` does with the closed registry
        await eventually(lambda: _shows(admin, names, set(plan.keep)), "the broker to drop the write ACLs")

        done = await retire(admin, old.name, lifecycle_file=lifecycle, registry=closed)
        assert done.facts.writers == ()  # read from a real authorizer: no --no-acls needed
        assert set(read_lifecycle(lifecycle)) == {"retired", "closed"} and old.name in read_lifecycle(lifecycle)["retired"]
    finally:
        await change_acls(admin, delete=before)
        await delete_topics(admin, registry)


async def _shows(admin, names: set[str], wanted: set[Acl]):
    found = await acls_on(admin, names)
    return found == wanted or NotYet(found)
