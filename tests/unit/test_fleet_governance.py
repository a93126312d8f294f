"""Fleet-side governance (fleet/governance.py): services' subscriptions and publishers, asyncapi.yaml and the docs agree with the registry."""

from contracts import REGISTRY, OrderPlaced, PaymentAuthorized, Registry, Topic
from fleet.docs.governance import Wiring, all_problems, asyncapi_problems, readme_problems, service_wiring, wire_format_problems, wiring_problems

ORDERS = "orders.placed.v1"
PAID = "payments.authorized.v1"
SMALL = Registry([
    Topic(ORDERS, OrderPlaced, "order_id", "storefront", "Orders.", consumers=("payments",)),
    Topic(PAID, PaymentAuthorized, "order_id", "payments", "Payments.", consumers=("shipping",)),
])


def wired(subscribes=(), publishes=(), errors=()) -> Wiring:
    return Wiring(frozenset(subscribes), frozenset(publishes), tuple(errors))


def found(problems) -> list[tuple[str, str, str]]:
    return sorted((p.topic, p.field, p.rule) for p in problems)


def test_a_fleet_wired_as_the_registry_says_passes():
    wiring = {"payments": wired([ORDERS, f"{ORDERS}.retry.1"], [PAID]), "shipping": wired([PAID])}
    assert wiring_problems(SMALL, wiring) == []


def test_a_listed_consumer_that_does_not_subscribe_fails():
    wiring = {"payments": wired([f"{ORDERS}.retry.1"], [PAID]), "shipping": wired([PAID])}
    assert found(wiring_problems(SMALL, wiring)) == [(ORDERS, "consumer payments", "missing-subscription")]


def test_a_service_subscribing_to_a_topic_it_is_not_listed_for_fails_also_on_a_retry_topic():
    wiring = {"payments": wired([ORDERS], [PAID]), "shipping": wired([PAID, f"{ORDERS}.retry.2"])}
    problems = wiring_problems(SMALL, wiring)
    assert found(problems) == [(ORDERS, "service shipping", "unlisted-consumer")]
    assert "contracts/registry.py" in problems[0].fix


def test_an_owner_without_a_publisher_and_a_publisher_that_is_not_the_owner_fail():
    wiring = {"payments": wired([ORDERS]), "shipping": wired([PAID], [PAID])}
    assert found(wiring_problems(SMALL, wiring)) == [(PAID, "owner payments", "missing-publisher"), (PAID, "service shipping", "not-owner")]


def test_upstream_owners_are_not_checked_but_unknown_consumers_and_topics_are():
    registry = Registry([Topic(ORDERS, OrderPlaced, "order_id", "storefront", "Orders.", consumers=("billing",))])
    wiring = {"payments": wired(["orders.cancelled.v1"], ["payments.refunded.v1"])}
    assert found(wiring_problems(registry, wiring)) == sorted([
        (ORDERS, "consumer billing", "unknown-consumer"),
        ("orders.cancelled.v1", "service payments", "unknown-topic"),
        ("payments.refunded.v1", "service payments", "unknown-topic"),
    ])


def test_a_handler_that_takes_another_model_is_reported():
    wiring = {"payments": wired([ORDERS], [PAID], ["handler on_x on orders.placed.v1 takes PaymentAuthorized; the registry says OrderPlaced"]),
              "shipping": wired([PAID])}
    assert found(wiring_problems(SMALL, wiring)) == [("-", "service payments", "one-type-per-topic")]


def test_the_real_services_are_wired_as_the_registry_says():
    wiring = service_wiring()
    assert wiring["payments"].subscribes >= {ORDERS} and wiring["payments"].publishes == {PAID, "payments.declined.v1"}
    assert wiring_problems(REGISTRY, wiring) == []


def test_every_registry_topic_needs_an_asyncapi_channel_and_every_channel_a_registry_topic():
    document = {"channels": {"a": {"address": ORDERS}, "b": {"address": f"{ORDERS}.dlq"}, "c": {"bindings": {"kafka": {"topic": "orders.lost.v1"}}}}}
    assert found(asyncapi_problems(SMALL, document)) == sorted([(PAID, "", "asyncapi-missing-topic"), ("orders.lost.v1", "", "asyncapi-unknown-topic")])


README = """# x

## Architecture in one screen

```
 storefront ──► {topics} ──► payments
```

| folder | orders.gone.v1 outside the diagram is not checked |

## Next
"""


def test_the_readme_diagram_shows_every_registry_topic_and_no_other():
    assert readme_problems(SMALL, README.format(topics=f"{ORDERS} / {PAID}")) == []
    assert found(readme_problems(SMALL, README.format(topics=f"{ORDERS} / orders.shipped.v1"))) == sorted([
        (PAID, "", "readme-missing-topic"), ("orders.shipped.v1", "", "readme-unknown-topic"),
    ])
    assert readme_problems(SMALL, "# no architecture section") == []


WIRE = """## The record

| topic | `ce_type` | key field | signed by | size limit |
|---|---|---|---|---|
{rows}

Each event's fields...
"""


def row(name, key="order_id", size=16384):
    return f"| `{name}` | `dev.eventfleet.{name}` | `{key}` | someone | {size} bytes |"


def test_the_wire_format_table_lists_each_topic_with_its_type_key_and_size():
    assert wire_format_problems(SMALL, WIRE.format(rows="\n".join([row(ORDERS), row(PAID)]))) == []
    problems = wire_format_problems(SMALL, WIRE.format(rows="\n".join([row(ORDERS, key="sku", size=1), row("orders.gone.v1")])))
    assert found(problems) == sorted([(ORDERS, "", "wire-format-mismatch"), (ORDERS, "", "wire-format-mismatch"),
                                      (PAID, "", "wire-format-missing-topic"), ("orders.gone.v1", "", "wire-format-unknown-topic")])
    assert wire_format_problems(SMALL, "no table here") == []


def test_all_problems_runs_every_check_on_a_tree_and_names_each_in_its_summary(tmp_path):
    (tmp_path / "asyncapi.yaml").write_text("channels: {}\n")
    problems, summary = all_problems(tmp_path)
    assert {p.rule for p in problems} == {"asyncapi-missing-topic"}
    assert len([p for p in problems if p.rule == "asyncapi-missing-topic"]) == len(REGISTRY)
    assert [line.split(":")[0] for line in summary] == [
        summary[0].split(":")[0], summary[1].split(":")[0], "asyncapi.yaml channels",
    ]
    assert summary[0].endswith("ok") and summary[1].endswith("ok") and summary[2].endswith(f"{len(REGISTRY)} problem(s)")


def test_fleet_check_needs_no_keys_on_the_machine(tmp_path):
    """A fresh clone has no .fleet/keys: building the apps to read their wiring uses throwaway keys."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FLEET_KEYS_DIR": str(tmp_path / "no-keys-here")}
    done = subprocess.run([sys.executable, "-m", "fleet", "check"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not (tmp_path / "no-keys-here").exists(), "nothing is written where the keys would be"
