"""Dead-letter tools, pure: what `show` tells, how a dead letter is re-signed for its replay, which cannot go back and why,
and the progress rule that keeps a plain replay from moving anything twice and a filtered one from losing the rest."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from contracts import REGISTRY, Envelope, Keyring, PrivateKey, Record, UnknownTopic, encode, sign, source_of, verify_record
from fleet.ops.dlq import (
    LEDGER_MAX_CHARS,
    DeadLetter,
    Progress,
    Replay,
    ReplayReport,
    Skip,
    count_by_reason,
    dead_letter_topic,
    describe,
    plan_replay,
    replay_key_problem,
    triage,
)
from fleet.runtime.errors import TransientError
from fleet.runtime.keys import KeyStore, keyring_path
from fleet.runtime.delivery.dead_letters import Rejection
from fleet.runtime.delivery.retries import failure_headers, retry_record
from tests.support import a_record, an_authorization, an_order, signer_of

DLQ = "orders.placed.v1.dlq"


def now() -> datetime:
    return datetime.now(timezone.utc)  # the run's keys are valid from when conftest made them, not from a fixed date


def keyring(keys_dir) -> Keyring:
    return KeyStore(keyring_path(keys_dir)).keyring()


def a_dead_letter(record: Record | None = None, reason: str = "stale", *, key: bytes | None = None, value: bytes | None = None,
                  headers=None, offset: int = 7, group: str = "payments", extra=(), failures: dict | None = None) -> DeadLetter:
    """A dead letter exactly as the fleet writes one (fleet.runtime.delivery.dead_letters), of a record a consumer refused for `reason`."""
    record = record or a_record(an_order())
    key = record.key.encode() if key is None else key
    value = record.value if value is None else value
    original = list(record.raw_headers() if headers is None else headers) + list(extra)
    refused = Rejection(record.topic, 2, 40, key, value, tuple(original), reason, f"refused for {reason}", tuple((failures or {}).items()))
    dlq = REGISTRY.resolve(record.topic).dead_letter_topic
    return DeadLetter(dlq, 3, offset, key, value, tuple(refused.dead_letter_headers(group, "payments")))


def replayed(letter: DeadLetter, keys_dir, at: datetime | None = None) -> Replay | Skip:
    return plan_replay(letter, signer_of("replay"), keyring(keys_dir), at or now())


def verifies_now(replay: Replay, keys_dir, at: datetime) -> Envelope:
    headers = replay.raw_headers()
    return verify_record(replay.record.topic, replay.record.key.encode(), replay.record.value, headers, int(at.timestamp() * 1000), keyring(keys_dir))


# ---- naming, counting, showing -------------------------------------------------------------------------------------


def test_a_topic_is_named_by_itself_or_by_its_dead_letter_topic():
    assert dead_letter_topic("orders.placed.v1") == dead_letter_topic("orders.placed.v1.dlq") == DLQ


def test_a_name_outside_the_registry_is_an_unknown_topic():
    with pytest.raises(UnknownTopic):
        dead_letter_topic("orders.placed.v1.retry.1")


def test_dead_letters_are_counted_by_reason_and_by_consumer_group():
    letters = [a_dead_letter(reason="stale"), a_dead_letter(reason="stale", group="it-x"), a_dead_letter(reason="stale"), a_dead_letter(reason="unknown_key")]
    assert count_by_reason(letters) == {("stale", "payments"): 2, ("stale", "it-x"): 1, ("unknown_key", "payments"): 1}


def test_show_tells_where_a_dead_letter_came_from_and_whose_event_it_carries_but_not_its_signature():
    record = a_record(an_order())
    shown = describe(a_dead_letter(record, "stale"))
    assert (shown["reason"], shown["original_topic"], shown["original_partition"], shown["original_offset"]) == ("stale", "orders.placed.v1", 2, 40)
    assert (shown["group"], shown["service"], shown["key"]) == ("payments", "payments", record.key)
    assert (shown["ce_id"], shown["ce_keyid"]) == (record.envelope.id, record.envelope.keyid)
    assert shown["failed_at"] and shown["detail"] == "refused for stale"
    assert record.envelope.signature not in str(shown)


def test_show_gives_a_value_that_is_not_text_as_its_size_and_truncates_a_long_one():
    assert describe(a_dead_letter(value=b"\xff\xfe\x00"))["value"] == "<3 bytes, not UTF-8>"
    long = describe(a_dead_letter(value=b"x" * 5000))["value"]
    assert long.startswith("xxx") and long.endswith("…") and len(long) < 300


# ---- re-signing a dead letter for its replay ------------------------------------------------------------------------


def test_a_stale_dead_letter_is_re_signed_by_the_replay_key_with_a_fresh_time_and_verifies_now(keys_dir):
    stale = a_record(an_order(), now=now() - timedelta(minutes=10))
    at = now()
    replay = replayed(a_dead_letter(stale, "stale"), keys_dir, at)
    assert isinstance(replay, Replay) and replay.record.topic == "orders.placed.v1"
    assert replay.record.envelope.keyid == signer_of("replay").kid != stale.envelope.keyid
    assert replay.record.envelope.time > stale.envelope.time
    assert verifies_now(replay, keys_dir, at).id == stale.envelope.id


def test_a_replay_keeps_the_key_the_value_the_event_its_flow_and_its_cause(keys_dir):
    order = a_record(an_order(), correlation_id="checkout-42")
    payment = encode(an_authorization(), source=source_of("payments"), signer=signer_of("payments"), cause=order.envelope)
    replay = replayed(a_dead_letter(payment, "permanent_error"), keys_dir)
    assert (replay.record.topic, replay.record.key, replay.record.value) == (payment.topic, payment.key, payment.value)
    kept = ("id", "correlation_id", "causation_id", "type", "source", "subject", "dataschema")
    assert {f: getattr(replay.record.envelope, f) for f in kept} == {f: getattr(payment.envelope, f) for f in kept}
    assert replay.record.envelope.causation_id == order.envelope.id and replay.record.envelope.correlation_id == "checkout-42"


def test_a_replay_drops_the_dlq_headers_keeps_the_others_and_names_the_first_signer_and_the_dead_letter(keys_dir):
    record = a_record(an_order())
    letter = a_dead_letter(record, "permanent_error", extra=[("traceparent", b"00-abc"), ("traceparent", b"00-def")])
    headers = replayed(letter, keys_dir).raw_headers()
    names = [name for name, _ in headers]
    assert not [name for name in names if name.startswith("dlq-")]
    assert [value for name, value in headers if name == "traceparent"] == [b"00-abc", b"00-def"]
    assert dict(headers)["eventfleet-original-keyid"] == record.envelope.keyid.encode()
    assert dict(headers)["eventfleet-replayed-from"] == b"orders.placed.v1.dlq:3:7"
    assert len(names) == len(set(names)) + 1, "only the repeated traceparent repeats"


def test_a_dead_letter_that_failed_on_a_retry_topic_goes_back_as_a_first_attempt_and_keeps_its_first_signer(keys_dir):
    order = a_record(an_order())
    failure = failure_headers([], attempt=3, group="payments", error=TransientError("down"), origin=(order.topic, 2, 40), now=now())
    retry, extra = retry_record(REGISTRY.named(order.topic), 3, order.key, order.value, order.envelope, order.raw_headers(),
                                failure, 0, signer_of("payments"), now())
    at = now()
    letter = a_dead_letter(retry, "retries_exhausted", headers=retry.raw_headers() + extra, failures=failure)
    replay = replayed(letter, keys_dir, at)
    headers = replay.raw_headers()
    assert replay.record.topic == "orders.placed.v1" and not [n for n, _ in headers if n.startswith("retry-")]
    assert dict(headers)["eventfleet-original-keyid"] == order.envelope.keyid.encode()
    assert verifies_now(replay, keys_dir, at).id == order.envelope.id


def test_a_dead_letter_of_an_earlier_replay_can_be_replayed_again_and_still_names_its_first_signer(keys_dir):
    first = replayed(a_dead_letter(a_record(an_order()), "stale"), keys_dir)
    again = replayed(a_dead_letter(first.record, "permanent_error", headers=first.raw_headers()), keys_dir)
    assert dict(again.raw_headers())["eventfleet-original-keyid"] == dict(first.raw_headers())["eventfleet-original-keyid"]
    assert [n for n, _ in again.raw_headers()].count("eventfleet-replayed-from") == 1


# ---- dead letters that cannot go back --------------------------------------------------------------------------------


def _without(record: Record, name: str):
    return [(k, v) for k, v in record.raw_headers() if k != name]


def _skip_cases():
    record = a_record(an_order())
    stranger = a_record(an_order(), signer=PrivateKey.generate("stranger-1"))
    wrong_type = sign(replace(record, envelope=replace(record.envelope, type="dev.eventfleet.payments.declined.v1")), signer_of("storefront"))
    schema_invalid = sign(replace(record, value=b'{"order_id": "x"}'), signer_of("storefront"))
    return {
        "a missing header": (a_dead_letter(record, headers=_without(record, "ce_signature")), "missing_header"),
        "a duplicated header": (a_dead_letter(record, extra=[("ce_id", record.envelope.id.encode())]), "duplicate_header"),
        "a header that is not UTF-8": (a_dead_letter(record, headers=[(k, b"\xff" if k == "ce_source" else v) for k, v in record.raw_headers()]), "invalid_header"),
        "a value over the topic's size limit": (a_dead_letter(record, value=record.value + b" " * 16384), "oversize"),
        "a ce_type of another topic": (a_dead_letter(wrong_type, "wrong_type"), "wrong_type"),
        "a key the keyring does not know": (a_dead_letter(stranger, "unknown_key"), "unknown_key"),
        "a key that may not sign the topic": (a_dead_letter(a_record(an_order(), signer=signer_of("payments")), "key_not_allowed"), "key_not_allowed"),
        "a value that does not match its signature": (a_dead_letter(record, "bad_signature", value=record.value.replace(b"EUR", b"USD")), "bad_signature"),
        "a correctly signed value that is not a valid event": (a_dead_letter(schema_invalid, "invalid_payload"), "invalid_payload"),
    }


@pytest.mark.parametrize("case", list(_skip_cases()))
def test_a_dead_letter_that_would_be_refused_again_is_skipped_with_why(case, keys_dir):
    letter, why = _skip_cases()[case]
    skip = replayed(letter, keys_dir)
    assert isinstance(skip, Skip) and skip.why == why and skip.detail


def test_a_dead_letter_that_does_not_name_its_dead_letter_topics_original_is_skipped(keys_dir):
    letter = a_dead_letter()
    moved = replace(letter, headers=tuple((k, b"payments.declined.v1" if k == "dlq-original-topic" else v) for k, v in letter.headers))
    lost = replace(letter, headers=tuple((k, v) for k, v in letter.headers if k != "dlq-original-topic"))
    assert replayed(moved, keys_dir).why == replayed(lost, keys_dir).why == "wrong_topic"


def test_the_replay_key_must_be_trusted_for_the_topic_it_puts_dead_letters_back_on(keys_dir):
    replay_key = signer_of("replay")
    assert replay_key_problem(keyring(keys_dir), replay_key, "orders.placed.v1", now()) is None
    assert "not in the keyring" in replay_key_problem(Keyring(), replay_key, "orders.placed.v1", now())
    narrow = Keyring.of([replay_key.public(["payments.declined.v1"])])
    assert "may not sign" in replay_key_problem(narrow, replay_key, "orders.placed.v1", now())


# ---- progress: what a replay commits ---------------------------------------------------------------------------------


def _letters(*reasons: str) -> list[DeadLetter]:
    return [a_dead_letter(reason=reason, offset=offset) for offset, reason in enumerate(reasons)]


def _run(letters, progress: Progress, *, reason: str | None = None, unreplayable=(), from_beginning=False) -> tuple[Progress, ReplayReport]:
    """One replay of one partition, as replay_dead_letters runs it, with a fake planner; progress goes through a commit."""
    report = ReplayReport(DLQ, "orders.placed.v1", False, "replay-test")

    def plan(letter):
        return Skip(letter, "unknown_key", "x") if letter.offset in unreplayable else Replay(letter, a_record(an_order()), ())

    def wanted(letter):
        return reason is None or letter.reason == reason

    for letter in letters:
        progress = triage(letter, progress, wanted, plan, report, from_beginning)
    progress = progress.read_to(letters[-1].offset + 1)
    return Progress.from_commit(progress.mark, progress.metadata), report


def _moved(report: ReplayReport) -> list[int]:
    return [replay.letter.offset for replay in report.moved]


def test_a_plain_replay_settles_every_dead_letter_it_read():
    progress, report = _run(_letters("stale", "unknown_key", "stale"), Progress(0), unreplayable={1})
    assert (progress.mark, progress.moved) == (3, frozenset())
    assert _moved(report) == [0, 2] and [s.letter.offset for s in report.skipped] == [1]


def test_a_filtered_replay_holds_the_mark_at_the_first_dead_letter_it_left_and_notes_what_it_moved_behind_it():
    progress, report = _run(_letters("stale", "permanent_error", "stale", "permanent_error", "stale"), Progress(0), reason="stale")
    assert _moved(report) == [0, 2, 4] and report.left["filtered"] == 2
    assert (progress.mark, progress.moved) == (1, frozenset({2, 4}))


def test_a_plain_replay_after_a_filtered_one_moves_only_what_the_filter_left():
    letters = _letters("stale", "permanent_error", "stale", "permanent_error", "stale")
    progress, _ = _run(letters, Progress(0), reason="stale")
    progress, report = _run(letters[progress.mark:], progress)
    assert _moved(report) == [1, 3] and report.already_moved == 2
    assert (progress.mark, progress.moved) == (5, frozenset())


def test_a_second_filtered_replay_moves_nothing_again():
    letters = _letters("permanent_error", "stale", "stale")
    progress, _ = _run(letters, Progress(0), reason="stale")
    progress, report = _run(letters[progress.mark:], progress, reason="stale")
    assert _moved(report) == [] and report.already_moved == 2 and progress.mark == 0


def test_a_dead_letter_that_cannot_go_back_behind_a_left_one_is_reported_again_but_never_moved():
    letters = _letters("permanent_error", "stale", "stale")
    progress, first = _run(letters, Progress(0), reason="stale", unreplayable={1})
    progress, second = _run(letters, progress, reason="stale", unreplayable={1})
    assert [s.letter.offset for s in first.skipped] == [s.letter.offset for s in second.skipped] == [1]
    assert _moved(first) == [2] and _moved(second) == []


def test_a_replay_from_the_beginning_moves_again_but_never_takes_progress_back():
    letters = _letters("stale", "permanent_error", "stale")
    progress, _ = _run(letters, Progress(0), reason="stale")
    again, report = _run(letters, progress, reason="stale", from_beginning=True)
    assert _moved(report) == [0, 2] and (again.mark, again.moved) == (progress.mark, progress.moved)


def test_the_ledger_is_written_as_runs_of_offsets_and_read_back():
    progress = Progress(10, frozenset({11, 12, 13, 15, 20, 21}))
    assert progress.metadata == "moved:11-13,15,20-21"
    assert Progress.from_commit(10, progress.metadata) == progress


def test_a_commit_without_a_ledger_means_nothing_above_the_mark_was_moved():
    assert Progress.from_commit(4, "") == Progress.from_commit(4, "written by someone else") == Progress(4)


def test_a_full_ledger_leaves_further_dead_letters_for_a_later_replay_rather_than_move_them_unrecorded():
    full = Progress(0, frozenset(range(2, 20_000, 2)), blocked=True)
    assert len(full.metadata) > LEDGER_MAX_CHARS and not full.has_room_for(20_001)
    assert Progress(0, frozenset({2}), blocked=True).has_room_for(4) and Progress(0, full.moved).has_room_for(20_001)
    report = ReplayReport(DLQ, "orders.placed.v1", False, "replay-test")
    letter = a_dead_letter(offset=20_001)
    assert triage(letter, full, lambda _: True, lambda _: pytest.fail("planned"), report, False) == full
    assert report.left["ledger_full"] == 1
