"""The fleet's event types: one frozen pydantic model per message type, each a fact named in the past tense."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ControlIssued",
    "Event",
    "InventoryBackordered",
    "InventoryReserved",
    "MissingStock",
    "NotificationSent",
    "OrderItem",
    "OrderPlaced",
    "OrderPlacedV2",
    "PartitionOffset",
    "PaymentAuthorized",
    "PaymentDeclined",
    "ShipmentScheduled",
    "StockLine",
    "StockReceived",
    "redacted",
]

# Field types shared by several events, each with the description and example the AsyncAPI reader sees.
# Printable text only: ids travel as record keys and signed headers, where a control character has no business.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
OrderId = Annotated[
    str,
    Field(
        description="The order's id, unique across the fleet; also the record key.",
        examples=["ord-7f3a9c"],
        min_length=1,
        max_length=64,
        pattern=PRINTABLE,
    ),
]
# Personal data: `redacted()` hides it wherever a payload is logged, and the schema marks it with `x-personal`.
CustomerId = Annotated[
    str,
    Field(
        description="The customer who placed the order.",
        examples=["cus-1042"],
        min_length=1,
        max_length=64,
        pattern=PRINTABLE,
        json_schema_extra={"x-personal": True},
    ),
]
Currency = Annotated[
    str,
    Field(description="ISO 4217 currency code of every amount in the event.", examples=["EUR"], pattern=r"^[A-Z]{3}$"),
]


class Event(BaseModel):
    """Base of every event: immutable, and strict about unknown fields so a typo is an error, not data loss."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderItem(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(
        description="Stock keeping unit of the product.", examples=["SKU-TEA-001"], min_length=1, max_length=64
    )
    quantity: int = Field(description="How many units were ordered.", examples=[2], ge=1, le=10_000)
    unit_price_cents: int = Field(description="Price of one unit in the smallest currency unit.", examples=[1250], ge=0)


# The fields every version of an order shares (OrderPlaced, OrderPlacedV2).
OrderLines = Annotated[
    tuple[OrderItem, ...],
    Field(
        description="The order lines; at least one.",
        examples=[[{"sku": "SKU-TEA-001", "quantity": 2, "unit_price_cents": 1250}]],
        min_length=1,
        max_length=100,
    ),
]
OrderTotalCents = Annotated[
    int,
    Field(
        description="The order total in the smallest currency unit, as the storefront computed it.",
        examples=[2500],
        ge=0,
    ),
]
PlacedAt = Annotated[
    AwareDatetime,
    Field(description="When the customer placed the order (RFC 3339, with offset).", examples=["2026-11-24T16:00:00Z"]),
]


class OrderPlaced(Event):
    """A customer placed an order in the storefront."""

    order_id: OrderId
    customer_id: CustomerId
    items: OrderLines
    currency: Currency
    total_cents: OrderTotalCents
    placed_at: PlacedAt


# Where an order was placed (orders.placed.v2): notifications name it in their text.
Channel = Literal["web", "store", "phone"]


class OrderPlacedV2(Event):
    """A customer placed an order through one of the storefront's channels: the web shop, a store's till, or the
    phone line (v2 of OrderPlaced: it adds `channel`)."""

    order_id: OrderId
    customer_id: CustomerId
    items: OrderLines
    currency: Currency
    total_cents: OrderTotalCents
    placed_at: PlacedAt
    channel: Channel = Field(
        description="Where the customer placed the order: `web` (the web shop), `store` (a store's till) or `phone` "
        "(the phone line). Notifications name it in their text. Orders of v1 are read as `web`, the only channel "
        "before v2.",
        examples=["web"],
    )


class PaymentAuthorized(Event):
    """The customer's payment for an order was authorized."""

    order_id: OrderId
    customer_id: CustomerId
    payment_id: str = Field(
        description="The authorization's id, derived from the order id so a redelivered order yields the same one.",
        examples=["pay-ord-7f3a9c"],
        min_length=1,
        max_length=80,
    )
    amount_cents: int = Field(description="The authorized amount in the smallest currency unit.", examples=[2500], ge=0)
    currency: Currency
    authorized_at: AwareDatetime = Field(
        description="When the payment was authorized.", examples=["2026-11-24T16:00:01Z"]
    )


class PaymentDeclined(Event):
    """The customer's payment for an order was declined, with the rule that declined it."""

    order_id: OrderId
    customer_id: CustomerId
    amount_cents: int = Field(
        description="The amount that was asked for, in the smallest currency unit.", examples=[250000], ge=0
    )
    currency: Currency
    reason: Literal["over_limit", "unsupported_currency", "total_mismatch"] = Field(
        description="Why it was declined: the total is over the customer's limit, the currency is not accepted, or the "
        "total is not the sum of the lines.",
        examples=["over_limit"],
    )
    declined_at: AwareDatetime = Field(description="When the payment was declined.", examples=["2026-11-24T16:00:01Z"])


class NotificationSent(Event):
    """A notification about an order was recorded for delivery to the customer."""

    notification_id: str = Field(
        description="The notification's id, derived from the order and template so a redelivery yields the same one.",
        examples=["ntf-ord-7f3a9c-payment_authorized"],
        min_length=1,
        max_length=120,
    )
    order_id: OrderId
    customer_id: CustomerId
    channel: Literal["email"] = Field(description="Where the notification goes.", examples=["email"])
    template: Literal["payment_authorized", "payment_declined", "order_backordered", "shipment_scheduled"] = Field(
        description="Which message the customer receives.", examples=["payment_authorized"]
    )
    sent_at: AwareDatetime = Field(description="When the notification was recorded.", examples=["2026-11-24T16:00:02Z"])


Sku = Annotated[
    str,
    Field(
        description="Stock keeping unit of the product.",
        examples=["SKU-TEA-001"],
        min_length=1,
        max_length=64,
        pattern=PRINTABLE,
    ),
]


class StockLine(BaseModel):
    """A quantity of one product."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: int = Field(description="How many units.", examples=[2], ge=1, le=1_000_000)


class StockReceived(Event):
    """The warehouse received units of a product (published by the warehouse, an upstream system, and by `fleet demo`)."""  # noqa: E501 (the schema's description, frozen in revision 1)

    receipt_id: str = Field(
        description="The goods receipt's id; the record key, so receipts of one product stay in order.",
        examples=["rcpt-2026-11-24-0001"],
        min_length=1,
        max_length=80,
        pattern=PRINTABLE,
    )
    sku: Sku
    quantity: int = Field(description="How many units arrived.", examples=[40], ge=1, le=1_000_000)
    received_at: AwareDatetime = Field(description="When the units were received.", examples=["2026-11-24T08:00:00Z"])


class InventoryReserved(Event):
    """Stock for every line of a paid order was set aside."""

    order_id: OrderId
    customer_id: CustomerId
    reservation_id: str = Field(
        description="The reservation's id, derived from the order id.",
        examples=["rsv-ord-7f3a9c"],
        min_length=1,
        max_length=80,
    )
    items: tuple[StockLine, ...] = Field(
        description="What was reserved.",
        examples=[[{"sku": "SKU-TEA-001", "quantity": 2}]],
        min_length=1,
        max_length=100,
    )
    reserved_at: AwareDatetime = Field(description="When the stock was reserved.", examples=["2026-11-24T16:00:03Z"])


class MissingStock(BaseModel):
    """A line that could not be reserved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    requested: int = Field(description="Units the order asked for.", examples=[3], ge=1)
    available: int = Field(description="Units in stock when the order was paid.", examples=[1], ge=0)


class InventoryBackordered(Event):
    """A paid order could not be reserved in full; nothing was set aside, and the customer waits for new stock."""

    order_id: OrderId
    customer_id: CustomerId
    missing: tuple[MissingStock, ...] = Field(
        description="The lines short of stock.",
        examples=[[{"sku": "SKU-TEA-001", "requested": 3, "available": 1}]],
        min_length=1,
        max_length=100,
    )
    backordered_at: AwareDatetime = Field(description="When the shortage was found.", examples=["2026-11-24T16:00:03Z"])


class ShipmentScheduled(Event):
    """A shipment for a reserved order was booked with a carrier."""

    order_id: OrderId
    customer_id: CustomerId
    shipment_id: str = Field(
        description="The shipment's id, derived from the order id.",
        examples=["shp-ord-7f3a9c"],
        min_length=1,
        max_length=80,
    )
    carrier: Literal["parcel", "freight"] = Field(
        description="How it travels: parcel for up to 10 units, freight above.", examples=["parcel"]
    )
    units: int = Field(description="How many units the shipment holds.", examples=[2], ge=1)
    ship_by: date = Field(description="The day it leaves the warehouse: the next working day.", examples=["2026-11-25"])
    scheduled_at: AwareDatetime = Field(description="When the shipment was booked.", examples=["2026-11-24T16:00:04Z"])


PERSONAL = "[personal]"


def redacted(model: BaseModel) -> dict:
    """The model as JSON data with every field marked `x-personal` replaced by "[personal]": what an opt-in payload log
    may show."""
    data: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("x-personal"):
            data[name] = PERSONAL
        elif isinstance(value, BaseModel):
            data[name] = redacted(value)
        elif isinstance(value, (tuple, list)) and value and isinstance(value[0], BaseModel):
            data[name] = [redacted(item) for item in value]
        else:
            data[name] = _json_of(model, name)
    return data


def _json_of(model: BaseModel, name: str):
    return model.model_dump(mode="json", include={name})[name]


class PartitionOffset(BaseModel):
    """Where a consumer group is to read next on one partition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(
        description="A topic the service reads.", examples=["orders.placed.v1"], min_length=1, max_length=249
    )
    partition: int = Field(description="The partition's number.", examples=[0], ge=0)
    offset: int = Field(description="The next offset the group reads on it.", examples=[1042], ge=0)


class ControlIssued(Event):
    """An operator told a service's replicas to pause, resume or move: every replica reads every such record.

    `pause` and `resume` name topics the service reads (none: all of them, with their retry tiers); `seek` moves a
    consumer group (`fleet replay`), and its replicas apply it only while they read the control topic live, never when
    they read its history on start."""

    service: str = Field(
        description="The service whose replicas obey; also the record key.",
        examples=["payments"],
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_-]*$",
    )
    command: Literal["pause", "resume", "seek"] = Field(
        description="pause: stop fetching, keeping the partitions; resume: fetch again from where it stopped; seek: "
        "move the group to `offsets` (the service is paused around it).",
        examples=["seek", "pause", "resume"],
    )
    topics: tuple[str, ...] = Field(
        default=(),
        description="The topics it applies to, among those the service reads; empty: every topic it reads.",
        examples=[["orders.placed.v1"]],
        max_length=100,
    )
    group: str | None = Field(
        default=None,
        description="The consumer group it applies to. A seek moves this group; a pause or resume that names one "
        "holds only the replicas in it (default: every replica of the service).",
        examples=["payments"],
        max_length=249,
    )
    offsets: tuple[PartitionOffset, ...] = Field(
        default=(),
        description="For seek: where the group reads next, per partition.",
        examples=[[{"topic": "orders.placed.v1", "partition": 0, "offset": 1042}]],
        max_length=10_000,
    )
    reason: str = Field(
        default="",
        description="Why, in the operator's words (shown by `fleet status`).",
        examples=["payments database down"],
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f]*$",
    )
    issued_by: str = Field(
        description="Who issued it: the operator's name.",
        examples=["alice"],
        min_length=1,
        max_length=64,
        pattern=PRINTABLE,
    )
    issued_at: AwareDatetime = Field(description="When it was issued.", examples=["2026-12-05T09:00:00Z"])

    @model_validator(mode="after")
    def _seek_has_a_group_and_offsets(self) -> ControlIssued:
        if self.command == "seek" and (not self.group or not self.offsets):
            raise ValueError("a seek names its group and at least one offset")
        if self.command != "seek" and self.offsets:
            raise ValueError(f"a {self.command} names no offsets")
        return self
