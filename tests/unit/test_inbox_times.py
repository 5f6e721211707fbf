"""The webhook inbox dates receipt, leases, retries, completion and quarantine by the clock it
is given, so every time it stores follows the service's one clock."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage, InboxRepository
from tests.support import Clock

PINNED = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def inbox_on(clock: Clock) -> InboxRepository:
    inbox = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"], clock=clock).inbox
    inbox.record("k1", {"store_id": "s1", "topic": "customer.updated", "resource": "customer",
                        "resource_id": 1, "body": "{}"})
    return inbox


def stored(inbox: InboxRepository) -> dict:
    return inbox.collection.find_one({"_id": "k1"})


def test_receipt_and_lease_are_dated_by_the_clock() -> None:
    inbox = inbox_on(Clock(PINNED))
    assert stored(inbox)["received_at"] == PINNED
    assert inbox.claim("k1", timedelta(seconds=30))["lease_until"] == PINNED + timedelta(seconds=30)


def test_a_retry_waits_from_the_clocks_now_and_is_due_only_then() -> None:
    clock = Clock(PINNED)
    inbox = inbox_on(clock)
    inbox.claim("k1", timedelta(seconds=30))
    inbox.fail("k1", "the shop timed out", retry=True, attempts=3)
    assert stored(inbox)["retry_at"] == PINNED + timedelta(seconds=8)  # 2 ** 3
    received_before = PINNED + timedelta(minutes=1)
    clock.now = PINNED + timedelta(seconds=7)
    assert inbox.unfinished(received_before) == []
    clock.now = PINNED + timedelta(seconds=8)
    assert inbox.unfinished(received_before) == ["k1"]


def test_completion_and_quarantine_are_dated_by_the_clock() -> None:
    inbox = inbox_on(Clock(PINNED))
    inbox.finish("k1", "applied")
    assert stored(inbox)["done_at"] == PINNED
    inbox.collection.update_one({"_id": "k1"}, {"$set": {"status": "processing"}})
    inbox.fail("k1", "no such store", retry=False, quarantine_id="wh-1")
    assert stored(inbox)["quarantined_at"] == PINNED
    inbox.release("s1", None, limit=10)
    assert stored(inbox)["replayed_at"] == PINNED
