"""Writes signing-v1.json, the wire format v1 test vectors, straight from docs/wire-format.md.

Only the topic names come from eventfleet."""

# Run `.venv/bin/python contracts/vectors/generate.py` to rewrite the file, `--check` to compare it byte for byte.
# Deliberately independent of `contracts`: a second implementation of the spec, so the unit tests that run these
# vectors through `contracts` compare two implementations, not one with itself. It takes only the topics from the
# registry (the one place that names them) and signs with `cryptography` directly.

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.events import OrderPlaced, PaymentAuthorized, PaymentDeclined
from contracts.registry import REGISTRY

OUTPUT = Path("contracts") / "vectors" / "signing-v1.json"  # the checkout's, from the working directory (top folder)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
WINDOW_MS = 300_000
ORDERS, AUTHORIZED, DECLINED = (REGISTRY.of(model).name for model in (OrderPlaced, PaymentAuthorized, PaymentDeclined))
MAX_BYTES = REGISTRY.named(ORDERS).max_bytes


@dataclass(frozen=True)
class Key:
    """A TEST-ONLY key: its private half is published in the vectors, so nothing may ever trust it."""

    kid: str
    alg: str
    secret: bytes  # Ed25519: the 32-byte private seed; HMAC-SHA256: the shared secret
    owner: str
    topics: tuple[str, ...]
    not_before: str | None = None
    not_after: str | None = None

    def sign(self, data: bytes) -> str:
        if self.alg == "ed25519":
            return b64url(Ed25519PrivateKey.from_private_bytes(self.secret).sign(data))
        return b64url(hmac.new(self.secret, data, hashlib.sha256).digest())

    def public_raw(self) -> bytes:
        return (
            Ed25519PrivateKey.from_private_bytes(self.secret)
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def public_pem(self) -> str:
        return (
            Ed25519PrivateKey.from_private_bytes(self.secret)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )


# The Ed25519 seeds are those of RFC 8032, section 7.1, tests 1 and 2,
# so any Ed25519 library can be checked on them first.
STOREFRONT = Key(
    "vectors-storefront-ed25519",
    "ed25519",
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
    "storefront",
    (ORDERS,),
    not_before="2026-01-01T00:00:00Z",
)
PAYMENTS = Key(
    "vectors-payments-ed25519",
    "ed25519",
    bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
    "payments",
    (AUTHORIZED, DECLINED),
)
PARTNER = Key(
    "vectors-partner-hmac",
    "hmac-sha256",
    b"eventfleet-test-only-hmac-secret",
    "partner",
    (ORDERS,),
    not_after="2027-01-01T00:00:00Z",
)
KEYS = (STOREFRONT, PAYMENTS, PARTNER)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uuid7(moment: datetime, seed: str) -> str:
    """A UUIDv7 (RFC 9562) whose time is `moment` and whose random bits come from `seed`, so it never changes."""
    value = millis(moment) << 80 | int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def compact(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def an_order(order_id: str, customer_id: str = "cus-1042", *, pretty: bool = False) -> bytes:
    order = {
        "order_id": order_id,
        "customer_id": customer_id,
        "items": [{"sku": "SKU-TEA-001", "quantity": 2, "unit_price_cents": 1250}],
        "currency": "EUR",
        "total_cents": 2500,
        "placed_at": "2026-11-24T16:00:00Z",
    }
    return json.dumps(order, indent=2, ensure_ascii=False).encode("utf-8") if pretty else compact(order)


def a_payment(order_id: str) -> bytes:
    return compact(
        {
            "order_id": order_id,
            "customer_id": "cus-1042",
            "payment_id": f"pay-{order_id}",
            "amount_cents": 2500,
            "currency": "EUR",
            "authorized_at": "2026-11-24T16:00:01Z",
        }
    )


def signing_input(keyid: str, topic: str, key: str, headers: dict[str, str], value: bytes) -> bytes:
    lines = (
        "eventfleet-sig-v1",
        keyid,
        topic,
        key,
        headers["ce_id"],
        headers["ce_type"],
        headers["ce_source"],
        headers["ce_time"],
        headers["ce_correlationid"],
        headers.get("ce_causationid", ""),
        hashlib.sha256(value).hexdigest(),
    )
    return "\n".join(lines).encode("utf-8")


@dataclass(frozen=True)
class Case:
    """One record as a consumer receives it: topic, key and value bytes, headers in order,
    and the broker's timestamp."""

    name: str
    description: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    def header(self, name: str) -> str:
        return dict(self.headers)[name].decode("utf-8")

    def but(self, name: str, description: str, **changes) -> Case:
        return replace(self, name=name, description=description, **changes)

    def with_header(self, name: str, text: str | bytes) -> tuple[tuple[str, bytes], ...]:
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        return tuple((n, raw if n == name else v) for n, v in self.headers)

    def without_header(self, name: str) -> tuple[tuple[str, bytes], ...]:
        return tuple((n, v) for n, v in self.headers if n != name)

    def plus_header(self, name: str, text: str) -> tuple[tuple[str, bytes], ...]:
        return (*self.headers, (name, text.encode("utf-8")))


def signed(
    name: str,
    description: str,
    *,
    topic: str,
    key: str,
    value: bytes,
    signer: Key,
    source: str,
    at: datetime,
    received_after_ms: int = 250,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    time_text: str | None = None,
    sign_with: Key | None = None,
) -> Case:
    """A record signed as a publisher signs it; `sign_with` signs under `signer`'s key id with another key's secret."""
    event_id = uuid7(at, name)
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": source,
        "ce_type": f"dev.eventfleet.{topic}",
        "ce_time": time_text or rfc3339(at),
        "ce_dataschema": f"urn:eventfleet:schema:{topic}",
        "ce_subject": key,
        "ce_correlationid": correlation_id or event_id,
        **({"ce_causationid": causation_id} if causation_id else {}),
        "content-type": "application/json",
        "ce_keyid": signer.kid,
    }
    headers["ce_signature"] = (sign_with or signer).sign(signing_input(signer.kid, topic, key, headers, value))
    raw = tuple((n, v.encode("utf-8")) for n, v in headers.items())
    return Case(name, description, topic, key.encode("utf-8"), value, raw, millis(at) + received_after_ms)


def an_order_record(name: str, description: str, order_id: str, *, value: bytes | None = None, **options: Any) -> Case:
    """An OrderPlaced record from the storefront key at 16:00:00.123456Z, unless told otherwise;
    `value` is signed as given."""
    defaults: dict[str, Any] = {
        "signer": STOREFRONT,
        "source": "/eventfleet/storefront",
        "at": T0 + timedelta(microseconds=123_456),
    }
    return signed(
        name,
        description,
        topic=ORDERS,
        key=order_id,
        value=an_order(order_id) if value is None else value,
        **(defaults | options),
    )


def valid_cases() -> list[Case]:
    root = an_order_record(
        "order-ed25519-root",
        "A root event (no ce_causationid; its flow is named after itself), signed with Ed25519.",
        "ord-7f3a9c",
        received_after_ms=333,
    )
    partner = an_order_record(
        "order-hmac-named-flow",
        "An HMAC-SHA256 key; the publisher named the flow; the broker's clock is 2 s behind ce_time.",
        "ord-partner-0001",
        signer=PARTNER,
        source="/eventfleet/partner",
        at=T0 + timedelta(seconds=1),
        correlation_id="checkout-42",
        received_after_ms=-2000,
    )
    reordered = partner.but(
        "order-hmac-reordered-with-foreign-headers",
        "The record above with its headers in reverse order, plus headers that are not ours "
        "(one of them twice): still valid.",
        headers=(
            ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            *reversed(partner.headers),
            ("traceparent", b"repeated"),
        ),
    )
    caused = signed(
        "payment-caused-by-order",
        "An event caused by order-ed25519-root: same flow, and ce_causationid is the cause's ce_id.",
        topic=AUTHORIZED,
        key="ord-7f3a9c",
        value=a_payment("ord-7f3a9c"),
        signer=PAYMENTS,
        source="/eventfleet/payments",
        at=T0 + timedelta(seconds=2),
        correlation_id=root.header("ce_correlationid"),
        causation_id=root.header("ce_id"),
    )
    non_ascii = an_order_record(
        "order-non-ascii-key-and-indented-value",
        "A non-ASCII key, and a value of indented JSON with non-ASCII text: the signature covers the value's raw "
        "bytes, never a re-serialization of them.",
        "ord-zoë-ß-1",
        value=an_order("ord-zoë-ß-1", "cus-Zoë", pretty=True),
        at=T0 + timedelta(seconds=3),
    )
    edge = an_order_record(
        "order-at-the-window-edge",
        "The broker's timestamp is exactly 300 s after ce_time: still fresh (the bound is inclusive).",
        "ord-edge-0001",
        at=T0 + timedelta(minutes=5),
        received_after_ms=WINDOW_MS,
    )
    return [root, partner, reordered, caused, non_ascii, edge]


def invalid_cases(valid: dict[str, Case]) -> list[tuple[Case, str]]:
    """Each case breaks exactly one rule of a valid record, so exactly one reason applies."""
    root, partner = valid["order-ed25519-root"], valid["order-hmac-named-flow"]
    caused, edge = valid["payment-caused-by-order"], valid["order-at-the-window-edge"]
    value = root.value or b""
    at = value.index(b"2500")  # total_cents
    tampered = value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]
    padded = an_order("ord-big-0001") + b" " * (MAX_BYTES + 1 - len(an_order("ord-big-0001")))
    return [
        (
            an_order_record(
                "oversize",
                f"Correctly signed, but the value is {MAX_BYTES + 1} bytes (JSON padded with spaces): one over "
                "the topic's limit.",
                "ord-big-0001",
                value=padded,
            ),
            "oversize",
        ),
        (
            root.but("missing-ce_signature", "ce_signature removed.", headers=root.without_header("ce_signature")),
            "missing_header",
        ),
        (
            root.but("missing-ce_dataschema", "ce_dataschema removed.", headers=root.without_header("ce_dataschema")),
            "missing_header",
        ),
        (
            root.but(
                "duplicated-ce_id",
                "ce_id appears twice, with the same value.",
                headers=root.plus_header("ce_id", root.header("ce_id")),
            ),
            "duplicate_header",
        ),
        (
            root.but(
                "duplicated-ce_keyid",
                "A second ce_keyid, naming another trusted key.",
                headers=root.plus_header("ce_keyid", PARTNER.kid),
            ),
            "duplicate_header",
        ),
        (
            root.but("non-utf8-header", "ce_source is not UTF-8.", headers=root.with_header("ce_source", b"\xff\xfe")),
            "invalid_header",
        ),
        (
            root.but(
                "wrong-ce_specversion", "ce_specversion is 0.3.", headers=root.with_header("ce_specversion", "0.3")
            ),
            "invalid_header",
        ),
        (
            root.but(
                "content-type-with-parameters",
                "content-type must be exactly application/json, without parameters.",
                headers=root.with_header("content-type", "application/json; charset=utf-8"),
            ),
            "invalid_header",
        ),
        (
            root.but(
                "changed-ce_type",
                "ce_type names another topic's type.",
                headers=root.with_header("ce_type", f"dev.eventfleet.{DECLINED}"),
            ),
            "wrong_type",
        ),
        (root.but("no-record-key", "The record has no key.", key=None), "invalid_key"),
        (root.but("non-utf8-record-key", "The record key is not UTF-8.", key=b"ord-\xff"), "invalid_key"),
        (
            root.but("record-key-is-not-ce_subject", "The record key changed; ce_subject did not.", key=b"ord-7f3a9d"),
            "invalid_header",
        ),
        (
            root.but(
                "unknown-ce_keyid",
                "ce_keyid names a key the keyring does not have.",
                headers=root.with_header("ce_keyid", "vectors-stranger"),
            ),
            "unknown_key",
        ),
        (
            signed(
                "key-not-allowed-for-topic",
                "Correctly signed by the storefront key, on a topic only the payments key may sign.",
                topic=AUTHORIZED,
                key="ord-7f3a9c",
                value=a_payment("ord-7f3a9c"),
                signer=STOREFRONT,
                source="/eventfleet/storefront",
                at=T0,
            ),
            "key_not_allowed",
        ),
        (
            an_order_record(
                "unparsable-ce_time",
                "Correctly signed, but ce_time is not an RFC 3339 time.",
                "ord-time-0001",
                time_text="yesterday at four",
            ),
            "invalid_header",
        ),
        (
            an_order_record(
                "key-not-yet-valid",
                "Correctly signed, at a ce_time before the key's not_before (2026-01-01T00:00:00Z).",
                "ord-early-0001",
                at=datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
            ),
            "key_expired",
        ),
        (
            an_order_record(
                "key-expired",
                "Correctly signed with the HMAC key, at a ce_time after its not_after (2027-01-01T00:00:00Z).",
                "ord-late-0001",
                signer=PARTNER,
                source="/eventfleet/partner",
                at=datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC),
            ),
            "key_expired",
        ),
        (
            root.but(
                "flipped-value-bit", "One bit of the value flipped: total_cents 2500 became 3500.", value=tampered
            ),
            "bad_signature",
        ),
        (
            root.but(
                "changed-ce_id",
                "ce_id changed in its last digit.",
                headers=root.with_header("ce_id", root.header("ce_id")[:-1] + "0"),
            ),
            "bad_signature",
        ),
        (
            root.but(
                "changed-ce_source", "ce_source changed.", headers=root.with_header("ce_source", "/eventfleet/payments")
            ),
            "bad_signature",
        ),
        (
            root.but(
                "changed-ce_time",
                "ce_time moved by 1 µs (still fresh).",
                headers=root.with_header("ce_time", root.header("ce_time").replace(".123456Z", ".123457Z")),
            ),
            "bad_signature",
        ),
        (
            root.but(
                "changed-ce_correlationid",
                "ce_correlationid changed.",
                headers=root.with_header("ce_correlationid", "someone-elses-flow"),
            ),
            "bad_signature",
        ),
        (
            root.but(
                "added-ce_causationid",
                "A ce_causationid added to a root event.",
                headers=root.plus_header("ce_causationid", "forged-cause"),
            ),
            "bad_signature",
        ),
        (
            caused.but(
                "removed-ce_causationid",
                "ce_causationid removed from a caused event.",
                headers=caused.without_header("ce_causationid"),
            ),
            "bad_signature",
        ),
        (
            root.but(
                "changed-record-key-and-ce_subject",
                "The record key and ce_subject both changed, consistently.",
                key=b"ord-7f3a9d",
                headers=root.with_header("ce_subject", "ord-7f3a9d"),
            ),
            "bad_signature",
        ),
        (
            root.but(
                "ce_keyid-of-another-trusted-key",
                "ce_keyid names the HMAC key, which may sign this topic too.",
                headers=root.with_header("ce_keyid", PARTNER.kid),
            ),
            "bad_signature",
        ),
        (
            an_order_record(
                "hmac-signature-under-ed25519-kid",
                "An HMAC-SHA256 signature (made with the HMAC key's secret) under the "
                "Ed25519 key's id: the algorithm is the keyring's for that id, never the sender's choice.",
                "ord-alg-0001",
                sign_with=PARTNER,
            ),
            "bad_signature",
        ),
        (
            an_order_record(
                "ed25519-signature-under-hmac-kid",
                "An Ed25519 signature (made with the storefront seed) under the HMAC key's id.",
                "ord-alg-0002",
                signer=PARTNER,
                source="/eventfleet/partner",
                sign_with=STOREFRONT,
            ),
            "bad_signature",
        ),
        (
            edge.but(
                "stale-after", "The broker's timestamp is 300.001 s after ce_time.", timestamp_ms=edge.timestamp_ms + 1
            ),
            "stale",
        ),
        (
            partner.but(
                "stale-before",
                "The broker's timestamp is 10 minutes before ce_time.",
                timestamp_ms=partner.timestamp_ms - 600_000,
            ),
            "stale",
        ),
        (
            an_order_record(
                "line-feed-in-record-key",
                "Correctly signed, but the record key (and ce_subject) holds a line feed, which "
                "could shift content between signed fields.",
                "ord-lf\nX",
            ),
            "invalid_header",
        ),
        (
            root.but(
                "padded-ce_signature",
                "The right signature with base64 padding added: one text per signature, no padding.",
                headers=root.with_header("ce_signature", root.header("ce_signature") + "=="),
            ),
            "bad_signature",
        ),
        (
            root.but(
                "wrong-ce_dataschema",
                "ce_dataschema names another topic's schema (it is not signed, so it is checked).",
                headers=root.with_header("ce_dataschema", f"urn:eventfleet:schema:{DECLINED}"),
            ),
            "invalid_header",
        ),
        (
            root.but(
                "empty-ce_causationid",
                "An empty ce_causationid added to a root event: a root event leaves the header out.",
                headers=root.plus_header("ce_causationid", ""),
            ),
            "invalid_header",
        ),
        (
            an_order_record(
                "ce_time-with-an-offset",
                "Correctly signed, but ce_time carries +01:00: ce_time is written in UTC with Z.",
                "ord-time-0002",
                time_text="2026-11-24T17:00:00.123456+01:00",
            ),
            "invalid_header",
        ),
        (
            an_order_record(
                "record-key-is-not-the-values-key",
                "Correctly signed, but the record key (and ce_subject) is not the value's order_id.",
                "ord-other-0001",
                value=an_order("ord-7f3a9c"),
            ),
            "invalid_key",
        ),
        (
            an_order_record(
                "not-json", "Correctly signed, but the value is not JSON.", "ord-json-0001", value=b"{not json"
            ),
            "invalid_payload",
        ),
        (
            an_order_record(
                "schema-invalid",
                "Correctly signed JSON that is not a valid OrderPlaced: fields missing, no items, an unknown field.",
                "ord-schema-0001",
                value=b'{"order_id":"ord-schema-0001","items":[],"colour":"red"}',
            ),
            "invalid_payload",
        ),
    ]


def as_text(data: bytes | None) -> str | dict | None:
    """Bytes as they go in the file: UTF-8 text, or {"base64": ...} when they are not UTF-8; None stays null."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def record(case: Case) -> dict:
    return {
        "name": case.name,
        "description": case.description,
        "topic": case.topic,
        "key": as_text(case.key),
        "value": as_text(case.value),
        "headers": [[name, as_text(raw)] for name, raw in case.headers],
        "timestamp_ms": case.timestamp_ms,
    }


def valid_record(case: Case) -> dict:
    headers = {name: raw.decode("utf-8") for name, raw in case.headers}
    data = signing_input(headers["ce_keyid"], case.topic, (case.key or b"").decode("utf-8"), headers, case.value or b"")
    return record(case) | {
        "value_sha256": hashlib.sha256(case.value or b"").hexdigest(),
        "signing_input": data.decode("utf-8"),
        "signature": headers["ce_signature"],
    }


def key_material(key: Key) -> dict:
    entry = {"kid": key.kid, "alg": key.alg, "test_only": True, "secret_hex": key.secret.hex()}
    if key.alg == "ed25519":
        entry["public_key_hex"] = key.public_raw().hex()
    entry["private_key_file"] = {
        "kid": key.kid,
        "alg": key.alg,
        "secret": b64url(key.secret),
        "not_before": key.not_before,
    }
    return entry


def keyring() -> dict:
    """The verifier's keyring, in the format of `$FLEET_KEYS_DIR/keyring.json`."""
    entries = []
    for key in sorted(KEYS, key=lambda k: k.kid):
        entry: dict = {"kid": key.kid, "alg": key.alg, "owner": key.owner, "topics": sorted(key.topics)}
        entry |= {"public_key": key.public_pem()} if key.alg == "ed25519" else {"secret": b64url(key.secret)}
        entries.append(entry | {"not_before": key.not_before, "not_after": key.not_after})
    return {"version": 1, "keys": entries}


def render() -> str:
    """The whole vectors file, exactly as committed."""
    valid = valid_cases()
    document = {
        "name": "eventfleet wire format v1: signing and verification test vectors",
        "spec": "docs/wire-format.md",
        "generated_by": "contracts/vectors/generate.py",
        "warning": "TEST-ONLY KEYS: their private halves are published here. Never trust them outside tests.",
        "encoding": 'A key, value or header value is a JSON string of its UTF-8 text, or {"base64": standard base64} '
        "when its bytes are not UTF-8. A null key is a record without a key. "
        "headers keep their order and their repeats.",
        "window_s": WINDOW_MS // 1000,
        "max_bytes": MAX_BYTES,
        "keys": [key_material(key) for key in KEYS],
        "keyring": keyring(),
        "valid": [valid_record(case) for case in valid],
        "invalid": [record(case) | {"reason": reason} for case, reason in invalid_cases({c.name: c for c in valid})],
    }
    return dump(document) + "\n"


def dump(data, depth: int = 0) -> str:
    """JSON indented by two spaces, except that a list or object of up to 100 characters stays on one line."""
    inline = json.dumps(data, ensure_ascii=False)
    if not isinstance(data, (dict, list)) or len(inline) <= 100:
        return inline
    inner, outer = "  " * (depth + 1), "  " * depth
    if isinstance(data, dict):
        lines = [
            f"{inner}{json.dumps(name, ensure_ascii=False)}: {dump(item, depth + 1)}" for name, item in data.items()
        ]
        return "{\n" + ",\n".join(lines) + f"\n{outer}}}"
    return "[\n" + ",\n".join(f"{inner}{dump(item, depth + 1)}" for item in data) + f"\n{outer}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    text = render().encode("utf-8")
    if parser.parse_args().check:
        if OUTPUT.read_bytes() != text:
            print(f"{OUTPUT} is not what generate.py writes; run it without --check", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_bytes(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
