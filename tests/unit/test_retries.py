"""RetryStep decisions, pure: which retry topic comes next and when, what a retry record carries, and that it verifies."""

from datetime import datetime, timedelta, timezone

from contracts import REGISTRY, Envelope, verify_record
from fleet.runtime.errors import TransientError
from fleet.runtime.keys import KeyStore, keyring_path
from fleet.runtime.delivery.retries import DeadLetterStep, RetryStep, RetryPolicy, attempt_of, due_ms, failure_headers, next_step, retry_record
from tests.support import a_record, an_order, signer_of

POLICY = RetryPolicy("payments", (1.0, 10.0, 60.0))
NOW = datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)


def test_each_failure_moves_to_the_next_retry_topic_with_its_delay():
    assert next_step(POLICY, 0, False, 1_000) == RetryStep(1, 2_000)
    assert next_step(POLICY, 1, False, 1_000) == RetryStep(2, 11_000)
    assert next_step(POLICY, 2, False, 1_000) == RetryStep(3, 61_000)


def test_after_the_last_delay_the_record_is_dead_lettered():
    assert next_step(POLICY, 3, False, 0) == DeadLetterStep("retries_exhausted")


def test_a_permanent_failure_is_dead_lettered_at_once():
    assert next_step(POLICY, 0, True, 0) == DeadLetterStep("permanent_error")


def test_a_subscriber_without_delays_dead_letters_its_first_failure():
    assert next_step(RetryPolicy("payments", ()), 0, False, 0) == DeadLetterStep("retries_exhausted")


def test_failure_headers_keep_the_first_failure_and_the_origin_across_attempts():
    first = failure_headers([], attempt=1, group="payments", error=TransientError("down"), origin=("orders.placed.v1", 2, 40), now=NOW)
    later = failure_headers([(k, v.encode()) for k, v in first.items()], attempt=2, group="payments", error=TimeoutError(),
                            origin=("orders.placed.v1.retry.1", 0, 7), now=NOW + timedelta(seconds=1))
    assert later["retry-first-failure-at"] == first["retry-first-failure-at"] < later["retry-last-failure-at"]
    assert (later["retry-original-topic"], later["retry-original-partition"], later["retry-original-offset"]) == ("orders.placed.v1", "2", "40")
    assert later["retry-error-class"] == "TimeoutError" and later["retry-reason"] == "TimeoutError"


def test_a_retry_record_keeps_the_event_and_its_flow_and_verifies_on_its_retry_topic(keys_dir):
    NOW = datetime.now(timezone.utc)  # the run's keys may have been rotated: sign at a time they are valid
    original = a_record(an_order(), correlation_id="flow-1")
    failure = failure_headers([], attempt=1, group="payments", error=TransientError("down"), origin=(original.topic, 0, 1), now=NOW)
    retry, extra = retry_record(REGISTRY.named(original.topic), 1, original.key, original.value, original.envelope,
                                original.raw_headers() + [("traceparent", b"00-x")], failure, 123, signer_of("payments"), NOW)
    assert retry.topic == "orders.placed.v1.retry.1"
    kept = ("id", "type", "source", "subject", "correlation_id", "causation_id", "dataschema")
    assert all(getattr(retry.envelope, f) == getattr(original.envelope, f) for f in kept)
    assert retry.envelope.keyid == signer_of("payments").kid and retry.envelope.time != original.envelope.time
    headers = retry.raw_headers() + extra
    assert dict(headers)["eventfleet-original-keyid"] == original.envelope.keyid.encode()
    assert dict(headers)["traceparent"] == b"00-x" and attempt_of(headers) == 1 and due_ms(headers) == 123
    keyring = KeyStore(keyring_path(keys_dir)).keyring()
    timestamp = int(NOW.timestamp() * 1000)
    assert verify_record(retry.topic, retry.key.encode(), retry.value, headers, timestamp, keyring) == Envelope.from_headers(headers)


def test_a_retry_record_cannot_be_passed_off_on_the_original_topic(keys_dir):
    import pytest

    from contracts import Rejected

    NOW = datetime.now(timezone.utc)
    original = a_record(an_order())
    failure = failure_headers([], attempt=1, group="payments", error=TransientError("down"), origin=(original.topic, 0, 1), now=NOW)
    retry, extra = retry_record(REGISTRY.named(original.topic), 1, original.key, original.value, original.envelope,
                                original.raw_headers(), failure, 0, signer_of("payments"), NOW)
    keyring = KeyStore(keyring_path(keys_dir)).keyring()
    with pytest.raises(Rejected) as refused:
        verify_record(original.topic, retry.key.encode(), retry.value, retry.raw_headers() + extra, int(NOW.timestamp() * 1000), keyring)
    assert refused.value.reason == "key_not_allowed"
