"""The benchmark's events: ~500-byte JSON records with a key, the same for every case and run."""

from __future__ import annotations

import json

EVENT_BYTES = 500  # the size of one value, about a fleet event's JSON without its headers


def event_value(seq: int) -> bytes:
    """Event `seq` as JSON, padded to exactly EVENT_BYTES: fields a pydantic model can validate."""
    body = {"event_id": f"bench-{seq:09d}", "seq": seq, "order_id": f"ORD-{seq % 997:06d}", "amount_cents": 1000 + seq % 5000,
            "currency": "EUR", "note": ""}
    pad = EVENT_BYTES - len(json.dumps(body, separators=(",", ":")).encode())
    if pad < 0:
        raise ValueError("the event's fields exceed EVENT_BYTES")
    body["note"] = "x" * pad
    return json.dumps(body, separators=(",", ":")).encode()


def event_key(seq: int) -> bytes:
    """The record key: an order id, so the events spread over the partitions as the fleet's do."""
    return f"ORD-{seq % 997:06d}".encode()
