"""asyncapi.yaml, the fleet graph and the offline site show an event's versions (issue 19): the superseded one marked
deprecated with its successor and the upcaster between them, what that upcaster does, and a retired or closed version
as such; the documents stay free of errors and warnings for the official parser."""

import pytest
import yaml

from contracts import REGISTRY, Registry
from contracts.registry import TOPICS, with_lifecycle
from fleet.docs.asyncapi import DOCUMENT, fleet_document, render
from fleet.docs.graph import fleet_dot
from fleet.docs.site import page_html, versions_html
from fleet.runtime.asyncapi import channel_id
from tests.unit.test_asyncapi_parser import _judge, validate

V1, V2 = "orders.placed.v1", "orders.placed.v2"
RETIRED = Registry(with_lifecycle(TOPICS, {"retired": {V1: "2026-12-07"}}))
CLOSED = Registry(with_lifecycle(TOPICS, {"closed": {V1: "2026-12-06"}}))
SVG = '<svg xmlns="http://www.w3.org/2000/svg"><text>orders.placed.v1</text></svg>'


@pytest.fixture(scope="module")
def committed() -> dict:
    return yaml.safe_load(DOCUMENT.read_text())


@pytest.fixture(scope="module")
def retired() -> dict:
    return fleet_document(registry=RETIRED)


@pytest.fixture(scope="module")
def closed() -> dict:
    return fleet_document(registry=CLOSED)


def senders(document: dict, address: str) -> set[str]:
    return {op["x-eventfleet-service"] for op in document["operations"].values()
            if op["action"] == "send" and op["channel"]["$ref"] == f"#/channels/{channel_id(address)}"}


def test_the_superseded_version_s_channel_message_and_payload_are_marked_deprecated(committed):
    channel = committed["channels"][channel_id(V1)]
    assert channel["summary"].startswith("Deprecated. ") and {"name": "deprecated"}.items() <= channel["tags"][0].items()
    assert channel["description"].startswith(f"**Deprecated**: superseded by `{V2}` (OrderPlacedV2).")
    message = committed["components"]["messages"]["OrderPlaced"]
    assert message["title"] == f"OrderPlaced ({V1}, deprecated)" and message["tags"][0]["name"] == "deprecated"
    assert committed["components"]["schemas"]["OrderPlaced"]["deprecated"] is True
    assert "deprecated" not in committed["components"]["schemas"]["OrderPlacedV2"]
    for retry in REGISTRY.named(V1).retry_topics:
        assert committed["channels"][channel_id(retry)]["tags"][0]["name"] == "deprecated"


def test_the_upcaster_between_the_versions_is_named_with_what_it_does(committed):
    upcaster = {"name": "order_placed_v1_to_v2", "from": V1, "to": V2,
                "description": "orders.placed.v1 → v2: every field as it was, and `channel` = `web` (the only channel before v2)"}
    assert committed["channels"][channel_id(V1)]["x-eventfleet-lifecycle"] == {
        "state": "superseded", "supersededBy": V2, "upcasters": [upcaster]}
    assert committed["channels"][channel_id(V2)]["x-eventfleet-lifecycle"] == {
        "state": "current", "supersedes": [V1], "upcasters": [upcaster]}
    assert "through the upcaster `order_placed_v1_to_v2` (orders.placed.v1 → v2: every field as it was" in \
        committed["channels"][channel_id(V1)]["description"]
    assert committed["channels"][channel_id(V2)]["description"].startswith(f"Supersedes `{V1}`: a consumer of this version")
    reading = committed["operations"]["payments_receives_orders_placed_v1"]["description"]
    assert reading.startswith("Reads each OrderPlaced (a deprecated version), upcast to OrderPlacedV2 by `order_placed_v1_to_v2`")
    assert f"`{V2}` is current (`{V1}` deprecated); upcasters: `order_placed_v1_to_v2`" in committed["info"]["description"]


def test_an_event_with_one_version_carries_no_version_marks(committed):
    channel = committed["channels"][channel_id("payments.authorized.v1")]
    assert "x-eventfleet-lifecycle" not in channel and "tags" not in channel
    assert "x-eventfleet-lifecycle" not in committed["components"]["messages"]["PaymentAuthorized"]


def test_a_retired_version_says_since_when_and_nobody_writes_it_any_more(retired):
    channel = retired["channels"][channel_id(V1)]
    assert channel["description"].startswith("**Retired** since 2026-12-07 (`fleet contracts retire`): nothing writes or reads it")
    assert channel["summary"].startswith("Retired. ") and channel["tags"][0]["name"] == "retired"
    assert channel["x-eventfleet-lifecycle"]["state"] == "retired" and channel["x-eventfleet-lifecycle"]["retiredOn"] == "2026-12-07"
    assert retired["components"]["messages"]["OrderPlaced"]["title"] == f"OrderPlaced ({V1}, retired)"
    assert retired["components"]["schemas"]["OrderPlaced"]["deprecated"] is True
    assert senders(retired, V1) == set(), "no storefront, gateway or dead-letter replay writes a retired version"
    assert {"storefront", "gateway"} <= senders(retired, V2)
    assert f"`{V1}` retired since 2026-12-07" in retired["info"]["description"]


def test_a_closed_version_is_read_but_no_producer_writes_it(closed, committed):
    channel = closed["channels"][channel_id(V1)]
    assert channel["description"].startswith("**Deprecated**, closed for writing since 2026-12-06 (`fleet contracts close`)")
    assert channel["x-eventfleet-lifecycle"]["closedOn"] == "2026-12-06"
    assert senders(closed, V1) == {"fleet-dlq"} and {"storefront", "gateway"} <= senders(committed, V1)


def test_the_versioned_documents_have_no_errors_and_no_warnings_for_the_official_parser(tmp_path, retired, closed):
    files = []
    for name, document in (("retired", retired), ("closed", closed)):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(render(document))
    code, report = validate(*files)
    assert not _judge(report) and code == 0, _judge(report)


def test_the_graph_draws_the_upcaster_from_the_old_version_to_the_new_and_greys_the_old_one():
    dot = fleet_dot()
    assert f'"topic:{V1}" -> "topic:{V2}" [label="order_placed_v1_to_v2", style=dashed, color="#7c3aed"' in dot
    assert f'"topic:{V1}" [label="{V1}\\n(deprecated)"' in dot and f'"topic:{V2}" [label="{V2}",' in dot


def test_the_graph_of_a_retired_version_has_no_producer_consumer_or_upcaster_edge():
    dot = fleet_dot(RETIRED)
    assert f'[label="{V1}\\n(retired 2026-12-07)"' in dot
    assert [line for line in dot.splitlines() if f'"topic:{V1}"' in line and "->" in line] == []


def test_the_site_lists_the_versions_their_state_and_the_upcaster_before_the_document(committed, retired):
    section = versions_html(committed)
    assert f"<code>{V2}</code> is current; it supersedes <code>{V1}</code> <span class=\"deprecated\">deprecated</span>." in section
    assert "upcaster <code>order_placed_v1_to_v2</code> (<code>orders.placed.v1</code> → <code>orders.placed.v2</code>)" in section
    assert "every field as it was, and <code>channel</code> = <code>web</code>" in section
    assert '<span class="deprecated">retired</span> since 2026-12-07' in versions_html(retired)
    page = page_html(committed, SVG)
    assert page.index("Fleet graph") < page.index("Event versions") < page.index('id="asyncapi-rendered"')
    one_version = {cid: c for cid, c in committed["channels"].items() if "x-eventfleet-lifecycle" not in c}
    assert one_version and versions_html({"channels": one_version}) == ""
