"""The fleet graph's DOT comes from the registry alone: producers, topics, consumers, upstream signers, dead letters apart."""

import re
import stat

import pytest

from contracts import REGISTRY, Registry
from contracts.events import OrderPlaced, PaymentAuthorized
from contracts.registry import Topic
from fleet.docs.graph import UPSTREAM_SOURCES, GraphvizMissing, fleet_dot, published_by, render_svg
from fleet.catalog import WORKERS

EDGE = re.compile(r'^\s*"(?P<tail>[^"]+)" -> "(?P<head>[^"]+)"(?P<attrs> \[[^\]]*\])?;$', re.M)


def _edges(dot: str) -> dict[tuple[str, str], str]:
    return {(m["tail"], m["head"]): m["attrs"] or "" for m in EDGE.finditer(dot)}


def _cluster(dot: str, name: str) -> str:
    start = dot.index(f"subgraph cluster_{name} {{")
    return dot[start:dot.index("\n  }", start)]


def test_every_topic_is_published_by_its_owner_and_feeds_each_of_its_consumers():
    edges = _edges(fleet_dot())
    for topic in REGISTRY:
        producer = ("source:" if topic.owner in UPSTREAM_SOURCES else "service:") + topic.owner
        assert (producer, f"topic:{topic.name}") in edges
        for consumer in topic.consumers:
            assert (f"topic:{topic.name}", f"service:{consumer}") in edges
    solid = {edge for edge, attrs in edges.items() if "dashed" not in attrs}
    expected = {(("source:" if t.owner in UPSTREAM_SOURCES else "service:") + t.owner, f"topic:{t.name}") for t in REGISTRY}
    expected |= {(f"topic:{t.name}", f"service:{c}") for t in REGISTRY for c in t.consumers}
    expected |= {(f"source:{s}", f"topic:{name}") for s in UPSTREAM_SOURCES for name in published_by(s)}
    assert solid == expected  # nothing drawn that the registry does not say


def test_the_upstream_signers_are_sources_in_a_cluster_of_their_own_and_the_gateway_publishes_orders():
    dot = fleet_dot()
    upstream = _cluster(dot, "upstream")
    assert [name for name in ("storefront", "warehouse", "gateway") if f'"source:{name}"' not in upstream] == []
    edges = _edges(dot)
    assert ("source:gateway", "topic:orders.placed.v1") in edges
    assert ("source:warehouse", "topic:warehouse.stock_received.v1") in edges
    assert not [edge for edge in edges if edge[1].startswith("source:")]  # nothing flows into an upstream system


def test_dead_letter_topics_sit_apart_with_a_dashed_edge_from_every_consuming_service():
    dot = fleet_dot()
    dead = _cluster(dot, "dead_letters")
    edges = _edges(dot)
    for topic in REGISTRY:
        assert f'"dlq:{topic.dead_letter_topic}"' in dead
        assert f'"dlq:{topic.dead_letter_topic}"' not in dot.split("subgraph cluster_dead_letters")[0]
        for consumer in topic.consumers:
            assert "style=dashed" in edges[(f"service:{consumer}", f"dlq:{topic.dead_letter_topic}")]
    dlq_edges = {edge for edge in edges if edge[1].startswith("dlq:")}
    assert len(dlq_edges) == sum(len(t.consumers) for t in REGISTRY)
    assert all(tail.startswith("service:") for tail, _ in dlq_edges)


def test_every_worker_is_a_node_even_one_without_topics_and_the_same_registry_gives_the_same_bytes():
    dot = fleet_dot()
    assert [s for s in WORKERS if f'"service:{s}" [label="{s}"' not in dot] == []
    assert fleet_dot() == dot
    assert fleet_dot(services=(*WORKERS, "auditor")).count('"service:auditor"') == 1


def test_the_graph_follows_another_registry_and_quotes_what_it_names():
    registry = Registry([
        Topic(name="orders.placed.v1", model=OrderPlaced, key_field="order_id", owner="storefront", consumers=("payments",),
              description="x"),
        Topic(name="payments.authorized.v1", model=PaymentAuthorized, key_field="order_id", owner="payments", description="y"),
    ])
    dot = fleet_dot(registry, services=("payments",), upstream=("storefront",))
    edges = _edges(dot)
    assert set(edges) == {("source:storefront", "topic:orders.placed.v1"), ("topic:orders.placed.v1", "service:payments"),
                          ("service:payments", "topic:payments.authorized.v1"),
                          ("service:payments", "dlq:orders.placed.v1.dlq")}
    assert "payments.authorized.v1.dlq" not in dot  # no consumer, so nothing dead-letters it
    assert '\\"' in fleet_dot(registry, services=('a "quoted" worker',), upstream=("storefront",))


def test_rendering_calls_dot_and_returns_its_svg(tmp_path):
    fake = tmp_path / "fake-dot"
    fake.write_text('#!/bin/sh\n[ "$1" = "-Tsvg" ] || exit 3\ncat >/dev/null\necho \'<svg xmlns="http://www.w3.org/2000/svg"></svg>\'\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert render_svg(fleet_dot(), dot=str(fake)).startswith("<svg")
    broken = tmp_path / "broken-dot"
    broken.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(RuntimeError, match="syntax error"):
        render_svg("digraph {", dot=str(broken))


def test_a_missing_dot_names_the_make_target_that_installs_it():
    with pytest.raises(GraphvizMissing, match="make debian-tools"):
        render_svg(fleet_dot(), dot="no-such-graphviz-dot-here")
