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


class CountingPublisher(RecordingPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def publish_batch(self, messages) -> None:
        self.batches.append([m.message_id for m in messages])
        super().publish_batch(messages)


def test_documents_of_several_collections_go_out_in_one_batch_in_the_order_written(database):
    """The fast path waits for the broker once per call, not once per collection, and keeps
    the writer's order (a customer's creation before its order's placing)."""
    customers, orders = database["customers"], database["orders"]
    customers.insert_many([{"_id": "c1", OUTBOX_FIELD: [_entry("created", 1)]},
                           {"_id": "c2", OUTBOX_FIELD: []}])
    orders.insert_one({"_id": "o1", OUTBOX_FIELD: [_entry("placed", 1), _entry("paid", 1)]})
    publisher = CountingPublisher()
    relay = OutboxRelay([customers, orders], publisher)

    published = relay.publish_documents([("customers", "c1"), ("orders", "o1"),
                                         ("customers", "c2"), ("customers", "c1"),
                                         ("orders", "gone")])
    assert published == 3
    assert publisher.batches == [["created", "placed", "paid"]]
    assert customers.find_one({"_id": "c1"})[OUTBOX_FIELD] == []
    assert orders.find_one({"_id": "o1"})[OUTBOX_FIELD] == []
    assert relay.publish_documents([("customers", "c1"), ("orders", "o1")]) == 0
    assert publisher.batches == [["created", "placed", "paid"]]  # nothing owed, nothing sent


def test_a_batch_larger_than_the_batch_size_is_confirmed_in_parts(database):
    customers, orders = database["customers"], database["orders"]
    customers.insert_one({"_id": "c1", OUTBOX_FIELD: [_entry(f"c-{n}", 1) for n in range(3)]})
    orders.insert_one({"_id": "o1", OUTBOX_FIELD: [_entry(f"o-{n}", 1) for n in range(2)]})
    publisher = CountingPublisher()
    relay = OutboxRelay([customers, orders], publisher, batch_size=2)
    assert relay.publish_documents([("customers", "c1"), ("orders", "o1")]) == 5
    assert publisher.batches == [["c-0", "c-1"], ["c-2", "o-0"], ["o-1"]]
    assert customers.find_one({"_id": "c1"})[OUTBOX_FIELD] == []
    assert orders.find_one({"_id": "o1"})[OUTBOX_FIELD] == []
