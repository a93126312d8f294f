"""`fleet status`: how each service of the fleet is doing, as the broker and the local fleet tell it.

Per service: its replicas (from the local fleet's state file), its consumer group's state and members, the partitions
each member holds, lag per topic, events handled per second, dead letters, and a warning when replicas outnumber
partitions.

Gathering talks to the broker (`gather`); everything else here is pure: `build_status` turns two snapshots of facts
into the JSON document `--json` prints, `table_of` into the rich table `--watch` refreshes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts import REGISTRY, Keyring, Registry
from contracts.connection import KafkaConnection
from fleet.catalog import group_of
from fleet.runtime.control import Held

__all__ = ["ServiceFacts", "Snapshot", "build_status", "gather", "local_fleet", "table_of"]

Partition = tuple[str, int]


@dataclass
class ServiceFacts:
    """What the broker says about one service's consumer group at one moment."""

    service: str
    group: str = ""
    group_state: str = "Dead"
    # Each member: member_id, client_id, host, instance_id, partitions [(topic, p)].
    members: list[dict] = field(default_factory=list)
    partitions: dict[str, int] = field(default_factory=dict)  # consumed topic → partitions on the broker
    committed: dict[Partition, int] = field(default_factory=dict)
    beginnings: dict[Partition, int] = field(default_factory=dict)
    ends: dict[Partition, int] = field(default_factory=dict)
    dead_letters: int | None = None
    # What the operators' commands hold (fleet.control.v1): None when they could not be read (no keyring here).
    held: Held | None = None


@dataclass
class Snapshot:
    at: float
    services: dict[str, ServiceFacts]
    local: dict | None = None  # the running local fleet's state file, None when none runs


# ---- pure ----------------------------------------------------------------------------------------------------------


def _lag(facts: ServiceFacts) -> dict[str, int]:
    lag: dict[str, int] = {topic: 0 for topic in facts.partitions}
    for (topic, partition), end in facts.ends.items():
        done = facts.committed.get((topic, partition), facts.beginnings.get((topic, partition), 0))
        lag[topic] = lag.get(topic, 0) + max(0, end - done)
    return lag


def _handled_per_s(now: ServiceFacts, before: ServiceFacts | None, seconds: float) -> float | None:
    if before is None or seconds <= 0:
        return None
    moved = sum(max(0, offset - before.committed.get(tp, offset)) for tp, offset in now.committed.items())
    return round(moved / seconds, 1)


def _replicas(service: str, local: dict | None) -> dict | None:
    if local is None:
        return None
    mine = [r for r in local.get("replicas", []) if r.get("service") == service]
    count = lambda status: sum(1 for r in mine if r.get("status") == status)  # noqa: E731
    return {
        "desired": local.get("services", {}).get(service, 0),
        "up": count("up"),
        "restarting": count("restarting"),
        "stopping": count("stopping"),
        "list": [{k: r.get(k) for k in ("name", "pid", "status", "restarts", "http_port", "log")} for r in mine],
    }


def _warnings(service: str, replicas: dict | None, members: int, partitions: dict[str, int]) -> list[str]:
    running = max(members, replicas["desired"] if replicas else 0)
    if not partitions or running <= min(partitions.values()):
        return []
    fewest = min(partitions.values())
    narrow = sorted(t for t, n in partitions.items() if n == fewest)
    return [
        f"{running} replicas but {', '.join(narrow)} {'has' if len(narrow) == 1 else 'have'} only {fewest} partitions: "
        f"{running - fewest} replica(s) get no partition of {'it' if len(narrow) == 1 else 'them'} and sit idle"
    ]


def _paused(held: Held | None) -> dict | bool | None:
    """False when nothing is held; what is held, by whom and why; None when the control topic could not be read."""
    if held is None:
        return None
    if not held.is_paused:
        return False
    return {
        "topics": held.what,
        "by": held.paused_by,
        "at": held.paused_at.isoformat() if held.paused_at else None,
        "reason": held.reason,
    }


def build_status(now: Snapshot, before: Snapshot | None = None, *, bootstrap: str | KafkaConnection = "") -> dict:
    """The document `fleet status --json` prints: one entry per service, plus the local fleet if one runs."""
    seconds = now.at - before.at if before else 0.0
    services = []
    for name, facts in now.services.items():
        replicas = _replicas(name, now.local)
        lag = _lag(facts)
        services.append(
            {
                "service": name,
                "group": facts.group or name,
                "group_state": facts.group_state,
                "paused": _paused(facts.held),
                "replicas": replicas,
                "members": [
                    {**m, "partitions": [f"{t}[{p}]" for t, p in sorted(m.get("partitions", ()))]}
                    for m in facts.members
                ],
                "member_count": len(facts.members),
                "partitions": dict(sorted(facts.partitions.items())),
                "lag": dict(sorted(lag.items())),
                "lag_total": sum(lag.values()),
                "events_per_s": _handled_per_s(facts, before.services.get(name) if before else None, seconds),
                "dead_letters": facts.dead_letters,
                "warnings": _warnings(name, replicas, len(facts.members), facts.partitions),
            }
        )
    local = (
        None
        if now.local is None
        else {
            "pid": now.local.get("pid"),
            "bootstrap": now.local.get("bootstrap"),
            "state_file": now.local.get("state_file"),
        }
    )
    address = getattr(bootstrap, "bootstrap_servers", bootstrap)  # a KafkaConnection: its address, never its login
    return {"bootstrap": address, "at": now.at, "local_fleet": local, "services": services}


def table_of(document: dict):
    """The rich table of a status document: one row per service, one line per member."""
    from rich.table import Table

    local = document["local_fleet"]
    title = f"eventfleet on {document['bootstrap']}" + (
        f" · local fleet pid {local['pid']}" if local else " · no local fleet running"
    )
    table = Table(title=title, expand=False)
    for column in ("service", "replicas", "group", "members → partitions", "lag", "events/s", "dead letters"):
        table.add_column(column, overflow="fold")
    for row in document["services"]:
        replicas = row["replicas"]
        replica_text = (
            "-"
            if replicas is None
            else (
                f"{replicas['up']}/{replicas['desired']} up"
                + (f", {replicas['restarting']} restarting" if replicas["restarting"] else "")
                + (f", {replicas['stopping']} stopping" if replicas["stopping"] else "")
            )
        )
        members = (
            "\n".join(
                f"{m['client_id'] or m['member_id'][:24]}"
                f"{' (' + m['instance_id'] + ')' if m.get('instance_id') else ''}: "
                f"{_compact(m['partitions'])}"
                for m in row["members"]
            )
            or "-"
        )
        lag = "\n".join(f"{t}: {n}" for t, n in row["lag"].items() if n) or "0"
        rate = "-" if row["events_per_s"] is None else f"{row['events_per_s']:g}"
        dead = "-" if row["dead_letters"] is None else str(row["dead_letters"])
        paused = row.get("paused")
        name = row["service"] + (f"\n[bold red]paused[/bold red] ({paused['topics']})" if paused else "")
        table.add_row(name, replica_text, f"{row['group_state']} ({row['member_count']})", members, lag, rate, dead)
        for warning in row["warnings"]:
            table.add_row("", f"[yellow]⚠ {warning}[/yellow]", "", "", "", "", "")
    return table


def _compact(partitions: list[str]) -> str:
    """`orders.placed.v1[0]`, `orders.placed.v1[3]` → `orders.placed.v1 0,3`."""
    by_topic: dict[str, list[str]] = {}
    for item in partitions:
        topic, _, number = item.rpartition("[")
        by_topic.setdefault(topic, []).append(number.rstrip("]"))
    return "; ".join(f"{t} {','.join(n)}" for t, n in by_topic.items()) or "no partitions"


# ---- the local fleet's state file --------------------------------------------------------------------------------


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def local_fleet(state_file: Path) -> dict | None:
    """The state file of the `fleet up` that runs now; None when there is none, or its process is gone."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(state.get("pid")):
        return None
    return {**state, "state_file": str(state_file)}


# ---- gathering -----------------------------------------------------------------------------------------------------


async def gather(
    bootstrap: str | KafkaConnection,
    services: list[str],
    *,
    state_file: Path | None = None,
    dead_letters: bool = True,
    registry: Registry = REGISTRY,
    groups: dict[str, str] | None = None,
    keyring: Keyring | None = None,
) -> Snapshot:
    """One snapshot of every service's group, offsets, dead letters and standing orders, as the broker has them now.
    `groups` maps a service to its consumer group (default: as its settings say); `keyring` verifies the operators'
    commands (without it, whether a service is paused is not known)."""
    group_ids = {s: (groups or {}).get(s) or group_of(s) for s in services}
    from aiokafka import TopicPartition

    from fleet.ops.dlq import count_dead_letters
    from fleet.ops.groups import admin_and_reader, committed_offsets, describe_groups

    consumed = {s: [t.name for t in registry.consumed_in_group_by(s)] for s in services}
    names = sorted({t for ts in consumed.values() for t in ts})
    async with admin_and_reader(bootstrap, "fleet-status") as (admin, consumer):
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in names if n in existing]) if names else []
        partitions = {t["topic"]: len(t["partitions"]) for t in described if t.get("partitions")}
        tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
        ends = {(tp.topic, tp.partition): o for tp, o in (await consumer.end_offsets(tps)).items()} if tps else {}
        starts = (
            {(tp.topic, tp.partition): o for tp, o in (await consumer.beginning_offsets(tps)).items()} if tps else {}
        )
        described_groups = await describe_groups(bootstrap, sorted(set(group_ids.values())), admin=admin)
        facts: dict[str, ServiceFacts] = {}
        for service in services:
            mine = {t: partitions[t] for t in consumed[service] if t in partitions}
            committed = {
                tp: o for tp, o in (await committed_offsets(admin, group_ids[service])).items() if tp[0] in mine
            }
            group = described_groups[group_ids[service]]
            facts[service] = ServiceFacts(
                service,
                group_ids[service],
                group.state,
                [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "instance_id": m.instance_id,
                        "partitions": [tp for tp in m.partitions if tp[0] in mine],
                    }
                    for m in group.members
                ],
                mine,
                committed,
                {tp: o for tp, o in starts.items() if tp[0] in mine},
                {tp: o for tp, o in ends.items() if tp[0] in mine},
            )
    if keyring is not None:
        from fleet.ops.control import standing_orders

        orders = await standing_orders(bootstrap, keyring, services, registry, groups=group_ids)
        for service, held in orders.items():
            facts[service].held = held
    if dead_letters:
        dlq_names = sorted({registry.named(t).dead_letter_topic for t in names})
        counts = await count_dead_letters(bootstrap, [d for d in dlq_names if d in existing])
        for service in services:
            wanted = {registry.named(t).dead_letter_topic for t in consumed[service]}
            facts[service].dead_letters = sum(
                n
                for topic, counter in counts.items()
                if topic in wanted and counter
                for (_reason, group), n in counter.items()
                if group == group_ids[service] or group.startswith(f"{group_ids[service]}.")
            )
    return Snapshot(time.time(), facts, local_fleet(state_file) if state_file else None)


async def status_document(
    bootstrap: str | KafkaConnection,
    services: list[str],
    *,
    state_file: Path | None,
    interval_s: float = 1.0,
    keyring: Keyring | None = None,
) -> dict:
    """Two snapshots `interval_s` apart (for events per second), as one document."""
    before = await gather(bootstrap, services, state_file=state_file, dead_letters=False) if interval_s > 0 else None
    if before is not None:
        await asyncio.sleep(interval_s)
    now = await gather(bootstrap, services, state_file=state_file, keyring=keyring)
    return build_status(now, before, bootstrap=bootstrap)


async def watch_status(
    bootstrap: str | KafkaConnection,
    services: list[str],
    *,
    state_file: Path | None,
    interval_s: float = 2.0,
    keyring: Keyring | None = None,
) -> None:
    """Refreshes the table live until Ctrl-C."""
    from rich.live import Live

    before = await gather(bootstrap, services, state_file=state_file, dead_letters=False)
    with Live(table_of(build_status(before, bootstrap=bootstrap)), auto_refresh=False) as live:
        while True:
            await asyncio.sleep(interval_s)
            now = await gather(bootstrap, services, state_file=state_file, keyring=keyring)
            live.update(table_of(build_status(now, before, bootstrap=bootstrap)), refresh=True)
            before = now
