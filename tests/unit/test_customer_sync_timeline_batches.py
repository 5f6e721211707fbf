"""Other services' events put on customers' timelines a batch at a time
(`record_foreign_events`) give exactly the entries that one at a time gives, with one read of
the customers and one bulk write per batch; an unknown, erased or other store's customer gets
nothing either way."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pymongo.errors import BulkWriteError

from devdoubles import mongomock_adapter
from services.customer_sync.crm.timeline import record_foreign_event, record_foreign_events
from services.customer_sync.repository import CustomerSyncStorage
from shared.events import build_event, contract
from tests.support import applied_but_unconfirmed

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
STORE = "s1"
KINDS = ("customer.tagged", "customer.untagged", "customer.segment_changed",
         "loyalty.points_changed", "loyalty.reward_issued", "notification.sent",
         "consent.changed")
HELD = {"c1": (STORE, "active"), "c2": (STORE, "active"), "c3": (STORE, "merged"),
        "gone": (STORE, "erased"), "theirs": ("s2", "active")}


def storage_with_customers() -> CustomerSyncStorage:
    storage = CustomerSyncStorage(mongomock_adapter.client()[f"cs_{uuid.uuid4().hex[:8]}"])
    storage.ensure_indexes()
    storage.customers.collection.insert_many([
        {"_id": customer_id, "store_id": store_id, "status": status, "version": 1}
        for customer_id, (store_id, status) in HELD.items()])
    return storage


def stream(seed: int) -> list:
    """Events for held, erased, unknown and another store's customers, interleaved, some of
    them twice."""
    rng = random.Random(seed)
    events = []
    for seq in range(120):
        kind = rng.choice(KINDS)
        customer_id = rng.choice([*HELD, "unknown"])
        at = T0 + timedelta(seconds=seq, microseconds=rng.randint(0, 999_999))
        one = build_event(kind, store_id=STORE, occurred_at=at,
                          event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}:{seq}")),
                          data={**contract(kind).sample, "customer_id": customer_id})
        events.append(one)
        if rng.random() < 0.2:
            events.insert(rng.randint(0, len(events)), one)  # delivered again, anywhere
    return events


def entries(storage: CustomerSyncStorage) -> list[dict]:
    return sorted(storage.timeline.collection.find(), key=lambda d: d["_id"])


@pytest.mark.parametrize("seed", [1, 2])
def test_batches_of_any_size_record_what_one_at_a_time_records(seed):
    events = stream(seed)
    oracle = storage_with_customers()
    added = sum(record_foreign_event(oracle, event) for event in events)
    expected = entries(oracle)
    assert {e["customer_id"] for e in expected} == {"c1", "c2", "c3"}
    for size in (1, 3, 16, len(events)):
        batched = storage_with_customers()
        assert sum(record_foreign_events(batched, events[i:i + size])
                   for i in range(0, len(events), size)) == added
        assert entries(batched) == expected, f"batches of {size}"
        assert record_foreign_events(batched, events) == 0  # a redelivered batch: nothing new
        assert entries(batched) == expected


def test_a_batch_reads_the_customers_once_and_writes_once(monkeypatch):
    storage = storage_with_customers()
    calls: list[str] = []
    for collection in (storage.customers.collection, storage.timeline.collection):
        for name in ("find", "find_one", "update_one", "bulk_write"):
            original = getattr(collection, name)

            def counted(*args, _name=name, _original=original, _of=collection.name, **kwargs):
                calls.append(f"{_of}.{_name}")
                return _original(*args, **kwargs)
            monkeypatch.setattr(collection, name, counted)
    record_foreign_events(storage, stream(3))
    assert calls == [f"{storage.customers.collection.name}.find",
                     f"{storage.timeline.collection.name}.bulk_write"]


def test_an_entry_stored_meanwhile_is_left_as_it_is():
    storage = storage_with_customers()
    [first, second] = [build_event("customer.tagged", store_id=STORE, occurred_at=T0,
                                   data={**contract("customer.tagged").sample,
                                         "customer_id": "c1", "tag": tag})
                       for tag in ("vip", "news")]
    assert record_foreign_event(storage, first)  # another instance got there first
    assert record_foreign_events(storage, [first, second]) == 1
    assert sorted(e["details"]["tag"] for e in entries(storage)) == ["news", "vip"]


def test_a_write_the_write_concern_did_not_confirm_fails_the_batch_and_its_retry_completes(
        monkeypatch):
    """An unconfirmed write may be rolled back: the batch must fail (not be acknowledged) so
    the broker's redelivery writes it again, which the upserts make harmless."""
    events = stream(4)
    oracle = storage_with_customers()
    added = sum(record_foreign_event(oracle, event) for event in events)
    storage = storage_with_customers()
    applied_but_unconfirmed(storage.timeline.collection, monkeypatch)
    with pytest.raises(BulkWriteError):
        record_foreign_events(storage, events)
    assert record_foreign_events(storage, events) == 0  # the retry: all were applied already
    assert entries(storage) == entries(oracle) and added
