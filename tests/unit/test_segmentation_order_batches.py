"""Order events applied in batches leave exactly what applying them one by one leaves: the same
profiles, versions and owed events, whatever the batch size, with duplicates, repeats, conflicts
with another writer, and customers unknown, erased or merged."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from pymongo.errors import BulkWriteError

from services.segmentation import repository as segmentation_repository
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from services.segmentation.rules import validate_rule
from services.segmentation.saved_segments import SavedSegments
from shared import outbox as shared_outbox
from tests.support import applied_but_unconfirmed, outer_calls, storage_at
from tests.unit.test_segmentation_profiles import T0, order_event

STORED_AT = datetime(2026, 6, 1, 11, tzinfo=timezone.utc)
CUSTOMERS = [f"c{n}" for n in range(1, 9)]
ERASED, MERGED = "c7", "c8"
MERGED_FIRST_ORDER = order_event("m0", MERGED, 3000)  # one event id for every database


@pytest.fixture(autouse=True)
def pinned_storage_times(monkeypatch):
    """Profiles' `created_at` and outbox entries' `created_at` read the wall clock."""
    monkeypatch.setattr(segmentation_repository, "utcnow", lambda: STORED_AT)
    monkeypatch.setattr(shared_outbox, "utcnow", lambda: STORED_AT)


def prepared(database) -> tuple[SegmentationStorage, Profiles]:
    """A store with a rule, a saved segment, an erased customer and a merged guest."""
    storage, clock = storage_at(SegmentationStorage, database, T0 + timedelta(days=2))
    profiles = Profiles(storage, clock=clock)
    storage.put_rule("s1", validate_rule({
        "rule_id": "twice", "name": "Came back", "match": "all", "enabled": True,
        "conditions": [{"field": "orders_count", "op": "gte", "value": 2}],
        "actions": [{"type": "add_tag", "value": "returning"},
                    {"type": "join_group", "value": "loyal"}]}))
    SavedSegments(storage.saved_segments).create("s1", {
        "segment_id": "big", "name": "Big spenders",
        "conditions": [{"field": "total_spent", "op": "gt", "value": 10000}]})
    profiles.apply_order_event(MERGED_FIRST_ORDER)
    storage.profiles.mark_merged(storage.profiles.key("s1", MERGED), "s1:c1")
    profiles.erase("s1", [ERASED], "erasure-1")
    return storage, profiles


def customer_stream(customer: str, rng: random.Random, shop_dates: bool = True) -> list:
    """One customer's order events in delivery order: orders placed, updated, refunded and
    cancelled, some states delivered after a newer one; events' times with microseconds (a
    store keeps milliseconds). Orders' creation in whole seconds as the shop sends it, or with
    microseconds (`shop_dates=False`), which a profile's stats keep until read back."""
    events = []
    at = T0 + timedelta(microseconds=rng.randrange(1_000_000))
    for number in range(rng.randrange(1, 4)):
        order_id = f"{customer}-{number}"
        total = rng.choice([2500, 7000, 12_000, 600_000])
        created = at - timedelta(days=1, seconds=rng.randrange(60))
        if shop_dates:
            created = created.replace(microsecond=0)
        placed = order_event(order_id, customer, total, created=created, at=at)
        events.append(placed)
        at += timedelta(minutes=1, microseconds=rng.randrange(1_000_000))
        later = rng.choice(["order.updated", "order.refunded", "order.cancelled"])
        status = {"order.updated": "completed", "order.refunded": "refunded",
                  "order.cancelled": "cancelled"}[later]
        events.append(order_event(order_id, customer, total, status=status,
                                  refunded=total if later == "order.refunded" else 0,
                                  created=created, at=at, event_type=later))
        at += timedelta(minutes=1)
        if rng.random() < 0.5:  # an older state of the order, delivered late
            events.append(placed)
    return events


def shuffled_stream(seed: int, shop_dates: bool = True) -> list:
    """Every customer's events, interleaved at random but each customer's in order, with an
    order without a customer and duplicates delivered again later."""
    rng = random.Random(seed)
    queues = [customer_stream(customer, rng, shop_dates) for customer in CUSTOMERS]
    anonymous = order_event("anon", "c1", 999)
    anonymous.data["customer_id"] = None
    queues.append([anonymous])
    stream = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        stream.append(queue.pop(0))
    for _ in range(6):
        position = rng.randrange(len(stream))
        stream.insert(rng.randrange(position, len(stream) + 1), stream[position])
    return stream


def state(storage: SegmentationStorage) -> list[dict]:
    return list(storage.profiles.collection.find({}).sort("_id", 1))


def one_by_one(database, stream) -> SegmentationStorage:
    storage, profiles = prepared(database)
    for event in stream:
        profiles.apply_order_event(event)
    return storage


def in_batches(database, stream, size: int) -> SegmentationStorage:
    storage, profiles = prepared(database)
    for start in range(0, len(stream), size):
        profiles.apply_order_events(stream[start:start + size])
    return storage


def other_database(database, suffix: str):
    return database.client[f"{database.name}_{suffix}"]


@pytest.mark.parametrize("seed,shop_dates", [(1, True), (2, True), (3, False), (4, False)])
def test_batches_of_any_size_leave_what_one_by_one_leaves(database, seed, shop_dates):
    stream = shuffled_stream(seed, shop_dates)
    expected = state(one_by_one(other_database(database, "oracle"), stream))
    assert any(doc.get("outbox") for doc in expected)  # the stream does owe events
    assert any(len(doc.get("outbox") or []) > 3 for doc in expected)
    for size in (1, 2, 5, 17, len(stream)):
        batched = in_batches(other_database(database, f"size{size}"), stream, size)
        assert state(batched) == expected, f"batches of {size}"


def test_a_repeated_batch_changes_nothing_and_owes_nothing(database):
    stream = shuffled_stream(4)
    storage, profiles = prepared(database)
    profiles.apply_order_events(stream)
    before = state(storage)
    change = profiles.apply_order_events(stream)
    assert change.events == [] and change.touched == []
    assert state(storage) == before


def test_a_batch_reports_the_events_and_documents_one_by_one_reports(database):
    stream = shuffled_stream(5)
    storage, profiles = prepared(other_database(database, "oracle"))
    events, touched = [], []
    for event in stream:
        change = profiles.apply_order_event(event)
        events += change.events
        touched += change.touched
    _, batch_profiles = prepared(database)
    change = batch_profiles.apply_order_events(stream)
    assert sorted(change.events) == sorted(events) and events
    assert sorted(change.touched) == sorted(touched)


def test_erased_merged_and_unknown_customers_in_a_batch(database):
    storage, profiles = prepared(database)
    merged_before = storage.profiles.get("s1", MERGED)
    profiles.apply_order_events([order_event("e1", ERASED, 9000),
                                 order_event("m1", MERGED, 9000),
                                 order_event("n1", "newcomer", 9000)])
    erased = storage.profiles.get("s1", ERASED)
    assert erased["status"] == "erased" and "orders" not in erased
    merged = storage.profiles.get("s1", MERGED)
    assert set(merged["orders"]) == {"m0", "m1"}  # the fact is kept, nothing derived or owed
    assert merged["stats"] == merged_before["stats"]
    assert merged["outbox"] == merged_before["outbox"]
    newcomer = storage.profiles.get("s1", "newcomer")
    assert newcomer["version"] == 1 and newcomer["segment"] == "new"


def test_profiles_another_writer_changed_meanwhile_take_the_one_event_path(database):
    """c2 is updated and c3 inserted by another writer between the batch's read and its bulk
    write: their compare-and-set and insert lose, and their events are applied again one by
    one on top of what the other writer stored, as if it had come first."""
    rng = random.Random(6)
    c1, c2, c3 = (customer_stream(c, rng) for c in ("c1", "c2", "c3"))
    early = order_event("c2-pre", "c2", 4000, at=T0 - timedelta(hours=1))
    rival_c2 = order_event("c2-rival", "c2", 8000, at=T0 - timedelta(minutes=30))
    rival_c3 = order_event("c3-rival", "c3", 8000, at=T0 - timedelta(minutes=30))
    stream = [e for trio in zip(c1, c2, c3) for e in trio]

    oracle, oracle_profiles = prepared(other_database(database, "oracle"))
    for event in [early, rival_c2, rival_c3, *stream]:
        oracle_profiles.apply_order_event(event)

    storage, profiles = prepared(database)
    profiles.apply_order_event(early)
    read = storage.profiles.get_many

    def read_then_another_writes(keys):
        found = read(keys)
        profiles.apply_order_event(rival_c2)
        profiles.apply_order_event(rival_c3)
        return found

    storage.profiles.get_many = read_then_another_writes
    profiles.apply_order_events(stream)
    assert state(storage) == state(oracle)
    assert set(storage.profiles.get("s1", "c3")["orders"]) >= {"c3-rival", "c3-0"}


def test_a_batch_costs_one_read_of_its_profiles_and_one_write(database):
    stream = shuffled_stream(7)
    storage, profiles = prepared(database)
    calls = outer_calls(storage.profiles.collection)
    profiles.apply_order_events(stream)
    assert calls == ["find", "bulk_write"]


def test_a_write_the_write_concern_did_not_confirm_fails_the_batch_and_its_retry_completes(
        database, monkeypatch):
    """An unconfirmed write may be rolled back: the batch must fail (not be acknowledged) so
    the broker's redelivery writes it again, which leaves what one by one leaves."""
    stream = shuffled_stream(5)
    expected = state(one_by_one(other_database(database, "oracle"), stream))
    storage, profiles = prepared(database)
    applied_but_unconfirmed(storage.profiles.collection, monkeypatch)
    with pytest.raises(BulkWriteError):
        profiles.apply_order_events(stream)
    profiles.apply_order_events(stream)  # the redelivery
    assert state(storage) == expected


def test_a_batch_reads_its_profiles_without_their_owed_events(database):
    """A profile's unsent events can be many and large, and the batch path only adds to them:
    reading them would hold them all in memory for nothing."""
    storage = in_batches(database, shuffled_stream(5), 50)
    owing = [doc["_id"] for doc in state(storage) if doc.get(shared_outbox.OUTBOX_FIELD)]
    assert owing  # the stream left events unsent
    read = storage.profiles.get_many(owing)
    assert sorted(read) == sorted(owing)
    assert all(shared_outbox.OUTBOX_FIELD not in doc for doc in read.values())
