"""The outbox relay's sweep (shared/outbox.py): with `older_than` it leaves entries younger than
that to the fast path of the instance that wrote them, so two instances sweeping do not copy
each other's fresh events; without it, it takes everything owed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.outbox import OUTBOX_FIELD, OutboxRelay

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish_batch(self, messages) -> None:
        self.published.extend(m.message_id for m in messages)


def _entry(event_id: str, age_seconds: float) -> dict:
    return {"event_id": event_id, "event_type": "customer.tagged",
            "exchange": "segmentation.events", "message": {"event_id": event_id},
            "created_at": NOW - timedelta(seconds=age_seconds)}


def test_a_sweep_older_than_leaves_fresh_entries_and_a_full_one_takes_them(database):
    collection = database["profiles"]
    collection.insert_many([
        {"_id": "left-by-a-crash", OUTBOX_FIELD: [_entry("old-1", 120), _entry("old-2", 90)]},
        {"_id": "just-written", OUTBOX_FIELD: [_entry("fresh", 1)]},
        {"_id": "nothing-owed", OUTBOX_FIELD: []},
    ])
    publisher = RecordingPublisher()
    relay = OutboxRelay([collection], publisher)

    assert relay.publish_pending(older_than=NOW - timedelta(seconds=30)) == 2
    assert publisher.published == ["old-1", "old-2"]
    assert collection.find_one({"_id": "left-by-a-crash"})[OUTBOX_FIELD] == []
    assert [e["event_id"] for e in collection.find_one({"_id": "just-written"})[OUTBOX_FIELD]] \
        == ["fresh"]

    assert relay.publish_pending() == 1
    assert publisher.published == ["old-1", "old-2", "fresh"]
    assert collection.find_one({"_id": "just-written"})[OUTBOX_FIELD] == []
