"""Hostile events in notifications' projection batches. A publisher can put any text in a
customer's custom field keys, tags and ids; a batch writes each contact key by key, so a key
that is no field path ("a.b", "$where") must be written whole, as the one-event path writes
it, and never become a path of its own (a nested field, an operator, another contact's data).
A customer id naming another store's contact touches only its own store's."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.notifications import repository as repo_module
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from shared.events import build_event, contract
from shared.events.envelope import InvalidEvent
from tests.support import storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
HOSTILE_KEYS = {"a.b": "dotted", "$where": "operator", "status": "not the contact's status",
                "": "empty"}


@pytest.fixture(autouse=True)
def pinned_wall_clock(monkeypatch):
    monkeypatch.setattr(repo_module, "utcnow", lambda: T0)


def updated(customer_id: str, at: datetime, custom_fields: dict, store_id: str = "s1"):
    return build_event("customer.updated", store_id=store_id, occurred_at=at, data={
        **contract("customer.updated").sample, "customer_id": customer_id,
        "custom_fields": custom_fields})


def contacts(notifier: Notifier) -> list[dict]:
    return sorted(notifier.storage.contacts.collection.find(), key=lambda d: d["_id"])


def test_custom_field_keys_that_are_no_field_paths_are_written_whole(database):
    events = [updated("c1", T0, {"tea": "assam"}),
              updated("c1", T0 + timedelta(seconds=1), HOSTILE_KEYS),
              updated("c2", T0, HOSTILE_KEYS),
              updated("c2", T0 + timedelta(seconds=1), {"a.b": "changed", "tea": "earl"})]
    oracle, _ = storage_at(NotificationsStorage, database.client[f"{database.name}_o"], T0)
    one_at_a_time = Notifier(oracle, lambda: T0)
    for event in events[:1] + events[2:3]:
        one_at_a_time.apply(event)
    storage, clock = storage_at(NotificationsStorage, database, T0)
    batched = Notifier(storage, clock)
    batched.apply_all(events[:1] + events[2:3])  # inserted
    batched.apply_all(events[1:2] + events[3:])  # then updated over what is held
    for event in events[1:2] + events[3:]:
        one_at_a_time.apply(event)
    assert contacts(batched) == contacts(one_at_a_time)
    c1, c2 = (storage.contacts.get("s1", c) for c in ("c1", "c2"))
    assert c1["custom_fields"] == HOSTILE_KEYS and c1["status"] == "active"
    assert c2["custom_fields"] == {"a.b": "changed", "tea": "earl"}
    assert "a" not in c1["custom_fields"] and "where" not in c1


def test_a_customer_id_of_another_store_touches_only_its_own_store(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.apply(updated("c1", T0, {"tea": "assam"}, store_id="s1"))
    notifier.apply_all([updated("c1", T0 + timedelta(seconds=1), {"tea": "earl"},
                                store_id="s2")])
    assert storage.contacts.get("s1", "c1")["custom_fields"] == {"tea": "assam"}
    assert storage.contacts.get("s2", "c1")["custom_fields"] == {"tea": "earl"}



def tagged(customer_id: str, at: datetime, tag: str):
    return build_event("customer.tagged", store_id="s1", occurred_at=at, data={
        **contract("customer.tagged").sample, "customer_id": customer_id, "tag": tag})


@pytest.mark.parametrize("tag", ["$where", "a.b", "A", ""])
def test_a_tag_that_is_no_field_path_never_reaches_the_projection(tag):
    """A batch writes a tag by its own path (`tags.<tag>`), even into a map the contact does
    not hold yet: the contract lets only slugs through."""
    with pytest.raises(InvalidEvent, match="tag"):
        tagged("c1", T0, tag)


@pytest.mark.parametrize("tag", ["status", "tags", "email"])
def test_tags_named_like_fields_on_a_contact_that_holds_no_tag_map(database, tag):
    """A map the contact does not hold yet is written key by key: a tag named like one of the
    contact's fields stays a key of the map, as one at a time."""
    created = build_event("customer.created", store_id="s1", occurred_at=T0, data={
        **contract("customer.created").sample, "customer_id": "c1"})
    events = [tagged("c1", T0 + timedelta(seconds=1), "vip"),
              tagged("c1", T0 + timedelta(seconds=2), tag)]
    results = []
    for suffix, batched in (("one", False), ("batch", True)):
        storage, clock = storage_at(NotificationsStorage,
                                    database.client[f"{database.name}_{suffix}"], T0)
        notifier = Notifier(storage, clock)
        notifier.apply(created)
        storage.contacts.collection.update_one({}, {"$unset": {"tags": "", "tag_at": ""}})
        if batched:
            notifier.apply_all(events)
        else:
            for one in events:
                notifier.apply(one)
        results.append(contacts(notifier))
    assert results[0] == results[1]
    [contact] = results[1]
    assert contact["status"] == "active" and contact["tags"] == {"vip": True, tag: True}
