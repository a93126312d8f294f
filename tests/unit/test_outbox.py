"""The notification outbox appends one JSON line per message and reads them back."""

from services.notifications.outbox import FileOutbox


def test_lines_are_appended_in_order_and_read_back(tmp_path):
    outbox = FileOutbox(tmp_path / "nested" / "outbox.jsonl")
    outbox.append({"n": 1})
    outbox.append({"n": 2, "text": "ünïcode"})
    assert outbox.read() == [{"n": 1}, {"n": 2, "text": "ünïcode"}]
    assert len((tmp_path / "nested" / "outbox.jsonl").read_text().splitlines()) == 2


def test_an_outbox_that_was_never_written_is_empty(tmp_path):
    assert FileOutbox(tmp_path / "none.jsonl").read() == []
