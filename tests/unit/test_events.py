"""Every event is frozen, strict, and documented field by field with a description and an example that validates."""

import pytest
from pydantic import BaseModel, ValidationError

from contracts import REGISTRY, OrderItem
from tests.support import an_order


def _documented_models():
    return [t.model for t in REGISTRY] + [OrderItem]


@pytest.mark.parametrize("model", _documented_models(), ids=lambda m: m.__name__)
def test_every_field_has_a_description_and_an_example(model):
    undocumented = [name for name, f in model.model_fields.items() if not f.description or not f.examples]
    assert undocumented == []


def _example_of(model: type[BaseModel]) -> dict:
    return {name: f.examples[0] for name, f in model.model_fields.items()}


@pytest.mark.parametrize("model", _documented_models(), ids=lambda m: m.__name__)
def test_the_field_examples_together_make_a_valid_event(model):
    assert model.model_validate(_example_of(model))


def test_events_are_frozen():
    order = an_order()
    with pytest.raises(ValidationError):
        order.total_cents = 1


def test_unknown_fields_are_an_error_not_silently_dropped():
    data = an_order().model_dump() | {"coupon": "FREE"}
    with pytest.raises(ValidationError, match="coupon"):
        type(an_order()).model_validate(data)


def test_an_order_needs_at_least_one_item():
    data = an_order().model_dump() | {"items": []}
    with pytest.raises(ValidationError, match="items"):
        type(an_order()).model_validate(data)


def test_an_order_time_must_carry_its_offset():
    data = an_order().model_dump(mode="json") | {"placed_at": "2026-11-24T16:00:00"}
    with pytest.raises(ValidationError, match="timezone"):
        type(an_order()).model_validate(data)


@pytest.mark.parametrize("currency", ["eur", "EURO", ""])
def test_a_currency_is_three_capital_letters(currency):
    data = an_order().model_dump() | {"currency": currency}
    with pytest.raises(ValidationError, match="currency"):
        type(an_order()).model_validate(data)
