"""Property tests: a correctly signed record is always accepted, and no mutation of what protects it ever is."""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts import DEFAULT_WINDOW_S, ED25519, HMAC_SHA256, REGISTRY, Keyring, PrivateKey, Rejected, encode, source_of, verify_record
from tests.support import an_authorization, an_order

# Keys of this module's own, never the run's dev keys: the properties must not depend on what is on disk.
SIGNERS = (PrivateKey("properties-ed25519", ED25519, bytes(range(32))), PrivateKey("properties-hmac", HMAC_SHA256, bytes(range(32, 64))))
KEYRING = Keyring.of(signer.public([topic.name for topic in REGISTRY]) for signer in SIGNERS)
WINDOW_MS = int(DEFAULT_WINDOW_S * 1000)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
START = datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)
# Every envelope header but two: ce_dataschema is neither signed nor checked for its value, and ce_signature is the
# signature itself (docs/wire-format.md). Dropping or duplicating any header, those two included, must still be refused.
GUARDED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "ce_correlationid", "ce_causationid",
           "content-type", "ce_keyid")


@dataclass(frozen=True)
class Raw:
    """A record as a consumer receives it; `ce_ms` is its ce_time in milliseconds, for moving the broker's timestamp."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    ce_ms: int

    def verify(self):
        return verify_record(self.topic, self.key, self.value, list(self.headers), self.timestamp_ms, KEYRING)

    def wire(self) -> tuple:
        return self.key, self.value, self.headers, self.timestamp_ms


def _flip(data: bytes, at: int, bit: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1 :]


def _pick(names: list[str], choice: int) -> str:
    return names[choice % len(names)]


def flip_value(raw: Raw, at: int, bit: int, _: int) -> Raw:
    return replace(raw, value=_flip(raw.value, at, bit))


def flip_key(raw: Raw, at: int, bit: int, _: int) -> Raw:
    return replace(raw, key=_flip(raw.key, at, bit))


def flip_header(raw: Raw, at: int, bit: int, choice: int) -> Raw:
    name = _pick([n for n, _ in raw.headers if n in GUARDED], choice)
    return replace(raw, headers=tuple((n, _flip(v, at, bit) if n == name else v) for n, v in raw.headers))


def drop_header(raw: Raw, at: int, bit: int, choice: int) -> Raw:
    name = _pick([n for n, _ in raw.headers], choice)
    return replace(raw, headers=tuple((n, v) for n, v in raw.headers if n != name))


def duplicate_header(raw: Raw, at: int, bit: int, choice: int) -> Raw:
    copy = raw.headers[choice % len(raw.headers)]
    return replace(raw, headers=raw.headers + (copy,))


def move_timestamp_out_of_the_window(raw: Raw, at: int, bit: int, choice: int) -> Raw:
    beyond = WINDOW_MS + 1 + at % 10**9
    return replace(raw, timestamp_ms=raw.ce_ms + (beyond if bit % 2 else -beyond))


MUTATIONS = (flip_value, flip_key, flip_header, drop_header, duplicate_header, move_timestamp_out_of_the_window)

# Ids are printable: the models refuse control characters (a line feed would shift signed fields).
texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64)
lines = st.lists(st.tuples(st.text(min_size=1, max_size=64), st.integers(1, 10_000), st.integers(0, 10**6)), min_size=1, max_size=5)


@st.composite
def signed_records(draw) -> Raw:
    """A record signed as a publisher signs it: a root order or a payment it caused, Ed25519 or HMAC, received within the window."""
    order = an_order(order_id=draw(texts), customer_id=draw(texts), lines=tuple(draw(lines)))
    signer = draw(st.sampled_from(SIGNERS))
    moment = START + timedelta(milliseconds=draw(st.integers(0, 10**11)))
    root = encode(order, source=source_of("storefront"), signer=signer, correlation_id=draw(st.none() | texts), now=moment)
    caused = encode(an_authorization(order), source=source_of("payments"), signer=signer, cause=root.envelope, now=moment)
    record = draw(st.sampled_from((root, caused)))
    ce_ms = (moment - EPOCH) // timedelta(milliseconds=1)
    timestamp_ms = ce_ms + draw(st.integers(-WINDOW_MS, WINDOW_MS))
    return Raw(record.topic, record.key.encode("utf-8"), record.value, tuple(record.raw_headers()), timestamp_ms, ce_ms)


mutations = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 2**16), st.integers(0, 7), st.integers(0, 63))


@settings(max_examples=200, deadline=None)
@given(signed_records(), st.permutations(range(12)), st.lists(st.tuples(st.sampled_from(["traceparent", "x-other"]), st.binary(max_size=8))))
def test_a_correctly_signed_record_is_accepted_whatever_the_header_order_and_foreign_headers(raw, order, foreign):
    shuffled = tuple(raw.headers[i] for i in order if i < len(raw.headers))
    assert raw.verify().signature == dict(raw.headers)["ce_signature"].decode()
    assert replace(raw, headers=shuffled + tuple(foreign)).verify() == raw.verify()


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda mutate: mutate.__name__)
@settings(max_examples=200, deadline=None)
@given(raw=signed_records(), where=st.tuples(st.integers(0, 2**16), st.integers(0, 7), st.integers(0, 63)))
def test_a_signed_record_is_refused_after_any_one_mutation(mutate, raw, where):
    mutated = mutate(raw, *where)
    assume(mutated.wire() != raw.wire())
    with pytest.raises(Rejected):
        mutated.verify()


@settings(max_examples=200, deadline=None)
@given(signed_records(), st.lists(mutations, min_size=2, max_size=4))
def test_a_signed_record_is_refused_after_several_mutations_at_once(raw, changes):
    mutated = raw
    for mutate, at, bit, choice in changes:
        mutated = mutate(mutated, at, bit, choice)
    assume(mutated.wire() != raw.wire())
    with pytest.raises(Rejected):
        mutated.verify()
