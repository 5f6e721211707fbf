"""Customers' creations and updates applied in batches leave exactly what applying them one by
one leaves: the same profiles, versions and owed events, whatever the batch size, with
contacts older than the one held, repeats, deleted customers seen again, erased and merged
customers, and another writer racing the batch."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.unit.test_segmentation_order_batches import (CUSTOMERS, ERASED, other_database,
                                                        prepared, pinned_storage_times, state)
from tests.support import outer_calls
from tests.unit.test_segmentation_profiles import T0, customer_event, order_event

__all__ = ["pinned_storage_times"]  # the autouse fixture, applied here too
DELETED = "c6"
# Built once, so every database is given the same events (ids and correlation ids).
FIRST_ORDERS = [order_event(f"{customer}-first", customer, 5000 + 100 * n,
                            at=T0 - timedelta(days=1)) for n, customer in enumerate(CUSTOMERS)]
DELETION = customer_event("customer.deleted", DELETED, T0 - timedelta(hours=1))


def with_history(database):
    """`prepared`, plus every customer's first order and one customer deleted by the shop."""
    storage, profiles = prepared(database)
    for event in FIRST_ORDERS:
        profiles.apply_order_event(event)
    profiles.apply_customer_deleted(DELETION)
    return storage, profiles


def contact_stream(seed: int) -> list:
    """Creations and updates of every customer, interleaved: addresses that change and change
    back, contacts older than one already delivered, repeats, and one of a deleted customer
    from before their deletion."""
    rng = random.Random(seed)
    stream = []
    for step in range(60):
        customer = rng.choice(CUSTOMERS + ["newcomer"])
        kind = rng.choice(["customer.created", "customer.updated"])
        at = T0 + timedelta(minutes=rng.randrange(-90, 90), microseconds=rng.randrange(10 ** 6))
        email = rng.choice([f"{customer}@example.com", f"{customer}.new@example.com"])
        stream.append(customer_event(kind, customer, at, email=email))
        if rng.random() < 0.15:
            stream.append(stream[rng.randrange(len(stream))])  # a repeat, now or later
    stream.append(customer_event("customer.updated", DELETED, T0 - timedelta(hours=2)))
    return stream


def one_by_one(database, stream):
    storage, profiles = with_history(database)
    for event in stream:
        profiles.apply_customer_event(event)
    return profiles


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_of_any_size_leave_what_one_by_one_leaves(database, seed):
    stream = contact_stream(seed)
    oracle = one_by_one(other_database(database, "oracle"), stream)
    expected = state(oracle.storage)
    # The whole stream delivered again, one by one: a contact held as of an older time than
    # an identical newer one it skipped can take a later-delivered change again.
    again = [oracle.apply_customer_event(event) for event in stream]
    expected_again = state(oracle.storage)
    by_id = {doc["customer_id"]: doc for doc in expected}
    assert by_id[DELETED]["status"] == "active"  # seen again after their deletion
    assert by_id[ERASED]["status"] == "erased" and "contact" not in by_id[ERASED]
    assert by_id["newcomer"]["contact"]["email"].startswith("newcomer")
    for size in (1, 2, 7, len(stream)):
        storage, profiles = with_history(other_database(database, f"size{size}"))
        for start in range(0, len(stream), size):
            profiles.apply_customer_events(stream[start:start + size])
        assert state(storage) == expected, f"batches of {size}"
        change = profiles.apply_customer_events(stream)  # redelivered whole
        assert sorted(change.events) == sorted(e for c in again for e in c.events)
        assert state(storage) == expected_again, f"batches of {size}, redelivered"


def test_a_batch_of_contacts_costs_one_read_and_one_write(database):
    storage, profiles = with_history(database)
    stream = [customer_event("customer.updated", customer, T0 + timedelta(minutes=n),
                             email=f"{customer}.{n}@example.com")
              for n, customer in enumerate(CUSTOMERS * 3)]
    calls = outer_calls(storage.profiles.collection)
    profiles.apply_customer_events(stream)
    assert calls == ["find", "bulk_write"]


def test_a_profile_another_writer_changed_meanwhile_takes_the_one_event_path(database):
    """c2's contact is updated by another writer between the batch's read and its write: the
    batch's compare-and-set loses and its c2 events are applied again one by one on top."""
    stream = [customer_event("customer.updated", customer, T0 + timedelta(minutes=n),
                             email=f"{customer}.{n}@example.com")
              for n, customer in enumerate(["c1", "c2", "c3", "c2"])]
    rival = customer_event("customer.updated", "c2", T0 + timedelta(minutes=2, seconds=30),
                           email="c2.rival@example.com")
    oracle = one_by_one(other_database(database, "oracle"), [rival, *stream])

    storage, profiles = with_history(database)
    read = storage.profiles.get_many

    def read_then_another_writes(keys):
        found = read(keys)
        profiles.apply_customer_event(rival)
        return found

    storage.profiles.get_many = read_then_another_writes
    profiles.apply_customer_events(stream)
    assert state(storage) == state(oracle.storage)
    assert storage.profiles.get("s1", "c2")["contact"]["email"] == "c2.3@example.com"
