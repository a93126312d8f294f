"""The fleet as a graph: signer or service → topic → service, dead letters apart, upcasters between versions.

As DOT text (pure) and as SVG (graphviz)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Iterable, Sequence

from contracts import REGISTRY, UPCASTERS, Registry, Upcasters
from fleet.catalog import WORKERS

__all__ = ["UPSTREAM_SOURCES", "GraphvizMissing", "fleet_dot", "published_by", "render_svg"]

# The systems outside the fleet that publish into it, each with its own key (fleet.runtime.keys.UPSTREAM_SIGNERS, minus
# the operators' `replay` key, which only puts dead letters back). `fleet demo` plays the storefront and the warehouse.
UPSTREAM_SOURCES = ("storefront", "warehouse", "gateway")
GATEWAY_PUBLISHES_FOR = (
    "storefront"  # fleet.runtime.keys.UPSTREAM_OWNER: the gateway signs what the upstream systems own
)

_STYLE = {
    "graph": 'rankdir=LR, fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=0.9, labelloc=b, labeljust=l, '
    'bgcolor="white", pad=0.2',
    "node": 'fontname="Helvetica", fontsize=11',
    "edge": 'fontname="Helvetica", fontsize=9, color="#475569", arrowsize=0.7',
    "upstream": 'shape=box, style="rounded,dashed,filled", fillcolor="#f1f5f9", color="#64748b"',
    "service": 'shape=box, style="rounded,filled", fillcolor="#dbeafe", color="#1d4ed8", penwidth=1.4',
    "topic": 'shape=cds, style=filled, fillcolor="#fef3c7", color="#b45309"',
    "dlq": 'shape=cds, style="filled,dashed", fillcolor="#fee2e2", color="#b91c1c", fontcolor="#7f1d1d"',
    "dlq_edge": 'style=dashed, color="#b91c1c", arrowhead=open',
    "deprecated": 'shape=cds, style="filled,dashed", fillcolor="#f1f5f9", color="#64748b", fontcolor="#475569"',
    "upcaster_edge": 'style=dashed, color="#7c3aed", fontcolor="#6d28d9", arrowhead=empty, constraint=false',
}
LEGEND = (
    "solid: a producer publishes to a topic, a topic feeds its consumer groups.   "
    "dashed red: a consumer sends the records it refuses to <topic>.dlq "
    "(retry tiers <topic>.retry.1..3 loop back to the same consumer and are not drawn).   "
    "dashed purple: an upcaster turns an older version's records into the newer one; grey dashed: a deprecated "
    "(superseded) or retired version."
)


class GraphvizMissing(RuntimeError):
    """Graphviz's `dot` is not on PATH."""


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _ordered(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def published_by(source: str, registry: Registry = REGISTRY) -> list[str]:
    """The registry topics an upstream source publishes: what it owns; for the gateway,
    what the upstream systems own. Never a version closed for writing or retired."""
    owner = GATEWAY_PUBLISHES_FOR if source == "gateway" else source
    return [t.name for t in registry.owned_by(owner) if not (t.closed or t.retired)]


def fleet_dot(
    registry: Registry = REGISTRY,
    services: Sequence[str] = WORKERS,
    upstream: Sequence[str] = UPSTREAM_SOURCES,
    upcasters: Upcasters = UPCASTERS,
) -> str:
    """DOT text of the fleet from the registry: owner → topic → consumers, upstream sources in a cluster of their own,
    every consumed topic's dead-letter topic in a separate cluster with a dashed edge from each consuming service, and
    each upcaster as a dashed edge from the older version to the newer one, labelled with its name. A superseded or
    retired version is drawn grey; a retired one has no producer or consumer any more. Deterministic: the same
    registry gives the same bytes."""
    upstream = [u for u in upstream]
    workers = _ordered(
        [
            *services,
            *(t.owner for t in registry if t.owner not in upstream),
            *(c for t in registry for c in t.consumers if c not in upstream),
        ]
    )
    lines = [
        "digraph fleet {",
        f"  graph [{_STYLE['graph']}, label={_q(LEGEND)}];",
        f"  node [{_STYLE['node']}];",
        f"  edge [{_STYLE['edge']}];",
        "",
        "  subgraph cluster_upstream {",
        '    label="upstream signers"; style="rounded,dashed"; color="#94a3b8"; fontcolor="#475569";',
    ]
    for source in upstream:
        lines.append(f"    {_q('source:' + source)} [label={_q(source)}, {_STYLE['upstream']}];")
    lines += ["  }", "", "  // fleet workers (each a consumer group)"]
    for worker in workers:
        lines.append(f"  {_q('service:' + worker)} [label={_q(worker)}, {_STYLE['service']}];")
    lines += ["", "  // registry topics"]
    for topic in registry:
        tooltip = f"{topic.name}: {topic.model.__name__}, key {topic.key_field}, {topic.partitions} partitions"
        label, style = topic.name, _STYLE["topic"]
        if topic.retired:
            label, style = f"{topic.name}\n(retired {topic.retired_on})", _STYLE["deprecated"]
        elif registry.is_superseded(topic):
            label, style = f"{topic.name}\n(deprecated)", _STYLE["deprecated"]
        lines.append(f"  {_q('topic:' + topic.name)} [label={_q(label)}, tooltip={_q(tooltip)}, {style}];")
    dead = [t for t in registry if t.consumers and not t.retired]
    if dead:
        lines += [
            "",
            "  subgraph cluster_dead_letters {",
            '    label="dead letters"; style="rounded,filled"; fillcolor="#fff5f5"; '
            'color="#fca5a5"; fontcolor="#7f1d1d";',
        ]
        for topic in dead:
            lines.append(
                f"    {_q('dlq:' + topic.dead_letter_topic)} [label={_q(topic.dead_letter_topic)}, {_STYLE['dlq']}];"
            )
        lines.append("  }")
    lines += ["", "  // producers → topics"]
    for source in upstream:
        for name in published_by(source, registry):
            lines.append(f"  {_q('source:' + source)} -> {_q('topic:' + name)};")
    for topic in registry:
        if topic.owner not in upstream and not (topic.closed or topic.retired):
            lines.append(f"  {_q('service:' + topic.owner)} -> {_q('topic:' + topic.name)};")
    lines += ["", "  // topics → consumers"]
    for topic in registry:
        if topic.retired:
            continue
        for consumer in topic.consumers:
            node = ("source:" if consumer in upstream else "service:") + consumer
            lines.append(f"  {_q('topic:' + topic.name)} -> {_q(node)};")
    lines += ["", "  // consumers → dead letters"]
    for topic in dead:
        for consumer in topic.consumers:
            node = ("source:" if consumer in upstream else "service:") + consumer
            lines.append(f"  {_q(node)} -> {_q('dlq:' + topic.dead_letter_topic)} [{_STYLE['dlq_edge']}];")
    lines += ["", "  // upcasters: an older version → the newer one"]
    models = {t.model: t for t in registry}
    for step in upcasters:
        if step.source in models and step.target in models and not models[step.source].retired:
            source, target = _q("topic:" + models[step.source].name), _q("topic:" + models[step.target].name)
            lines.append(f"  {source} -> {target} [label={_q(step.name)}, {_STYLE['upcaster_edge']}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_text: str, *, dot: str = "dot", timeout_s: float = 60.0) -> str:
    """SVG of DOT text, drawn by graphviz's `dot` (Debian's package, `make debian-tools`)."""
    binary = shutil.which(dot)
    if binary is None:
        raise GraphvizMissing(f"graphviz `{dot}` is not installed: run `make debian-tools` (Debian's graphviz package)")
    done = subprocess.run([binary, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"`{dot} -Tsvg` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
