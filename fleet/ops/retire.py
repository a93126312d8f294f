"""`fleet contracts close TOPIC` and `fleet contracts retire TOPIC`: the end of a superseded version of an event.

Closing says, in contracts/lifecycle.json, that nothing writes the topic any more: the contracts Publisher refuses it
and `fleet acl apply` takes the producers' write ACLs away, while its consumers read what is left on it. Retiring says
that nothing reads it either: the registry keeps it for its history, the workers no longer subscribe to it, the ACL plan
grants nothing on it, and the AsyncAPI document shows it retired. Retiring is refused while any consumer group has lag
on the topic or its retry topics, or while any ACL on the broker lets a principal write it.

`ending`, `refusals` and `with_entry` are pure; `gather` reads the groups' lag and the ACLs from the broker; `close` and
`retire` decide and write the lifecycle file."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from contracts import UPCASTERS, Registry, Topic, Upcasters
from contracts.governance import superseded_problems
from contracts.registry import TOPICS, with_lifecycle
from fleet.ops.acls import ALLOW_CODE, OPERATIONS, RESOURCE_TYPES
from fleet.ops.groups import admin_and_reader

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient

    from contracts.connection import KafkaConnection

__all__ = [
    "LIFECYCLE",
    "Closing",
    "Facts",
    "LifecycleRefused",
    "RetireBlocked",
    "Retirement",
    "Writer",
    "close",
    "ending",
    "gather",
    "read_lifecycle",
    "refusals",
    "retire",
    "with_entry",
]

LIFECYCLE = Path("contracts") / "lifecycle.json"  # the checkout's, from the working directory (its top folder)
ANY, MATCH, PREFIXED = 1, 2, 4  # Kafka's pattern type filters: MATCH finds the literal, `*` and prefixed ACLs of a name
SECURITY_DISABLED = 54  # DescribeAcls' answer from a broker without an authorizer
WRITING = {OPERATIONS["WRITE"]: "WRITE", OPERATIONS["ALL"]: "ALL"}
GROUPS_AT_ONCE = 32  # committed offsets asked of that many groups at a time
SHOWN = 10  # the groups a refusal names, those with the most lag first


class LifecycleRefused(ValueError):
    """The topic cannot be closed or retired at all: it is the current version of its event (or the lifecycle file
    given is not one)."""


class RetireBlocked(RuntimeError):
    """The topic cannot be retired yet: consumer groups still have lag on it, or ACLs still let someone write it."""


@dataclass(frozen=True, order=True)
class Writer:
    """An ALLOW ACL on the broker that lets a principal write the topic: on its name, on a prefix of it, or on `*`."""

    principal: str
    operation: str  # WRITE or ALL
    resource: str
    pattern: str = "LITERAL"  # or PREFIXED
    host: str = "*"

    def __str__(self) -> str:
        if self.pattern == "PREFIXED":
            where = f"TOPIC:{self.resource}* (prefixed)"
        else:
            where = "every topic (TOPIC:*)" if self.resource == "*" else f"TOPIC:{self.resource}"
        return f"{self.principal} {self.operation} on {where}" + (f" from {self.host}" if self.host != "*" else "")


@dataclass(frozen=True)
class Facts:
    """What the broker says about a topic at one moment."""

    lags: dict[str, dict[str, int]]  # the topic and its retry topics → each group with offsets committed on it → lag
    writers: tuple[Writer, ...] | None  # None: the broker has no authorizer, so it has no ACL to read


@dataclass(frozen=True)
class Retirement:
    """What `retire` did (or, with `dry_run`, would do)."""

    topic: str
    day: str
    already: bool = False
    facts: Facts | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class Closing:
    """What `close` did."""

    topic: str
    day: str
    already: bool = False


# ---- pure ----------------------------------------------------------------------------------------------------------


def ending(registry: Registry, name: str, verb: str) -> Topic:
    """The topic, when it may be closed or retired at all: a superseded version. UnknownTopic (exit 64) names the
    registry's topics; LifecycleRefused a current version."""
    topic = registry.named(name)
    if not registry.is_superseded(topic):
        raise LifecycleRefused(
            f"{name} is the current version of {topic.family}: only a superseded version is {verb} "
            f"(`fleet contracts bump {name}` makes its next version)"
        )
    return topic


def refusals(
    registry: Registry,
    topic: Topic,
    facts: Facts,
    *,
    no_acls: bool = False,
    broker: str = "the broker",
    upcasters: Upcasters = UPCASTERS,
) -> list[str]:
    """Why `topic` may not be retired now (none: it may): consumer groups with lag on it or on its retry topics (and,
    should one have no upcaster path to the current version, that too: `superseded_problems` with the real lags), ACLs
    that let a principal write it, or a broker without an authorizer unless `no_acls` says that is known."""
    reasons: list[str] = []
    lagging: dict[str, list[tuple[str, int]]] = {}
    for address in (topic.name, *topic.retry_topics):
        for group, lag in sorted((facts.lags.get(address) or {}).items()):
            if lag > 0:
                lagging.setdefault(group, []).append((address, lag))
    if lagging:
        most = sorted(lagging.items(), key=lambda item: (-sum(lag for _, lag in item[1]), item[0]))
        shown = "; ".join(
            f"{group} ({', '.join(f'{lag} on {address}' for address, lag in places)})" for group, places in most[:SHOWN]
        ) + (f"; and {len(most) - SHOWN} more" if len(most) > SHOWN else "")
        reasons.append(
            f"{len(lagging)} consumer group(s) still have records of it to read: {shown}; retire it once they have "
            "read them (`fleet status` shows the lag)"
        )
        lags = {topic.name: {group: sum(lag for _, lag in places) for group, places in lagging.items()}}
        reasons += [p.detail for p in superseded_problems(registry, upcasters, lags) if p.topic == topic.name]
    if facts.writers is None and not no_acls:
        reasons.append(
            f"{broker} has no authorizer, so no ACL keeps any client from writing it; if that is so on purpose (a "
            "development broker), retire with --no-acls"
        )
    elif facts.writers:
        reasons.append(
            f"ACLs still let {len(facts.writers)} principal(s) write it: {', '.join(map(str, facts.writers))}; "
            f"`fleet contracts close {topic.name}` then `fleet acl apply` takes the fleet's own away, and the "
            "others are yours to remove"
        )
    return reasons


def with_entry(document: dict, state: str, name: str, day: str) -> dict:
    """The lifecycle document with `name` under `state` ("closed" or "retired") since `day`; the rest as it was."""
    entries = dict(document.get(state) or {})
    entries[name] = day
    return {**document, state: dict(sorted(entries.items()))}


# ---- the lifecycle file ----------------------------------------------------------------------------------------------


def read_lifecycle(path: Path) -> dict:
    """The lifecycle document in `path` (none yet: nothing closed or retired)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"retired": {}}
    try:
        document = json.loads(text)
    except ValueError as error:
        raise LifecycleRefused(f"{path} is not JSON ({error}): restore it from git") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k, {}), dict) for k in ("closed", "retired")):
        raise LifecycleRefused(f'{path} is not a lifecycle file ({{"retired": {{topic: day}}}}): restore it from git')
    return document


def _write_lifecycle(path: Path, document: dict) -> None:
    """Written whole or not at all: a temporary file beside it, then renamed over it."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(json.dumps(document, indent=2) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _today(today: date | None) -> str:
    return (today or datetime.now(UTC).date()).isoformat()


def _registry(registry: Registry | None, document: dict) -> Registry:
    return registry if registry is not None else Registry(with_lifecycle(TOPICS, document))


def close(
    name: str, *, lifecycle_file: Path = LIFECYCLE, registry: Registry | None = None, today: date | None = None
) -> Closing:
    """Closes a superseded version for writing in the lifecycle file (the registry's state is the file's, unless
    `registry` is given); a topic closed or retired already is left as it is."""
    document = read_lifecycle(lifecycle_file)
    topic = ending(_registry(registry, document), name, "closed")
    if topic.closed or topic.retired:
        return Closing(name, topic.closed_on or topic.retired_on, already=True)
    day = _today(today)
    _write_lifecycle(lifecycle_file, with_entry(document, "closed", name, day))
    return Closing(name, day)


async def retire(
    connection: str | KafkaConnection,
    name: str,
    *,
    lifecycle_file: Path = LIFECYCLE,
    registry: Registry | None = None,
    no_acls: bool = False,
    dry_run: bool = False,
    today: date | None = None,
) -> Retirement:
    """Retires a superseded version in the lifecycle file once the broker says nothing reads or may write it; raises
    RetireBlocked with every reason otherwise (nothing written). A retired topic is left as it is."""
    document = read_lifecycle(lifecycle_file)
    registry = _registry(registry, document)
    topic = ending(registry, name, "retired")
    if topic.retired:
        return Retirement(name, topic.retired_on, already=True)
    facts = await gather(connection, topic)
    found = refusals(registry, topic, facts, no_acls=no_acls, broker=f"the broker at {connection}")
    if found:
        raise RetireBlocked(f"{name} is not retired: " + "; ".join(found))
    day = _today(today)
    if not dry_run:
        _write_lifecycle(lifecycle_file, with_entry(document, "retired", name, day))
    return Retirement(name, day, facts=facts, dry_run=dry_run)


# ---- the broker ----------------------------------------------------------------------------------------------------


async def gather(connection: str | KafkaConnection, topic: Topic) -> Facts:
    """The lag of every consumer group that committed offsets on the topic or its retry topics (its end minus its
    committed offset, per partition, summed), and the ACLs that let anyone write the topic."""
    from aiokafka import TopicPartition

    async with admin_and_reader(connection, "fleet-retire") as (admin, consumer):
        existing = set(await admin.list_topics())
        names = [name for name in (topic.name, *topic.retry_topics) if name in existing]
        described = await admin.describe_topics(names) if names else []
        partitions = [TopicPartition(t["topic"], p) for t in described for p in range(len(t.get("partitions") or ()))]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        lags: dict[str, dict[str, int]] = {}
        if partitions:
            groups = sorted({group for group, *_ in await admin.list_consumer_groups()})
            limit = asyncio.Semaphore(GROUPS_AT_ONCE)

            async def committed(group: str) -> tuple[str, dict]:
                async with limit:
                    return group, await admin.list_consumer_group_offsets(group, partitions=partitions)

            for group, offsets in await asyncio.gather(*(committed(group) for group in groups)):
                for tp, meta in offsets.items():
                    if meta.offset >= 0 and tp in ends:
                        by_group = lags.setdefault(tp.topic, {})
                        by_group[group] = by_group.get(group, 0) + max(0, ends[tp] - meta.offset)
        writers = await _writers(admin, topic.name)
    return Facts(lags, writers)


async def _writers(admin: AIOKafkaAdminClient, name: str) -> tuple[Writer, ...] | None:
    """The ALLOW ACLs that let a principal write `name` (WRITE or ALL; literal, `*` or a prefix of it; any host);
    None when the broker has no authorizer. A DENY is not weighed against them: an ALLOW is reported all the same."""
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import DescribeAclsRequest

    request = DescribeAclsRequest(RESOURCE_TYPES["TOPIC"], name, MATCH, None, None, ANY, ANY)
    response = await admin._send_request(request)
    if response.error_code == SECURITY_DISABLED:
        return None
    if response.error_code:
        raise for_code(response.error_code)(f"could not read the broker's ACLs: {response.error_message}")
    return tuple(
        sorted(
            Writer(principal, WRITING[operation], resource, "PREFIXED" if pattern == PREFIXED else "LITERAL", host)
            for _type, resource, pattern, entries in response.resources
            for principal, host, operation, permission in entries
            if permission == ALLOW_CODE and operation in WRITING
        )
    )
