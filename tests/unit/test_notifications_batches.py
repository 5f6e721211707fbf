"""notifications' projection applied a batch at a time (`Notifier.apply_all`) gives exactly what
applying its events one at a time gives: the same contacts, sends and owed events, in fewer
round trips; a contact changed under a batch has its events go the one-event way."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from pymongo.errors import BulkWriteError

from services.notifications import projection as proj
from services.notifications import repository as repo_module
from services.notifications.notifier import GATE_SECONDS, Notifier
from services.notifications.repository import ERASED, NotificationsStorage
from shared import read_cache
from shared.events import build_event, contract
from tests.support import applied_but_unconfirmed, outer_calls, storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
STORE = "s1"
WORKFLOWS = (
    {"workflow_id": "vip", "name": "VIP", "trigger": {"event": "customer.tagged", "tag": "vip"},
     "delay_seconds": 3600, "channel": "email", "template": "win_back", "purpose": "marketing"},
    {"workflow_id": "first", "name": "First order",
     "trigger": {"event": "order.placed", "first_order": True}, "delay_seconds": 0,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
    {"workflow_id": "done", "name": "Completed",
     "trigger": {"event": "order.updated", "to_status": "completed"}, "delay_seconds": 0,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
    {"workflow_id": "hello", "name": "Welcome",
     "trigger": {"event": "customer.created"}, "delay_seconds": 0,
     "channel": "email", "template": "win_back", "purpose": "marketing"},
    {"workflow_id": "earned", "name": "Points earned",
     "trigger": {"event": "loyalty.points_changed"}, "delay_seconds": 0,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
    {"workflow_id": "gold", "name": "Gold",
     "trigger": {"event": "loyalty.tier_changed", "to": "gold"}, "delay_seconds": 0,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
    {"workflow_id": "reward", "name": "Reward",
     "trigger": {"event": "loyalty.reward_issued"}, "delay_seconds": 0,
     "channel": "email", "template": "win_back", "purpose": "transactional"},
)


@pytest.fixture(autouse=True)
def pinned_wall_clock(monkeypatch):
    """Documents note when they were made by the wall clock: pinned, so two runs compare."""
    monkeypatch.setattr(repo_module, "utcnow", lambda: T0)


def make_notifier(database) -> Notifier:
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    for workflow in WORKFLOWS:
        notifier.save_workflow(STORE, dict(workflow))
    return notifier


def event(kind: str, customer_id: str, at: datetime, seq: int, **data) -> object:
    """An event of the sample's shape whose facts are as new as it (so workflows start);
    `entry_kind` is a points entry's `kind`."""
    if "entry_kind" in data:
        data["kind"] = data.pop("entry_kind")
    sample = contract(kind).sample
    fresh = {name: at.isoformat() for name in ("fact_at", "date_created", "date_modified")
             if name in sample}
    return build_event(kind, store_id=STORE, occurred_at=at,
                       event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{customer_id}:{seq}")),
                       data={**sample, **fresh, "customer_id": customer_id, **data})


def customer_stream(rng: random.Random, customer_id: str) -> list:
    """One customer's events, in the order they are delivered: times go back now and then
    (an older fact after a newer one), and some events come twice."""
    events, seq = [], 0
    for _ in range(rng.randint(3, 12)):
        seq += 1
        at = T0 + timedelta(seconds=rng.randint(-300, 300), microseconds=rng.randint(0, 999_999))
        kind = rng.choice(["customer.created", "customer.updated", "customer.tagged",
                           "customer.untagged", "customer.group_joined", "customer.group_left",
                           "customer.segment_changed", "customer.saved_segment_entered",
                           "customer.saved_segment_left", "order.placed", "order.updated",
                           "loyalty.points_changed", "loyalty.tier_changed",
                           "loyalty.reward_issued", "loyalty.points_expiring"])
        extra: dict = {}
        if kind in ("customer.created", "customer.updated"):
            extra = {"email": f"{customer_id}.{seq}@example.com",
                     "first_name": rng.choice(["Ada", "Bo", ""]),
                     "custom_fields": rng.choice([{}, {"tea": "assam"}, {"tea": "earl", "n": 2}])}
        elif kind in ("customer.tagged", "customer.untagged"):
            extra = {"tag": rng.choice(["vip", "news"])}
        elif kind in ("customer.group_joined", "customer.group_left"):
            extra = {"group": rng.choice(["wholesale", "retail"])}
        elif kind == "customer.segment_changed":
            extra = {"new_segment": rng.choice(["new", "regular", "at_risk"])}
        elif kind in ("customer.saved_segment_entered", "customer.saved_segment_left"):
            extra = {"segment_id": rng.choice(["gift-buyers", "tea-fans"])}
        elif kind == "loyalty.points_changed":
            delta = rng.choice([-50, 100, 450])
            extra = {"entry_kind": "earn" if delta > 0 else "reverse", "delta": delta,
                     "balance": rng.randint(0, 2000), "entry_key": f"e:{seq}"}
        elif kind == "loyalty.tier_changed":
            extra = {"new_tier": rng.choice(["silver", "gold"]), "direction": "up"}
        elif kind in ("loyalty.reward_issued", "loyalty.points_expiring"):
            extra = {}
        elif kind == "order.placed":
            extra = {"order_id": str(rng.randint(1, 4)),
                     "date_created": (at - timedelta(days=rng.randint(0, 3))).isoformat()}
        else:
            extra = {"order_id": str(rng.randint(1, 4)),
                     "old_status": "processing", "new_status": rng.choice(["completed",
                                                                           "on-hold"])}
        one = event(kind, customer_id, at, seq, **extra)
        events.append(one)
        if rng.random() < 0.2:
            events.append(one)  # delivered twice
    return events


def interleaved(seed: int, customers: list[str]) -> list:
    """Every customer's stream, shuffled among customers, each customer's in its own order."""
    rng = random.Random(seed)
    streams = {c: customer_stream(rng, c) for c in customers}
    order = [c for c, events in streams.items() for _ in events]
    rng.shuffle(order)
    positions = dict.fromkeys(customers, 0)
    out = []
    for customer_id in order:
        out.append(streams[customer_id][positions[customer_id]])
        positions[customer_id] += 1
    return out


def prepared(notifier: Notifier) -> None:
    """Contacts a batch meets in every state: erased, merged, deleted."""
    notifier.apply(event("customer.created", "erased", T0 - timedelta(days=1), 0))
    notifier.erase(STORE, ["erased"], "r1")
    notifier.apply(event("customer.created", "merged", T0 - timedelta(days=1), 0))
    notifier.storage.contacts.mark_merged(STORE, "merged", "c1")
    notifier.storage.contacts.apply(STORE, "deleted", "status_at", T0 - timedelta(days=1),
                                    {"status": "deleted"})


def state(notifier: Notifier) -> dict:
    storage = notifier.storage
    return {"contacts": sorted(storage.contacts.collection.find(), key=lambda d: d["_id"]),
            "sends": sorted(storage.sends.collection.find(), key=lambda d: d["_id"])}


CUSTOMERS = [f"c{n}" for n in range(1, 9)] + ["erased", "merged", "deleted"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_of_any_size_give_what_one_at_a_time_gives(database, seed):
    events = interleaved(seed, CUSTOMERS)
    oracle = make_notifier(database.client[f"{database.name}_oracle"])
    prepared(oracle)
    oracle_scheduled = sum(oracle.apply(e) for e in events)
    expected = state(oracle)
    assert expected["sends"], "the stream starts workflows"
    for size in (1, 2, 7, 50, len(events)):
        batched = make_notifier(database.client[f"{database.name}_b{size}"])
        prepared(batched)
        scheduled = sum(batched.apply_all(events[i:i + size])
                        for i in range(0, len(events), size))
        assert state(batched) == expected, f"batches of {size}"
        assert scheduled == oracle_scheduled
        # The same batches again (a redelivery) change nothing.
        assert sum(batched.apply_all(events[i:i + size])
                   for i in range(0, len(events), size)) == 0
        assert state(batched) == expected


FACT_EVENTS = {  # a fact event of each source, with what its contract asks
    "customer.tagged": {"tag": "news"},
    "loyalty.points_changed": {"entry_kind": "reverse", "delta": -5, "balance": 10},
    "loyalty.tier_changed": {"new_tier": "silver", "direction": "up"},
}


@pytest.mark.parametrize("kind", sorted(FACT_EVENTS))
def test_a_batch_reads_once_and_writes_once(database, kind):
    notifier = make_notifier(database)
    extra = FACT_EVENTS[kind]
    events = [event(kind, f"c{n}", T0, n, **extra) for n in range(20)]
    notifier.apply_all(events[:10])  # half of them are held already
    calls = outer_calls(notifier.storage.contacts.collection,
                        ("find", "find_one", "update_one", "insert_one", "bulk_write",
                         "find_one_and_update"))
    later = [event(kind, f"c{n}", T0 + timedelta(seconds=1), 100 + n, **extra)
             for n in range(20)]
    notifier.apply_all(later)
    assert calls == ["find", "bulk_write"]


def test_a_contact_changed_under_the_batch_goes_the_one_event_way(database, monkeypatch):
    notifier = make_notifier(database)
    contacts = notifier.storage.contacts
    notifier.apply(event("customer.created", "c1", T0, 0))
    notifier.apply(event("customer.created", "c2", T0, 0))
    read = contacts.of_keys

    def read_then_raced(keys):
        held = read(keys)
        # Another instance applies a newer tag to c1, and creates c3, between read and write.
        contacts.apply(STORE, "c1", "tag_at.vip", T0 + timedelta(hours=1), {"tags.vip": True})
        contacts.apply(STORE, "c3", "contact_at", T0 + timedelta(hours=1), {"email": "new@x"})
        return held

    monkeypatch.setattr(contacts, "of_keys", read_then_raced)
    scheduled = notifier.apply_all([
        event("customer.untagged", "c1", T0 + timedelta(minutes=1), 1, tag="vip"),
        event("customer.tagged", "c2", T0 + timedelta(minutes=1), 1, tag="vip"),
        event("customer.created", "c3", T0 + timedelta(minutes=1), 1, email="old@x"),
        event("customer.tagged", "c3", T0 + timedelta(minutes=1), 2, tag="vip")])
    c1, c2, c3 = (contacts.get(STORE, c) for c in ("c1", "c2", "c3"))
    assert c1["tags"] == {"vip": True}  # the newer tag held: the older untag changed nothing
    assert c1["tag_at"]["vip"] == T0 + timedelta(hours=1)
    assert c2["tags"] == {"vip": True}
    assert c3["email"] == "new@x" and c3["tags"] == {"vip": True}  # the insert lost, redone
    assert scheduled == 3  # c2's VIP message, c3's welcome and VIP messages, once each
    assert sorted((s["customer_id"], s["workflow_id"])
                  for s in notifier.storage.sends.collection.find()) == \
        [("c1", "hello"), ("c2", "hello"), ("c2", "vip"), ("c3", "hello"), ("c3", "vip")]


def test_facts_within_one_millisecond_compare_as_stored(database):
    """MongoDB keeps times (stored and queried) to the millisecond: a fact 200 microseconds
    newer than the one held, in the same millisecond, is not newer, batched or not."""
    at = T0 + timedelta(microseconds=300)
    batch = [event("customer.segment_changed", "c1", at, 1, new_segment="vip"),
             event("customer.segment_changed", "c1", at + timedelta(microseconds=200), 2,
                   new_segment="at_risk")]
    oracle = make_notifier(database.client[f"{database.name}_oracle"])
    for one in batch:
        oracle.apply(one)
    batched = make_notifier(database)
    batched.apply_all(batch)
    assert batched.storage.contacts.get(STORE, "c1")["segment"] == "vip"
    assert state(batched) == state(oracle)


def test_erased_merged_and_unknown_contacts_in_a_batch_as_one_at_a_time(database):
    batch = [event("customer.updated", "erased", T0, 1, email="back@example.com"),
             event("order.placed", "erased", T0, 2, order_id="9"),
             event("customer.tagged", "merged", T0, 3, tag="vip"),
             event("order.placed", "unknown", T0, 4, order_id="7"),
             event("customer.group_left", "deleted", T0, 5, group="retail")]
    oracle = make_notifier(database.client[f"{database.name}_oracle"])
    prepared(oracle)
    for one in batch:
        oracle.apply(one)
    batched = make_notifier(database)
    prepared(batched)
    batched.apply_all(batch)
    assert state(batched) == state(oracle)
    erased = batched.storage.contacts.stored(STORE, "erased")
    assert erased["status"] == ERASED and "email" not in erased and not erased.get("order_ids")
    assert batched.storage.contacts.get(STORE, "merged")["tags"] == {"vip": True}
    assert batched.storage.contacts.get(STORE, "unknown")["order_ids"] == ["7"]


def test_whether_an_event_type_starts_workflows_follows_saves_at_once(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    assert not notifier.starts_workflows("order.updated")
    completed = {"workflow_id": "done", "name": "Completed",
                 "trigger": {"event": "order.updated", "to_status": "completed"},
                 "delay_seconds": 0, "channel": "email", "template": "win_back",
                 "purpose": "transactional"}
    notifier.save_workflow("other-store", {**completed, "enabled": False})
    assert not notifier.starts_workflows("order.updated")  # a disabled one starts nothing
    notifier.save_workflow("other-store", completed)
    assert notifier.starts_workflows("order.updated")  # any store's, at once
    assert not notifier.starts_workflows("customer.created")
    notifier.delete_workflow("other-store", "done")
    assert not notifier.starts_workflows("order.updated")


def _without_maps(notifier: Notifier, customer_id: str) -> None:
    """A contact stored before its maps were made with it: none of them held."""
    notifier.storage.contacts.collection.update_one(
        {"_id": notifier.storage.contacts.key(STORE, customer_id)},
        {"$unset": {name: "" for name in ("tags", "tag_at", "groups", "group_at",
                                          "saved_segments", "saved_segment_at")}})


@pytest.mark.parametrize("maps_held", [True, False])
def test_two_batches_racing_on_a_contact_keep_both_keys_of_its_maps(database, monkeypatch,
                                                                     maps_held):
    """Two batches (two instances, or a tagged and an untagged thread) read one contact before
    either writes: each must add its own key to the contact's maps, not set a map whole over
    the other's key."""
    first = [event("customer.tagged", "c1", T0 + timedelta(seconds=1), 1, tag="vip"),
             event("customer.group_joined", "c1", T0 + timedelta(seconds=1), 2, group="g1"),
             event("customer.saved_segment_entered", "c1", T0 + timedelta(seconds=1), 3,
                   segment_id="a1")]
    second = [event("customer.tagged", "c1", T0 + timedelta(seconds=2), 4, tag="news"),
              event("customer.group_joined", "c1", T0 + timedelta(seconds=2), 5, group="g2"),
              event("customer.saved_segment_entered", "c1", T0 + timedelta(seconds=2), 6,
                    segment_id="b2")]
    created = event("customer.created", "c1", T0, 0)
    oracle = make_notifier(database.client[f"{database.name}_oracle"])
    oracle.apply(created)
    if not maps_held:
        _without_maps(oracle, "c1")
    for one in first + second:
        oracle.apply(one)
    notifier = make_notifier(database)
    notifier.apply(created)
    if not maps_held:
        _without_maps(notifier, "c1")
    contacts = notifier.storage.contacts
    read = contacts.of_keys
    raced: list[bool] = []

    def read_then_raced(keys):
        held = read(keys)
        if not raced:
            raced.append(True)
            notifier.apply_all(second)  # the other batch, between this one's read and write
        return held

    monkeypatch.setattr(contacts, "of_keys", read_then_raced)
    notifier.apply_all(first)
    batched, expected = contacts.get(STORE, "c1"), oracle.storage.contacts.get(STORE, "c1")
    for name in ("tags", "tag_at", "groups", "group_at", "saved_segments", "saved_segment_at"):
        assert batched[name] == expected[name], name
    assert batched["saved_segments"] == {"a1": True, "b2": True}
    assert [d["customer_id"] for d in contacts.in_audience(STORE, "saved_segment", "a1")] == \
        ["c1"]


def test_a_map_whose_keys_are_no_field_path_is_still_set_whole():
    """A key with "." or a leading "$" cannot be written as a path: its map is set whole."""
    assert proj.changes({}, {"tags": {"$x": True}}) == ({"tags": {"$x": True}}, [])
    assert proj.changes({"tags": {"a": True}}, {"tags": {"a": True, "b.c": True}}) == \
        ({"tags": {"a": True, "b.c": True}}, [])
    assert proj.changes({}, {"tags": {"vip": True}}) == ({"tags.vip": True}, [])


def test_a_write_the_write_concern_did_not_confirm_fails_the_batch_and_its_retry_completes(
        database, monkeypatch):
    """An unconfirmed write may be rolled back: the batch must fail (not be acknowledged) so
    the broker's redelivery writes it again, which leaves what one at a time leaves."""
    events = interleaved(4, CUSTOMERS)
    oracle = make_notifier(database.client[f"{database.name}_oracle"])
    prepared(oracle)
    for one in events:
        oracle.apply(one)
    notifier = make_notifier(database)
    prepared(notifier)
    applied_but_unconfirmed(notifier.storage.contacts.collection, monkeypatch)
    with pytest.raises(BulkWriteError):
        notifier.apply_all(events)
    notifier.apply_all(events)  # the redelivery
    assert state(notifier) == state(oracle)


def test_a_workflow_enabled_through_another_instance_opens_the_gate_within_a_second(
        database, monkeypatch):
    """The gate's answer for all stores is read on nearly every delivery, so it is nearly
    always remembered: it must not outlive a second, or events of a workflow enabled through
    another instance are acknowledged unread for the stores' five seconds."""
    now = [100.0]
    monkeypatch.setattr(read_cache.time, "monotonic", lambda: now[0])
    here = Notifier(*storage_at(NotificationsStorage, database, T0))
    there = make_notifier(database)  # another instance: it saves WORKFLOWS, "done" among them
    there.delete_workflow(STORE, "done")
    assert not here.starts_workflows("order.updated")  # remembered from now on
    there.save_workflow(STORE, dict(WORKFLOWS[2]))
    now[0] += GATE_SECONDS - 0.1
    assert not here.starts_workflows("order.updated")
    now[0] += 0.1
    assert here.starts_workflows("order.updated")
