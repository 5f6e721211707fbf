"""The inbox sweep, run as a periodic task: it re-queues what a restart or a retry delay left
in MongoDB, only once the in-process queue has drained, and asks to run again at once while it
finds full batches."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from eventlet.queue import LightQueue

from devdoubles import mongomock_adapter
from services.customer_sync import workers
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.workers import InboxWorkers
from shared.times import utcnow
from tests.support import Clock


def left_behind(keys: list[str]) -> CustomerSyncStorage:
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    for key in keys:
        storage.inbox.record(key, {"store_id": "s1", "topic": "customer.updated",
                                   "resource": "customer", "resource_id": 1, "body": "{}"})
    # Received well before the sweep's interval, so no test depends on how fast it runs.
    storage.inbox.collection.update_many({}, {"$set": {"received_at": utcnow() - timedelta(hours=1)}})
    return storage


def idle_workers() -> InboxWorkers:
    door = InboxWorkers()
    door.queue, door.sweep_seconds = LightQueue(), 5.0
    return door


def drain(queue: LightQueue) -> list[str]:
    return [queue.get() for _ in range(queue.qsize())]


def test_the_sweep_queues_what_was_left_and_then_waits_its_turn() -> None:
    storage, door = left_behind(["k0", "k1", "k2"]), idle_workers()
    assert door.sweep(storage.inbox) is False
    assert sorted(drain(door.queue)) == ["k0", "k1", "k2"]


def test_the_sweep_leaves_a_queue_that_still_holds_keys_alone() -> None:
    storage, door = left_behind(["k0"]), idle_workers()
    door.queue.put("queued")
    assert door.sweep(storage.inbox) is False
    assert drain(door.queue) == ["queued"]


def test_a_full_batch_asks_to_sweep_again_at_once(monkeypatch) -> None:
    monkeypatch.setattr(workers, "SWEEP_BATCH", 2)
    storage, door = left_behind(["k0", "k1", "k2"]), idle_workers()
    assert door.sweep(storage.inbox) is True
    assert len(drain(door.queue)) == 2


def test_the_sweep_reads_the_inboxs_clock() -> None:
    """A delivery younger than a sweep interval is still being applied: left alone, by the
    service's clock, not the wall's."""
    clock = Clock(datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"], clock=clock)
    storage.inbox.record("k0", {"store_id": "s1", "topic": "customer.updated",
                                "resource": "customer", "resource_id": 1, "body": "{}"})
    door = idle_workers()
    clock.now += timedelta(seconds=4)
    door.sweep(storage.inbox)
    assert drain(door.queue) == []
    clock.now += timedelta(seconds=2)
    door.sweep(storage.inbox)
    assert drain(door.queue) == ["k0"]
