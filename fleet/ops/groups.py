"""Consumer groups as the broker sees them.

Which of the fleet's groups have live members, who they are, which partitions each holds, and what each group has
committed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from contracts.connection import KafkaConnection, client_options

__all__ = [
    "GroupDescription",
    "Member",
    "admin_and_reader",
    "committed_offsets",
    "describe_groups",
    "group_members",
]


@contextlib.asynccontextmanager
async def admin_and_reader(
    connection: str | KafkaConnection, client_id: str
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """An admin client and a consumer without a group (for offsets), both started, and both closed however the block
    ends: a broker that does not answer still gets both clients closed."""
    admin = AIOKafkaAdminClient(**client_options(connection), client_id=client_id)
    consumer = AIOKafkaConsumer(**client_options(connection), enable_auto_commit=False, client_id=client_id)
    try:
        await admin.start()
        await consumer.start()
        yield admin, consumer
    finally:
        await consumer.stop()
        await admin.close()


@dataclass(frozen=True)
class Member:
    """One consumer in a group: its member id, client id and host, static instance id if any, and its partitions."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    partitions: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class GroupDescription:
    group: str
    state: str  # Stable, PreparingRebalance, CompletingRebalance, Empty, Dead (an unknown group)
    members: tuple[Member, ...] = field(default_factory=tuple)


def _assignment(raw: bytes | None) -> tuple[tuple[str, int], ...]:
    if not raw:
        return ()
    decoded = ConsumerProtocolMemberAssignment.decode(raw)
    return tuple(sorted((topic, partition) for topic, partitions in decoded.assignment for partition in partitions))


def _member(raw: dict) -> Member:
    return Member(
        member_id=raw.get("member_id", ""),
        client_id=raw.get("client_id", ""),
        host=raw.get("client_host", ""),
        instance_id=raw.get("group_instance_id"),
        partitions=_assignment(raw.get("member_assignment")),
    )


async def describe_groups(
    bootstrap_servers: str | KafkaConnection, group_ids: list[str], *, admin: AIOKafkaAdminClient | None = None
) -> dict[str, GroupDescription]:
    """Each group's state and members with their assigned partitions (state Dead, no members, for an unknown group)."""
    own = admin is None
    if admin is None:
        admin = AIOKafkaAdminClient(**client_options(bootstrap_servers), client_id="fleet-groups")
        await admin.start()
    try:
        found = {group_id: GroupDescription(group_id, "Dead") for group_id in group_ids}
        # One group per request: a 4.x broker drops the connection on aiokafka 0.14's DescribeGroups for several groups.
        for group_id in group_ids:
            for response in await admin.describe_consumer_groups([group_id]):
                for group in response.to_object()["groups"]:
                    if group["error_code"] == 0 and group["group"] in found:
                        found[group["group"]] = GroupDescription(
                            group["group"], group.get("state", ""), tuple(_member(m) for m in group["members"])
                        )
        return found
    finally:
        if own:
            await admin.close()


async def group_members(bootstrap_servers: str | KafkaConnection, group_ids: list[str]) -> dict[str, int]:
    """How many members each group has right now (0 for an empty or unknown group)."""
    return {group_id: len(d.members) for group_id, d in (await describe_groups(bootstrap_servers, group_ids)).items()}


async def committed_offsets(admin: AIOKafkaAdminClient, group_id: str) -> dict[tuple[str, int], int]:
    """(topic, partition) → the group's committed offset (partitions it never committed are left out)."""
    offsets = await admin.list_consumer_group_offsets(group_id)
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
