"""Signed records on the real broker: a correct record from a plain Kafka client is processed; every tampered,
foreign, stale or malformed one is refused with its reason, lands on the dead-letter topic, and the valid ones go on."""

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from contracts import OrderPlaced, PaymentAuthorized, PaymentDeclined, PrivateKey, Record, sign
from fleet.runtime.settings import KafkaSettings
from services.payments import PaymentsSettings
from services.payments import create_app as create_payments
from tests.support import RunningApps, TopicReader, a_record, an_order, produce_raw, signer_of, start_group_at_end, wait_until_committed

OUTCOMES = (PaymentAuthorized, PaymentDeclined)


def _raw(record: Record, *, key: bytes | None = None, value: bytes | None = None, headers=None):
    return record.topic, record.key.encode() if key is None else key, record.value if value is None else value, record.raw_headers() if headers is None else headers


def _with_header(record: Record, name: str, text: str):
    return _raw(record, headers=[(k, text.encode() if k == name else v) for k, v in record.raw_headers()])


def _next_microsecond(time_text: str) -> str:
    """The same time with its last digit changed: still fresh, never equal to the signed one."""
    return time_text[:-2] + str((int(time_text[-2]) + 1) % 10) + "Z"


def _changed_last_digit(text: str) -> str:
    """The same text with its last character changed, never equal to it (a UUID may already end in 0)."""
    return text[:-1] + ("1" if text.endswith("0") else "0")


def _flip(data: bytes, at: int = 5) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _signed_value(value: bytes, tag: str):
    """A correctly signed record whose value is `value`: only the payload check can refuse it."""
    record = a_record(an_order(order_id=f"ord-{tag}-{uuid.uuid4().hex[:8]}"))
    return sign(replace(record, value=value), signer_of("storefront"))


def poison_records() -> dict[str, tuple[tuple, str]]:
    """Each bad record by a name, with the reason it must be refused for."""
    def order(tag):
        return a_record(an_order(order_id=f"ord-{tag}-{uuid.uuid4().hex[:8]}"))

    flipped_value = order("flipped-value")
    stranger = PrivateKey.generate("stranger-1")
    cases = {
        "flipped byte in the value": (_raw(flipped_value, value=_flip(flipped_value.value)), "bad_signature"),
        "changed ce_id": (_with_header(r := order("ce-id"), "ce_id", _changed_last_digit(r.envelope.id)), "bad_signature"),
        "changed ce_source": (_with_header(order("ce-source"), "ce_source", "/eventfleet/payments"), "bad_signature"),
        "changed ce_correlationid": (_with_header(order("ce-corr"), "ce_correlationid", "someone-elses-flow"), "bad_signature"),
        "changed ce_time": (_with_header(r := order("ce-time"), "ce_time", _next_microsecond(r.envelope.time)), "bad_signature"),
        "added ce_causationid": (_raw(r := order("ce-cause"), headers=r.raw_headers() + [("ce_causationid", b"forged")]), "bad_signature"),
        "changed record key": (_raw(r := order("key"), key=r.key.encode() + b"x"), "invalid_header"),
        "changed ce_type": (_with_header(order("ce-type"), "ce_type", "dev.eventfleet.payments.declined.v1"), "wrong_type"),
        "unknown key id": (_raw(a_record(an_order(order_id=f"ord-stranger-{uuid.uuid4().hex[:8]}"), signer=stranger)), "unknown_key"),
        "key not allowed for the topic": (_raw(a_record(an_order(order_id=f"ord-payments-key-{uuid.uuid4().hex[:8]}"), signer=signer_of("payments"))), "key_not_allowed"),
        "stale ce_time": (_raw(a_record(an_order(order_id=f"ord-stale-{uuid.uuid4().hex[:8]}"), now=datetime.now(timezone.utc) - timedelta(minutes=10))), "stale"),
        "missing ce_signature": (_raw(r := order("no-sig"), headers=[(k, v) for k, v in r.raw_headers() if k != "ce_signature"]), "missing_header"),
        "duplicated ce_id": (_raw(r := order("dup-id"), headers=r.raw_headers() + [("ce_id", r.envelope.id.encode())]), "duplicate_header"),
        "header that is not UTF-8": (_raw(r := order("utf8"), headers=[(k, b"\xff\xfe" if k == "ce_source" else v) for k, v in r.raw_headers()]), "invalid_header"),
        "malformed JSON, correctly signed": (_raw(_signed_value(b"{not json", "json")), "invalid_payload"),
        "schema-invalid, correctly signed": (_raw(_signed_value(b'{"order_id": "x", "items": []}', "schema")), "invalid_payload"),
        "over the size limit": (_raw(r := order("oversize"), value=r.value + b" " * 16 * 1024), "oversize"),
    }
    return cases


def _payments(bootstrap, group_id):
    return create_payments(PaymentsSettings(group_id=group_id, kafka=KafkaSettings(bootstrap_servers=bootstrap)))


async def test_tampered_and_foreign_records_are_dead_lettered_with_their_reason_while_valid_ones_flow(kafka, group_id):
    await start_group_at_end(kafka, group_id, [OrderPlaced])
    valid = [a_record(an_order()) for _ in range(6)]
    poison = poison_records()
    interleaved = [_raw(valid[0])]
    for n, (raw, _) in enumerate(poison.values()):
        interleaved += [raw] + ([_raw(valid[1 + n // 4])] if n % 4 == 3 else [])
    interleaved.append(_raw(valid[-1]))
    async with RunningApps(_payments(kafka, group_id)), TopicReader(kafka, OUTCOMES, raw_topics=["orders.placed.v1.dlq"]) as reader:
        await produce_raw(kafka, interleaved)
        await reader.wait_for(lambda seen: sum(s.topic.endswith(".dlq") and s.headers.get("dlq-group") == group_id for s in seen) >= len(poison))
        outcomes = await reader.wait_for_keys([r.key for r in valid])
    assert sorted(s.key for s in outcomes) == sorted(r.key for r in valid), "every valid record got through, once"
    dead = [s for s in reader.seen if s.topic == "orders.placed.v1.dlq" and s.headers.get("dlq-group") == group_id]
    by_value = {(raw[1], raw[2]): (name, reason) for name, (raw, reason) in poison.items()}
    got = {by_value[(s.key.encode(), s.value)][0]: s.headers["dlq-reason"] for s in dead}
    assert got == {name: reason for name, (_, reason) in poison.items()}
    for s in dead:
        assert s.headers["dlq-original-topic"] == "orders.placed.v1" and s.headers["dlq-service"] == "payments"
        assert int(s.headers["dlq-original-offset"]) >= 0 and s.headers["dlq-detail"]


async def test_a_record_signed_by_a_plain_kafka_client_with_an_hmac_key_is_processed(kafka, group_id, keys_dir, tmp_path):
    """An upstream trust domain with a shared secret: trusted for one topic with `fleet keys trust --alg hmac-sha256`."""
    import subprocess
    import sys

    from contracts import HMAC_SHA256

    await start_group_at_end(kafka, group_id, [OrderPlaced])
    partner = PrivateKey.generate(f"partner-{uuid.uuid4().hex[:6]}", HMAC_SHA256)
    secret_file = tmp_path / "secret"
    secret_file.write_text(partner.to_json()["secret"])
    trusted = subprocess.run([sys.executable, "-m", "fleet", "keys", "trust", "--kid", partner.kid, "--alg", HMAC_SHA256,
                              "--secret-file", str(secret_file), "--topic", "orders.placed.v1"], capture_output=True, text=True)
    assert trusted.returncode == 0, trusted.stderr
    record = a_record(an_order(), signer=partner)
    async with RunningApps(_payments(kafka, group_id)), TopicReader(kafka, OUTCOMES) as reader:
        await produce_raw(kafka, [_raw(record)])
        [outcome] = await reader.wait_for_keys([record.key])
    assert outcome.headers["ce_causationid"] == record.envelope.id


async def test_an_unparseable_poison_record_at_the_end_of_its_partition_is_committed_past(kafka, group_id):
    """FastStream cannot even parse a record whose header is not UTF-8: it is dead-lettered, and its offset is committed
    too, so its group is not left one record behind (and never dead-letters it again after a rebalance)."""
    from aiokafka.structs import TopicPartition

    await start_group_at_end(kafka, group_id, [OrderPlaced])
    record = a_record(an_order(order_id=f"ord-utf8-tail-{uuid.uuid4().hex[:8]}"))
    poison = _raw(record, headers=[(k, b"\xff\xfe" if k == "ce_source" else v) for k, v in record.raw_headers()])
    async with RunningApps(_payments(kafka, group_id)), TopicReader(kafka, raw_topics=["orders.placed.v1.dlq"]) as reader:
        await produce_raw(kafka, [(*poison, 2)])
        await reader.wait_for(lambda seen: any(s.headers.get("dlq-group") == group_id and s.key == record.key for s in seen))
        partition = TopicPartition("orders.placed.v1", 2)
        end = (await reader._consumer.end_offsets([partition]))[partition]
        await wait_until_committed(kafka, group_id, {partition: end})  # the commit follows the dead letter by a moment
