"""Every repository of customer_sync dates what it stores by the storage's one clock: stores,
backfill checkpoints, API keys and console sessions, as the inbox does."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage, Store
from tests.support import Clock

PINNED = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def storage_on(clock: Clock) -> CustomerSyncStorage:
    return CustomerSyncStorage(mongomock_adapter.client()["customer_sync"], clock=clock)


def test_a_store_is_dated_by_the_clock_and_first_reconciled_then() -> None:
    clock = Clock(PINNED)
    storage = storage_on(clock)
    storage.stores.save(Store("s1", "https://shop.example", "whsec", "ck", "cs"))
    clock.now = PINNED + timedelta(hours=1)
    storage.stores.save(Store("s1", "https://shop.example", "whsec-2", "ck", "cs"))
    doc = storage.stores.collection.find_one({"_id": "s1"})
    assert (doc["created_at"], doc["next_reconcile_at"]) == (PINNED, PINNED)
    assert doc["updated_at"] == PINNED + timedelta(hours=1)


def test_a_backfill_checkpoint_is_dated_by_the_clock() -> None:
    clock = Clock(PINNED)
    storage = storage_on(clock)
    run = storage.backfills.start("s1", None, "full")
    assert (run["started_at"], run["updated_at"]) == (PINNED, PINNED)
    clock.now = PINNED + timedelta(minutes=5)
    storage.backfills.update(run["_id"], {"pages_done": 1})
    assert storage.backfills.get(run["_id"])["updated_at"] == PINNED + timedelta(minutes=5)


def test_keys_and_console_sessions_are_dated_by_the_clock() -> None:
    storage = storage_on(Clock(PINNED))
    key = storage.api_keys.create("s1", "till", ["read"], "ops")
    assert storage.api_keys.collection.find_one({"_id": key["key_id"]})["created_at"] == PINNED
    session = storage.console_sessions.open(key["api_key"], 600, 3600)
    assert session["expires_at"] == (PINNED + timedelta(hours=1)).isoformat()


def test_by_email_prefers_the_registered_customer_then_the_oldest_and_undated_last() -> None:
    storage = storage_on(Clock(PINNED))
    customers = storage.customers.collection
    customers.insert_many([
        {"_id": "undated-guest", "store_id": "s1", "email_key": "a@x.example", "status": "active",
         "registered": False},
        {"_id": "dated-guest", "store_id": "s1", "email_key": "a@x.example", "status": "active",
         "registered": False, "date_created": PINNED},
    ])
    assert storage.customers.by_email("s1", "a@x.example")["_id"] == "dated-guest"
    customers.insert_one({"_id": "registered", "store_id": "s1", "email_key": "a@x.example",
                          "status": "active", "registered": True})
    assert storage.customers.by_email("s1", "a@x.example")["_id"] == "registered"
