"""Wire format v1 test vectors: the contracts code signs and verifies every case exactly as contracts/vectors/signing-v1.json says."""

import base64
import json
import runpy
from pathlib import Path

import pytest

from contracts import Envelope, Keyring, PrivateKey, Rejected, signing_input, verify, verify_record

VECTORS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "vectors"
VECTORS = json.loads((VECTORS_DIR / "signing-v1.json").read_text(encoding="utf-8"))
KEYRING = Keyring.from_json(VECTORS["keyring"])
SIGNERS = {entry["kid"]: PrivateKey.from_json(entry["private_key_file"]) for entry in VECTORS["keys"]}
REASONS = {
    "oversize", "missing_header", "duplicate_header", "invalid_header", "wrong_type", "invalid_key", "unknown_key",
    "key_not_allowed", "key_expired", "bad_signature", "stale", "invalid_payload",
}


def _bytes(field) -> bytes | None:
    """A key, value or header value from the file: UTF-8 text, {"base64": ...}, or null."""
    if field is None or isinstance(field, str):
        return None if field is None else field.encode("utf-8")
    return base64.b64decode(field["base64"])


def _record(case) -> tuple:
    """The case as a consumer receives it: (topic, key, value, headers, timestamp_ms)."""
    headers = [(name, _bytes(text)) for name, text in case["headers"]]
    return case["topic"], _bytes(case["key"]), _bytes(case["value"]), headers, case["timestamp_ms"]


def _verify(case):
    topic, key, value, headers, timestamp_ms = _record(case)
    return verify(topic, key, value, headers, timestamp_ms, KEYRING, window_s=VECTORS["window_s"])


def _named(cases):
    return pytest.mark.parametrize("case", cases, ids=[c["name"] for c in cases])


@_named(VECTORS["valid"])
def test_a_valid_case_signs_to_exactly_its_signing_input_and_signature(case):
    topic, key, value, raw_headers, _ = _record(case)
    headers = {name: raw.decode("utf-8") for name, raw in raw_headers}
    data = signing_input(
        keyid=headers["ce_keyid"], topic=topic, key=key.decode("utf-8"), event_id=headers["ce_id"], event_type=headers["ce_type"],
        source=headers["ce_source"], time=headers["ce_time"], correlation_id=headers["ce_correlationid"],
        causation_id=headers.get("ce_causationid"), value=value,
    )
    assert data.decode("utf-8") == case["signing_input"]
    assert Envelope.from_headers(raw_headers).signing_input(topic, key.decode("utf-8"), value) == data
    assert SIGNERS[headers["ce_keyid"]].sign(data) == case["signature"] == headers["ce_signature"]


@_named(VECTORS["valid"])
def test_a_valid_case_is_accepted_and_its_event_is_its_value(case):
    topic, key, value, headers, timestamp_ms = _record(case)
    envelope = verify_record(topic, key, value, headers, timestamp_ms, KEYRING, window_s=VECTORS["window_s"])
    assert envelope == Envelope.from_headers(headers)
    assert _verify(case)[1].model_dump(mode="json") == json.loads(value)


@_named(VECTORS["invalid"])
def test_an_invalid_case_is_refused_with_exactly_its_reason(case):
    with pytest.raises(Rejected) as refused:
        _verify(case)
    assert refused.value.reason == case["reason"], refused.value.detail


def test_every_reason_code_has_an_invalid_case():
    assert {case["reason"] for case in VECTORS["invalid"]} == REASONS


def test_every_case_name_is_unique():
    names = [case["name"] for case in VECTORS["valid"] + VECTORS["invalid"]]
    assert len(names) == len(set(names))


def test_the_keyring_section_is_in_the_format_of_the_fleets_keyring_file():
    assert KEYRING.to_json() == VECTORS["keyring"]


def test_each_test_only_private_key_is_the_one_its_keyring_entry_trusts():
    for kid, signer in SIGNERS.items():
        assert signer.public([]).material == KEYRING.get(kid).material, kid
    for entry in VECTORS["keys"]:
        assert entry["test_only"] is True
        assert bytes.fromhex(entry["secret_hex"]) == SIGNERS[entry["kid"]].secret
        if "public_key_hex" in entry:
            assert bytes.fromhex(entry["public_key_hex"]) == KEYRING.get(entry["kid"]).material


def test_the_committed_file_is_byte_for_byte_what_generate_py_writes():
    render = runpy.run_path(str(VECTORS_DIR / "generate.py"))["render"]
    assert render().encode("utf-8") == (VECTORS_DIR / "signing-v1.json").read_bytes()
