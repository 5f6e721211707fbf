"""Hostile order events in one segmentation batch. Whoever can publish to customer_sync's
exchange can put contract-valid but crafted order events into one batch: ids of two stores that
spell the same profile key, one event id reused for other content, a time far in the future,
an order of another customer's id, many events for one customer. A batch must leave exactly what
applying them one by one leaves (no profile reached that one by one would not reach, no fact
kept that one by one would drop), and its work stays one read and one write."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.segmentation import repository as segmentation_repository
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from shared import outbox as shared_outbox
from shared.events import build_event
from tests.support import outer_calls, storage_at
from tests.unit.test_segmentation_profiles import T0, order_event

STORED_AT = datetime(2026, 6, 1, 11, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def pinned_storage_times(monkeypatch):
    monkeypatch.setattr(segmentation_repository, "utcnow", lambda: STORED_AT)
    monkeypatch.setattr(shared_outbox, "utcnow", lambda: STORED_AT)


def in_store(event, store_id: str):
    return build_event(event.event_type, store_id=store_id, data=event.data,
                       event_id=event.event_id, occurred_at=event.occurred_at)


def hostile_batch() -> list:
    colliding_a = order_event("1", "b:c", 5000)                       # store s1, customer b:c
    colliding_b = in_store(order_event("2", "c", 700_000), "s1:b")    # store s1:b, customer c
    reused = order_event("3", "c1", 4000)
    same_id_other_content = build_event(
        "order.placed", store_id="s1", data={**reused.data, "total": {"amount": 900_000,
                                                                      "currency": "EUR"}},
        event_id=reused.event_id, occurred_at=reused.occurred_at)
    future = order_event("4", "c2", 3000, at=T0 + timedelta(days=3650))
    overwritten_late = order_event("4", "c2", 999_999, at=T0 + timedelta(minutes=1))
    many = [order_event(f"m{n}", "c3", 100 + n, at=T0 + timedelta(seconds=n))
            for n in range(200)]
    return [colliding_a, reused, future, *many[:100], colliding_b, same_id_other_content,
            overwritten_late, *many[100:], colliding_a]


def profiles_of(database) -> tuple[SegmentationStorage, Profiles]:
    storage, clock = storage_at(SegmentationStorage, database, T0 + timedelta(days=1))
    return storage, Profiles(storage, clock=clock)


def state(storage: SegmentationStorage) -> list[dict]:
    return list(storage.profiles.collection.find({}).sort("_id", 1))


def test_a_crafted_batch_leaves_what_one_by_one_leaves(database):
    batch = hostile_batch()
    oracle, one_by_one = profiles_of(database.client[f"{database.name}_oracle"])
    for event in batch:
        one_by_one.apply_order_event(event)
    storage, profiles = profiles_of(database)
    profiles.apply_order_events(batch)
    assert state(storage) == state(oracle)
    shared_key = storage.profiles.get("s1", "b:c")  # both stores' events landed on one key
    assert set(shared_key["orders"]) == {"1", "2"} and shared_key["store_id"] == "s1"
    assert storage.profiles.get("s1", "c2")["orders"]["4"]["total"] == 3000  # future kept
    assert storage.profiles.get("s1", "c1")["orders"]["3"]["total"] == 900_000


def test_a_crafted_batch_costs_one_read_and_one_write_of_profiles(database):
    storage, profiles = profiles_of(database)
    calls = outer_calls(storage.profiles.collection)
    profiles.apply_order_events(hostile_batch())
    assert calls == ["find", "bulk_write"]
