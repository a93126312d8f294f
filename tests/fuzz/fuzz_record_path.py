"""Coverage-guided fuzzing (atheris, libFuzzer) of what a worker does to a record before its handler: verify, then decode.

Each input is a list of mutations that the fuzzer picks and mutates. They are applied to a correctly signed order:
- a value that is truncated, extended, replaced, or deeply nested, or that carries huge integers;
- headers that are dropped, duplicated, non-UTF-8, replaced with arbitrary bytes, or grown near the size limit;
- a changed key.
Sometimes the result is signed again, so the payload checks are reached too.

The oracle:
- Every record either passes or is refused with `Rejected` and a known reason. Any other exception is a crash, and
  libFuzzer stops and saves the input.
- A record that passes is byte for byte one that a trusted key signed (its headers in any order). Nothing invalid
  is accepted.
- `-rss_limit_mb` bounds memory.

Run: `python tests/fuzz/fuzz_record_path.py -runs=20000 -rss_limit_mb=1024` (tests/unit/test_fuzz_atheris.py does).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import atheris

with atheris.instrument_imports():  # coverage of the code under test guides the mutations
    from contracts import REGISTRY, Rejected, decode_keyed_value, encode, sign, source_of, verify_record
    from contracts.envelope import Record

from fleet.runtime.keys import KeyStore, init_keys
from tests.support import an_order

REASONS = {"oversize", "missing_header", "invalid_header", "duplicate_header", "wrong_type", "invalid_key", "unknown_key",
           "key_not_allowed", "key_expired", "bad_signature", "stale", "invalid_payload"}
TOPIC = REGISTRY.resolve("orders.placed.v1")
NEAR_LIMIT = 1024 * 1024 - 64  # a header value near the broker's default message.max.bytes

_keys = Path(tempfile.mkdtemp(prefix="eventfleet-fuzz-keys-"))
init_keys(_keys, ["payments", "storefront"])
KEYRING = KeyStore.for_signer(_keys, "payments").keyring()
SIGNER = KeyStore.for_signer(_keys, "storefront").signer()
BASE = encode(an_order(), source=source_of("storefront"), signer=SIGNER)


def _signed(record: Record) -> tuple:
    return _as_signed(record.key.encode(), record.value, record.raw_headers())


def _as_signed(key: bytes | None, value: bytes | None, headers) -> tuple:
    # Headers in any order: the signature covers each header by name, and a record's meaning does not depend on their
    # order (a duplicated one is refused). A reordering of a signed record is that record, not a forgery.
    return key, value, tuple(sorted(headers))


def _mutate(data: atheris.FuzzedDataProvider, signed: set) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    key, value, headers = BASE.key.encode(), BASE.value, list(BASE.raw_headers())
    for _ in range(data.ConsumeIntInRange(1, 4)):
        action = data.ConsumeIntInRange(0, 11)
        if action == 0 and value:
            value = value[: data.ConsumeIntInRange(0, len(value))]
        elif action == 1:
            value = (value or b"") + data.ConsumeBytes(data.ConsumeIntInRange(0, 40_000))
        elif action == 2:
            value = data.ConsumeBytes(data.ConsumeIntInRange(0, 4096))
        elif action == 3:
            depth = data.ConsumeIntInRange(1, 20_000)
            value = b'{"order_id": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
        elif action == 4:
            # Spliced as text: Python itself refuses to build an int of over 4300 digits from a string.
            digits = b"9" * data.ConsumeIntInRange(1, 20_000)
            value = re.sub(rb'"quantity":\s*\d+', lambda _: b'"quantity":' + digits, BASE.value, count=1)
        elif action == 5 and headers:
            headers.pop(data.ConsumeIntInRange(0, len(headers) - 1))
        elif action == 6 and headers:
            name, raw = headers[data.ConsumeIntInRange(0, len(headers) - 1)]
            copy = raw if data.ConsumeBool() else data.ConsumeBytes(64)
            headers.insert(data.ConsumeIntInRange(0, len(headers)), (name, copy))
        elif action == 7 and headers:
            at = data.ConsumeIntInRange(0, len(headers) - 1)
            headers[at] = (headers[at][0], data.ConsumeBytes(data.ConsumeIntInRange(0, 256)))
        elif action == 8 and headers:
            at = data.ConsumeIntInRange(0, len(headers) - 1)
            headers[at] = (headers[at][0], b"\xff\xfe" + data.ConsumeBytes(8))  # never valid UTF-8
        elif action == 9 and headers:
            at = data.ConsumeIntInRange(0, len(headers) - 1)
            headers[at] = (headers[at][0], b"x" * NEAR_LIMIT)
        elif action == 10:
            key = data.ConsumeBytes(data.ConsumeIntInRange(0, 64)) if data.ConsumeBool() else None
        elif action == 11 and value is not None:
            # Signed again: the envelope checks pass, so only the payload checks stand between it and a handler.
            resigned = sign(replace(BASE, value=value), SIGNER)
            signed.add(_signed(resigned))
            key, value, headers = resigned.key.encode(), resigned.value, list(resigned.raw_headers())
    return key, value, headers


if os.environ.get("EVENTFLEET_FUZZ_SELF_CHECK") == "accept-anything":
    # The oracle's own test: with checks that accept anything, the fuzzer must find an accepted forgery at once.
    def verify_record(*args, **kwargs):  # noqa: F811
        return None

    def decode_keyed_value(*args, **kwargs):  # noqa: F811
        return None


def test_one(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    signed = {_signed(BASE)}
    key, value, headers = _mutate(data, signed)
    try:
        verify_record(TOPIC.name, key, value, headers, int(time.time() * 1000), KEYRING)
        decode_keyed_value(TOPIC, key, value)
    except Rejected as refused:
        if refused.reason not in REASONS or not str(refused):
            raise AssertionError(f"refused without a known reason: {refused.reason!r} {refused!s:.200}") from None
        return
    if _as_signed(key, value, headers) not in signed:
        raise AssertionError(f"accepted a record no trusted key signed: key={key!r:.80} value={value!r:.200}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
