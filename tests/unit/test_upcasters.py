"""Upcasters: every registered one holds to its vectors (contracts/vectors/upcasters/), chains compose, what cannot be an
upcaster is refused with a clear error, and order_placed_v1_to_v2 is pure."""

import copy
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import (
    REGISTRY,
    UPCASTERS,
    Event,
    NoUpcastPath,
    OrderPlaced,
    OrderPlacedV2,
    PaymentAuthorized,
    UpcasterError,
    Upcasters,
    as_current,
)
from contracts.upcasters import V1_ORDER_CHANNEL, order_placed_v1_to_v2
from tests.support import an_authorization, an_order, an_order_v2

VECTORS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "vectors" / "upcasters"
V1_TO_V2 = json.loads((VECTORS_DIR / "orders.placed.v1-to-v2.json").read_text(encoding="utf-8"))


def _vector_file_of(upcaster) -> Path:
    """`orders.placed.v1-to-v2.json`: the source topic, and the version it upcasts to."""
    return VECTORS_DIR / f"{REGISTRY.of(upcaster.source).name}-to-v{REGISTRY.of(upcaster.target).version}.json"


# --- The vectors -----------------------------------------------------------------------------------------------------


def test_every_registered_upcaster_has_its_vectors_and_they_name_it():
    for upcaster in UPCASTERS:
        path = _vector_file_of(upcaster)
        assert path.is_file(), f"{upcaster.name} has no vectors at {path}"
        vectors = json.loads(path.read_text(encoding="utf-8"))
        assert (vectors["upcaster"], vectors["source"], vectors["target"]) == (
            upcaster.name, REGISTRY.of(upcaster.source).name, REGISTRY.of(upcaster.target).name
        )
        assert vectors["cases"], f"{path.name} has no cases"


@pytest.mark.parametrize("case", V1_TO_V2["cases"], ids=[c["name"] for c in V1_TO_V2["cases"]])
def test_a_v1_order_of_the_vectors_upcasts_to_its_v2_order(case):
    order = OrderPlaced.model_validate_json(json.dumps(case["input"]))  # as a record's value is read: v1's terms
    upcast = UPCASTERS.upcast(order, OrderPlacedV2)
    assert type(upcast) is OrderPlacedV2
    assert upcast == OrderPlacedV2.model_validate(case["output"])
    assert upcast.model_dump(mode="json") == case["output"]  # pydantic's JSON form, as the vectors write it
    assert upcast.channel == V1_ORDER_CHANNEL == "web"


@pytest.mark.parametrize("case", V1_TO_V2["refused"], ids=[c["name"] for c in V1_TO_V2["refused"]])
def test_what_is_not_a_v1_order_is_refused_on_v1s_terms_before_any_upcast(case):
    with pytest.raises(ValidationError):
        OrderPlaced.model_validate_json(json.dumps(case["input"]))


def test_every_v1_field_is_in_the_vectors_output_and_channel_is_the_only_new_one():
    for case in V1_TO_V2["cases"]:
        assert set(case["input"]) == set(OrderPlaced.model_fields)
        assert set(case["output"]) == set(OrderPlacedV2.model_fields) == set(case["input"]) | {"channel"}
        assert {k: v for k, v in case["output"].items() if k != "channel"} == case["input"]


# --- Chains ----------------------------------------------------------------------------------------------------------


class ToyV1(Event):
    name: str


class ToyV2(Event):
    name: str
    size: int


class ToyV3(Event):
    name: str
    size: int
    colour: str


def toy_upcasters() -> Upcasters:
    """A throwaway registry: ToyV1 → ToyV2 (size 1) → ToyV3 (colour red)."""
    upcasters = Upcasters()

    @upcasters.register(ToyV1, ToyV2)
    def toy_v1_to_v2(toy: ToyV1) -> ToyV2:
        return ToyV2(name=toy.name, size=1)

    @upcasters.register(ToyV2, ToyV3)
    def toy_v2_to_v3(toy: ToyV2) -> ToyV3:
        return ToyV3(name=toy.name, size=toy.size, colour="red")

    return upcasters


def test_a_chain_goes_through_every_step_in_order():
    upcasters = toy_upcasters()
    assert [step.name for step in upcasters.path(ToyV1, ToyV3)] == ["toy_v1_to_v2", "toy_v2_to_v3"]
    assert [(step.source, step.target) for step in upcasters.path(ToyV1, ToyV3)] == [(ToyV1, ToyV2), (ToyV2, ToyV3)]
    assert upcasters.upcast(ToyV1(name="kettle"), ToyV3) == ToyV3(name="kettle", size=1, colour="red")


def test_a_chain_may_start_at_any_version_and_stop_at_any_later_one():
    upcasters = toy_upcasters()
    assert [step.name for step in upcasters.path(ToyV2, ToyV3)] == ["toy_v2_to_v3"]
    assert [step.name for step in upcasters.path(ToyV1, ToyV2)] == ["toy_v1_to_v2"]
    assert upcasters.upcast(ToyV2(name="kettle", size=4), ToyV3) == ToyV3(name="kettle", size=4, colour="red")
    assert upcasters.upcast(ToyV1(name="kettle"), ToyV2) == ToyV2(name="kettle", size=1)


def test_a_model_upcast_to_itself_is_the_event_itself_through_no_step():
    upcasters = toy_upcasters()
    toy = ToyV2(name="kettle", size=4)
    assert upcasters.path(ToyV2, ToyV2) == ()
    assert upcasters.upcast(toy, ToyV2) is toy


def test_the_throwaway_upcasters_leave_the_fleets_own_alone():
    toy_upcasters()
    assert UPCASTERS.of(ToyV1) is None and UPCASTERS.path(ToyV1, ToyV3) is None
    assert not {ToyV1, ToyV2, ToyV3} & {u.source for u in UPCASTERS}
    assert (OrderPlaced, OrderPlacedV2) in [(u.source, u.target) for u in UPCASTERS]


# --- Refusals --------------------------------------------------------------------------------------------------------


def test_a_second_upcaster_from_one_model_is_refused_and_the_first_one_stays():
    upcasters = toy_upcasters()
    with pytest.raises(UpcasterError, match="ToyV1 already upcasts with toy_v1_to_v2"):

        @upcasters.register(ToyV1, ToyV3)
        def toy_v1_to_v3(toy: ToyV1) -> ToyV3:
            return ToyV3(name=toy.name, size=1, colour="blue")

    assert upcasters.of(ToyV1).name == "toy_v1_to_v2"
    assert upcasters.upcast(ToyV1(name="kettle"), ToyV3).colour == "red"


def test_the_fleets_upcaster_of_v1_orders_cannot_be_registered_again():
    with pytest.raises(UpcasterError, match="OrderPlaced already upcasts with order_placed_v1_to_v2"):

        @UPCASTERS.register(OrderPlaced, OrderPlacedV2)
        def another_v1_to_v2(order: OrderPlaced) -> OrderPlacedV2:
            return OrderPlacedV2(**dict(order), channel="phone")

    assert UPCASTERS.of(OrderPlaced).function is order_placed_v1_to_v2


def test_an_upcaster_from_a_model_to_itself_is_refused():
    upcasters = Upcasters()
    with pytest.raises(UpcasterError, match="toy_v1_to_v1 upcasts ToyV1 to itself"):

        @upcasters.register(ToyV1, ToyV1)
        def toy_v1_to_v1(toy: ToyV1) -> ToyV1:
            return toy

    assert list(upcasters) == []


def test_no_path_is_none_and_upcasting_along_it_is_refused_naming_both_models():
    upcasters = Upcasters()

    @upcasters.register(ToyV1, ToyV2)
    def toy_v1_to_v2(toy: ToyV1) -> ToyV2:
        return ToyV2(name=toy.name, size=1)

    assert upcasters.path(ToyV1, ToyV3) is None  # no step from ToyV2 on
    assert upcasters.path(ToyV2, ToyV1) is None  # never backwards
    with pytest.raises(NoUpcastPath, match="no upcaster leads from ToyV1 to ToyV3"):
        upcasters.upcast(ToyV1(name="kettle"), ToyV3)
    with pytest.raises(NoUpcastPath, match="no upcaster leads from ToyV2 to ToyV1"):
        upcasters.upcast(ToyV2(name="kettle", size=1), ToyV1)


def test_no_path_leads_from_an_order_to_an_unrelated_event_or_back_from_v2_to_v1():
    assert UPCASTERS.path(OrderPlaced, PaymentAuthorized) is None
    with pytest.raises(NoUpcastPath, match="no upcaster leads from OrderPlacedV2 to OrderPlaced"):
        UPCASTERS.upcast(an_order_v2(), OrderPlaced)


def test_a_cycle_of_upcasters_is_no_path():
    upcasters = Upcasters()

    @upcasters.register(ToyV1, ToyV2)
    def toy_v1_to_v2(toy: ToyV1) -> ToyV2:
        return ToyV2(name=toy.name, size=1)

    @upcasters.register(ToyV2, ToyV1)
    def toy_v2_to_v1(toy: ToyV2) -> ToyV1:
        return ToyV1(name=toy.name)

    assert upcasters.path(ToyV1, ToyV3) is None  # instead of going round for ever
    with pytest.raises(NoUpcastPath):
        upcasters.upcast(ToyV1(name="kettle"), ToyV3)


def test_an_upcaster_that_returns_another_type_is_refused_naming_it_and_both_types():
    upcasters = Upcasters()

    @upcasters.register(ToyV1, ToyV2)
    def toy_v1_to_v2(toy: ToyV1) -> ToyV2:
        return ToyV3(name=toy.name, size=1, colour="red")  # type: ignore[return-value]  # the mistake under test

    with pytest.raises(UpcasterError, match="toy_v1_to_v2 returned ToyV3, not ToyV2"):
        upcasters.upcast(ToyV1(name="kettle"), ToyV2)
    with pytest.raises(UpcasterError, match="toy_v1_to_v2 returned ToyV3, not ToyV2"):
        upcasters.of(ToyV1)(ToyV1(name="kettle"))


def test_a_wrong_type_in_the_middle_of_a_chain_stops_the_chain_there():
    upcasters = Upcasters()

    @upcasters.register(ToyV1, ToyV2)
    def toy_v1_to_v2(toy: ToyV1) -> ToyV2:
        return ToyV1(name=toy.name)  # type: ignore[return-value]  # the mistake under test

    @upcasters.register(ToyV2, ToyV3)
    def toy_v2_to_v3(toy: ToyV2) -> ToyV3:
        raise AssertionError("never reached: the step before it failed")

    with pytest.raises(UpcasterError, match="toy_v1_to_v2 returned ToyV1, not ToyV2"):
        upcasters.upcast(ToyV1(name="kettle"), ToyV3)


# --- as_current ------------------------------------------------------------------------------------------------------


def test_a_v2_order_is_current_as_it_is():
    order = an_order_v2(channel="store")
    assert as_current(order) is order


def test_a_v1_order_as_current_is_the_same_order_of_v2_through_the_web_shop():
    order = an_order()
    current = as_current(order)
    assert type(current) is OrderPlacedV2 and REGISTRY.of(current) is REGISTRY.current(REGISTRY.of(order))
    assert current == an_order_v2(order_id=order.order_id, channel="web")


def test_an_event_of_a_topic_with_one_version_is_current_as_it_is():
    authorization = an_authorization()
    assert as_current(authorization) is authorization


# --- Purity ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", V1_TO_V2["cases"], ids=[c["name"] for c in V1_TO_V2["cases"]])
def test_the_v1_to_v2_upcaster_gives_the_same_order_for_the_same_order_and_leaves_its_input_as_it_was(case):
    order = OrderPlaced.model_validate(case["input"])
    before, dumped = copy.deepcopy(order), order.model_dump_json()
    first, second = order_placed_v1_to_v2(order), order_placed_v1_to_v2(order)
    assert first == second and first.model_dump_json() == second.model_dump_json()
    assert first is not second and first is not order  # a new event each time, never the input changed in place
    assert order == before and order.model_dump_json() == dumped


def test_the_v1_to_v2_upcaster_reads_no_clock_and_opens_no_file(monkeypatch):
    """Pure: nothing but its argument decides the result."""
    import builtins
    import time

    order = an_order()
    expected = order_placed_v1_to_v2(order)

    def forbidden(*args, **kwargs):
        raise AssertionError("an upcaster may not read the clock or open a file")

    for module, name in ((builtins, "open"), (time, "time"), (time, "time_ns"), (time, "monotonic")):
        monkeypatch.setattr(module, name, forbidden)
    assert order_placed_v1_to_v2(order) == expected
    assert expected.placed_at == order.placed_at  # the order's own time, not the time it was upcast
