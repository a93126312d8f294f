"""Fleet-side contract checks for `fleet check`: the services' wiring and the docs' topic lists against the registry.

A service's wiring is what its app subscribes to and publishes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from contracts import REGISTRY, Registry, UnknownTopic
from contracts.governance import SCHEMAS_DIR, Problem, contract_problems
from fleet.catalog import WORKERS, Wiring, service_wiring

__all__ = [
    "ROOT",
    "Wiring",
    "all_problems",
    "asyncapi_problems",
    "readme_problems",
    "service_wiring",
    "wire_format_problems",
    "wiring_problems",
]

ROOT = Path(".")  # the checkout: commands run from its top folder
TOPIC_LIKE = re.compile(r"\b[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.v[0-9]+\b")
UPSTREAM = "an upstream system outside the fleet (not checked)"


def wiring_problems(registry: Registry, wiring: Mapping[str, Wiring]) -> list[Problem]:
    """Pure: each handler takes its topic's model; every registry consumer that is a fleet service subscribes to the
    topic and no service subscribes to a topic (or its retry topics) it is not listed for; every owner that is a fleet
    service publishes the topic, and no service publishes a topic it does not own. Owners and consumers outside `wiring`
    are upstream systems. A retired topic is read and written by no service, a closed one written by none."""
    problems: list[Problem] = []
    registry_fix = (
        "change the `consumers` of the topic in contracts/registry.py or the service's subscriber_for(...) in "
        "services/{}/app.py"
    )
    for service, wired in sorted(wiring.items()):
        for error in wired.handler_errors:
            problems.append(
                Problem(
                    "-",
                    f"service {service}",
                    "one-type-per-topic",
                    error,
                    "make the handler's first parameter the registry model(s) of its topics in "
                    f"services/{service}/app.py",
                )
            )
        for name in sorted(wired.subscribes):
            try:
                topic = registry.resolve(name)
            except UnknownTopic:
                problems.append(
                    Problem(
                        name,
                        f"service {service}",
                        "unknown-topic",
                        f"{service} subscribes to {name}, which the registry does not know",
                        f"subscribe through subscriber_for(...) with a registry model in services/{service}/app.py",
                    )
                )
                continue
            if topic.retired:
                problems.append(
                    Problem(
                        topic.name,
                        f"service {service}",
                        "reads-retired",
                        f"{service} subscribes to {name}, but {topic.name} is retired (contracts/lifecycle.json): "
                        "nothing is written to it any more",
                        f"declare the handler in services/{service}/app.py on {registry.current(topic).model.__name__}",
                    )
                )
            elif service not in topic.consumers:
                problems.append(
                    Problem(
                        topic.name,
                        f"service {service}",
                        "unlisted-consumer",
                        f"{service} subscribes to {name}, but the registry does not list it among the consumers "
                        f"({', '.join(topic.consumers) or 'none'})",
                        registry_fix.format(service),
                    )
                )
        for name in sorted(wired.publishes):
            try:
                topic = registry.named(name)
            except UnknownTopic:
                problems.append(
                    Problem(
                        name,
                        f"service {service}",
                        "unknown-topic",
                        f"{service} publishes to {name}, which is not a registry topic",
                        f"publish through publisher_for(...) with a registry model in services/{service}/app.py",
                    )
                )
                continue
            if topic.closed or topic.retired:
                state = "retired" if topic.retired else "closed"
                problems.append(
                    Problem(
                        topic.name,
                        f"service {service}",
                        f"writes-{state}",
                        f"{service} publishes {topic.name}, which is {state} for writing (contracts/lifecycle.json)",
                        f"publish {registry.current(topic).model.__name__} instead in services/{service}/app.py",
                    )
                )
            elif topic.owner != service:
                problems.append(
                    Problem(
                        topic.name,
                        f"service {service}",
                        "not-owner",
                        f"{service} publishes {topic.name}, whose owner is {topic.owner}",
                        "change the topic's `owner` in contracts/registry.py or remove the publisher from "
                        f"services/{service}/app.py",
                    )
                )
    for topic in registry:
        if topic.retired:  # kept for its history: nobody needs to read or write it
            continue
        for consumer in topic.consumers:
            if consumer not in wiring:
                problems.append(
                    Problem(
                        topic.name,
                        f"consumer {consumer}",
                        "unknown-consumer",
                        f"the registry lists {consumer} as a consumer, "
                        f"but the fleet has no worker of that name ({', '.join(sorted(wiring))})",
                        "fix the topic's `consumers` in contracts/registry.py",
                    )
                )
            elif topic.name not in wiring[consumer].subscribes:
                problems.append(
                    Problem(
                        topic.name,
                        f"consumer {consumer}",
                        "missing-subscription",
                        f"the registry lists {consumer} as a consumer, but its app does not subscribe to {topic.name}",
                        registry_fix.format(consumer),
                    )
                )
        if topic.owner in wiring and not topic.closed and topic.name not in wiring[topic.owner].publishes:
            problems.append(
                Problem(
                    topic.name,
                    f"owner {topic.owner}",
                    "missing-publisher",
                    f"the registry names {topic.owner} as the owner, but its app has no publisher for {topic.name}",
                    f"add publisher_for(broker, {topic.model.__name__}) in services/{topic.owner}/app.py or fix the "
                    "`owner` in contracts/registry.py",
                )
            )
    return problems


def asyncapi_problems(registry: Registry, document: dict) -> list[Problem]:
    """Pure: every registry topic is the address of a channel of the AsyncAPI document, and every channel's address is a
    registry topic or one derived from it (retry, dead letters)."""
    fix = "run `fleet docs gen` and commit asyncapi.yaml"
    addresses = set()
    for channel in (document.get("channels") or {}).values():
        if isinstance(channel, dict):
            address = channel.get("address") or ((channel.get("bindings") or {}).get("kafka") or {}).get("topic")
            if address:
                addresses.add(address)
    problems = [
        Problem(topic.name, "", "asyncapi-missing-topic", "asyncapi.yaml has no channel with this address", fix)
        for topic in registry
        if topic.name not in addresses
    ]
    for address in sorted(addresses):
        try:
            registry.resolve(address)
        except UnknownTopic:
            problems.append(
                Problem(
                    address,
                    "",
                    "asyncapi-unknown-topic",
                    "asyncapi.yaml has a channel for a topic the registry does not know",
                    fix,
                )
            )
    return problems


def _section(markdown: str, heading: str) -> str | None:
    match = re.search(rf"^##+ {re.escape(heading)}\s*$(?P<body>.*?)(?=^##? |\Z)", markdown, re.MULTILINE | re.DOTALL)
    return match["body"] if match else None


def readme_problems(registry: Registry, readme: str) -> list[Problem]:
    """Pure: the diagram (first code block) of the README's "Architecture in one screen" names every registry topic, and
    only registry topics. No such section: nothing to check."""
    section = _section(readme, "Architecture in one screen")
    block = re.search(r"```[^\n]*\n(?P<code>.*?)```", section or "", re.DOTALL)
    if block is None:
        return []
    named = set(TOPIC_LIKE.findall(block["code"]))
    fix = 'update the diagram under "Architecture in one screen" in README.md'
    problems = [
        Problem(t.name, "", "readme-missing-topic", "the README's architecture diagram does not show this topic", fix)
        for t in registry
        if t.name not in named
    ]
    known = {t.name for t in registry}
    problems += [
        Problem(
            name,
            "",
            "readme-unknown-topic",
            "the README's architecture diagram shows a topic the registry does not know",
            fix,
        )
        for name in sorted(named - known)
    ]
    return problems


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def wire_format_problems(registry: Registry, wire_format: str) -> list[Problem]:
    """Pure: the topic table of docs/wire-format.md (header `| topic | `ce_type` | key field | ... | size limit |`) has
    one row per registry topic, with its CloudEvents type, key field and size limit, and no other rows. No table:
    nothing to check."""
    lines = wire_format.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("|") and _cells(line)[:3] == ["topic", "`ce_type`", "key field"]
        ),
        None,
    )
    if start is None:
        return []
    header = _cells(lines[start])
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, _cells(line), strict=False))  # a hand-edited row may be short or long
        rows[cells["topic"].strip("`")] = cells
    fix = 'update the topic table in docs/wire-format.md (section "The record") to match contracts/registry.py'
    problems = []
    for topic in registry:
        row = rows.get(topic.name)
        if row is None:
            problems.append(
                Problem(
                    topic.name,
                    "",
                    "wire-format-missing-topic",
                    "docs/wire-format.md's topic table has no row for this topic",
                    fix,
                )
            )
            continue
        expected = {
            "`ce_type`": f"`{topic.type_name}`",
            "key field": f"`{topic.key_field}`",
            "size limit": f"{topic.max_bytes} bytes",
        }
        for column, value in expected.items():
            if column in row and row[column] != value:
                problems.append(
                    Problem(
                        topic.name,
                        "",
                        "wire-format-mismatch",
                        f"docs/wire-format.md says {column} {row[column]}, the registry says {value}",
                        fix,
                    )
                )
    known = {t.name for t in registry}
    problems += [
        Problem(
            name,
            "",
            "wire-format-unknown-topic",
            "docs/wire-format.md's topic table lists a topic the registry does not know",
            fix,
        )
        for name in sorted(set(rows) - known)
    ]
    return problems


def all_problems(
    root: Path = ROOT, registry: Registry = REGISTRY, services: Iterable[str] = WORKERS, schemas_dir: Path = SCHEMAS_DIR
) -> tuple[list[Problem], list[str]]:
    """Every governance rule, on the committed files under `root`;
    returns the problems and one summary line per check."""
    problems: list[Problem] = []
    summary: list[str] = []

    def run(label: str, found: list[Problem]) -> None:
        problems.extend(found)
        summary.append(f"{label}: {'ok' if not found else f'{len(found)} problem(s)'}")

    run(
        f"contracts ({len(registry)} topics: documented fields, valid examples, "
        "current and compatible schema revisions, upcasters)",
        contract_problems(registry, schemas_dir),
    )
    services = tuple(services)
    run(
        f"subscriptions and publishers of {len(services)} services against the registry",
        wiring_problems(registry, service_wiring(services, registry)),
    )
    asyncapi = root / "asyncapi.yaml"
    if asyncapi.exists():
        run(
            "asyncapi.yaml channels",
            asyncapi_problems(registry, yaml.safe_load(asyncapi.read_text(encoding="utf-8")) or {}),
        )
    else:
        run(
            "asyncapi.yaml channels",
            [
                Problem(
                    "-",
                    "",
                    "asyncapi-missing",
                    "asyncapi.yaml does not exist",
                    "run `fleet docs gen` and commit asyncapi.yaml",
                )
            ],
        )
    for label, path, check in (
        ("README.md architecture diagram", root / "README.md", readme_problems),
        ("docs/wire-format.md topic table", root / "docs" / "wire-format.md", wire_format_problems),
    ):
        if path.exists():
            run(label, check(registry, path.read_text(encoding="utf-8")))
    return problems, summary
