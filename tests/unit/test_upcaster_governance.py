"""The version rules of `fleet check` (contracts.governance): no upcaster is left the stub `fleet contracts bump` wrote,
and every superseded version that may still be read has an upcaster path to the current version of its event."""

from dataclasses import replace

from contracts import REGISTRY, UPCASTERS, InventoryReserved, OrderPlaced, OrderPlacedV2, Registry, Topic, Upcasters
from contracts.governance import (
    contract_problems,
    draft_topics,
    export_schemas,
    revision_problems,
    scaffolded_problems,
    superseded_problems,
    upcaster_problems,
)

V1 = Topic("orders.placed.v1", OrderPlaced, "order_id", "storefront", "Orders.", consumers=("payments", "tracker"))
V2 = Topic("orders.placed.v2", OrderPlacedV2, "order_id", "storefront", "Orders.", consumers=("payments", "tracker"))
TWO_VERSIONS = Registry([V1, V2])


def found(problems) -> list[tuple[str, str]]:
    return sorted((p.topic, p.rule) for p in problems)


def with_step(*, scaffolded: bool = False) -> Upcasters:
    upcasters = Upcasters()

    @upcasters.register(OrderPlaced, OrderPlacedV2, scaffolded=scaffolded)
    def order_placed_v1_to_v2(order: OrderPlaced) -> OrderPlacedV2:
        raise NotImplementedError

    return upcasters


def test_the_fleet_as_committed_has_every_upcaster_written_and_every_superseded_version_reaching_the_current_one():
    assert upcaster_problems() == []
    assert superseded_problems(REGISTRY, UPCASTERS, None) == []


def test_an_upcaster_still_the_stub_bump_wrote_fails_naming_it_and_the_topic_it_reads():
    problems = scaffolded_problems(TWO_VERSIONS, with_step(scaffolded=True))
    assert found(problems) == [("orders.placed.v1", "upcaster-scaffolded")]
    assert "order_placed_v1_to_v2 (OrderPlaced → OrderPlacedV2)" in problems[0].detail
    assert "drop `scaffolded=True`" in problems[0].fix


def test_a_written_upcaster_is_not_reported_as_a_stub():
    assert scaffolded_problems(TWO_VERSIONS, with_step(scaffolded=False)) == []


def test_offline_a_superseded_version_with_consumers_and_no_upcaster_to_the_current_one_fails():
    problems = superseded_problems(TWO_VERSIONS, Upcasters(), None)
    assert found(problems) == [("orders.placed.v1", "upcaster-missing")]
    assert "superseded by orders.placed.v2" in problems[0].detail
    assert "(payments, tracker)" in problems[0].detail
    assert "fleet contracts retire orders.placed.v1" in problems[0].fix


def test_offline_a_superseded_version_that_no_consumer_reads_needs_no_upcaster():
    registry = Registry([replace(V1, consumers=()), V2])
    assert superseded_problems(registry, Upcasters(), None) == []


def test_a_retired_version_needs_no_upcaster_even_when_groups_still_lag_on_it():
    registry = Registry([replace(V1, retired=True, retired_on="2026-12-01"), V2])
    assert superseded_problems(registry, Upcasters(), None) == []
    assert superseded_problems(registry, Upcasters(), {"orders.placed.v1": {"payments": 5}}) == []


def test_with_lags_known_only_a_group_with_lag_on_the_superseded_version_needs_the_upcaster():
    lagging = superseded_problems(TWO_VERSIONS, Upcasters(), {"orders.placed.v1": {"payments": 3, "tracker": 0}})
    assert found(lagging) == [("orders.placed.v1", "upcaster-missing")]
    assert "payments (lag 3)" in lagging[0].detail and "tracker" not in lagging[0].detail
    assert superseded_problems(TWO_VERSIONS, Upcasters(), {"orders.placed.v1": {"payments": 0}}) == []
    assert superseded_problems(TWO_VERSIONS, Upcasters(), {"orders.placed.v2": {"payments": 9}}) == []
    assert superseded_problems(TWO_VERSIONS, Upcasters(), {}) == []


def test_the_current_version_needs_no_upcaster_and_a_path_to_it_satisfies_the_rule():
    assert superseded_problems(TWO_VERSIONS, with_step(), None) == []
    assert superseded_problems(Registry([V2]), Upcasters(), None) == []


def test_a_chain_with_a_missing_step_leaves_every_version_before_the_gap_unreadable():
    v3 = Topic("orders.placed.v3", InventoryReserved, "order_id", "storefront", "Orders.", consumers=("tracker",))
    registry = Registry([V1, V2, v3])
    assert found(superseded_problems(registry, with_step(), None)) == [
        ("orders.placed.v1", "upcaster-missing"),
        ("orders.placed.v2", "upcaster-missing"),
    ]


def test_fleet_check_runs_the_version_rules_with_the_contract_rules(tmp_path):
    v2_without_step = Topic("orders.placed.v2", InventoryReserved, "order_id", "storefront", "Orders.")
    problems = contract_problems(Registry([V1, v2_without_step]), tmp_path)
    assert ("orders.placed.v1", "upcaster-missing") in found(problems)


def test_a_version_whose_upcaster_is_still_the_stub_is_a_draft_and_only_then():
    assert draft_topics(TWO_VERSIONS, with_step(scaffolded=True)) == {"orders.placed.v2"}
    assert draft_topics(TWO_VERSIONS, with_step(scaffolded=False)) == frozenset()
    assert draft_topics() == frozenset()


def test_export_rewrites_a_draft_s_only_revision_and_keeps_a_written_version_s_for_good(tmp_path):
    draft = Registry([Topic("orders.placed.v2", OrderPlaced, "order_id", "storefront", "Orders.")])
    export_schemas(draft, tmp_path, Upcasters())  # revision 1 as `fleet contracts bump` writes it: the old model's copy
    changed = Registry([V2])  # the new version's model changed since: it adds a required field (`channel`)
    kept, refused = export_schemas(changed, tmp_path, with_step(scaffolded=False))
    assert kept == [] and {p.rule for p in refused} == {"required-field-added"}
    assert {p.rule for p in revision_problems(changed, tmp_path, with_step(scaffolded=True))} == {"schema-stale"}
    written, problems = export_schemas(changed, tmp_path, with_step(scaffolded=True))
    assert problems == [] and [(w.revision, w.draft) for w in written] == [(1, True)]
    assert '"channel"' in (tmp_path / "orders.placed.v2" / "1.json").read_text()
    assert revision_problems(changed, tmp_path, with_step(scaffolded=True)) == []
