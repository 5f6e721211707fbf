"""loyalty's order events applied in batches: the same accounts, ledger and owed events as
applied one at a time, whatever the batch sizes, duplicates, conflicts and customers (unknown,
erased, merged) in them; in a few round trips."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from unittest import mock

import mongomock
import pytest
from pymongo.errors import BulkWriteError

from services.loyalty.accounts import Accounts
from services.loyalty.merges import Merges
from services.loyalty.repository import AccountRepository, AccountWrite, LoyaltyStorage
from shared import outbox
from shared.events import Event
from tests.support import Clock, storage_at
from tests.unit.test_loyalty_accounts import order_event
from tests.unit.test_loyalty_merges import merged, unmerged

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
CUSTOMERS = [f"c{n}" for n in range(8)]
# States an order goes through, each one event type; a stream stops an order anywhere along.
LIFE = [("order.placed", "processing", 0), ("order.updated", "completed", 0),
        ("order.refunded", "completed", 1_500), ("order.cancelled", "cancelled", 1_500)]


class Loyalty:
    """One database with loyalty's use cases on it, brought to the same starting state."""

    def __init__(self, database) -> None:
        self.storage = LoyaltyStorage(database)
        self.storage.ensure_indexes()
        self.clock = Clock(T0)
        self.accounts = Accounts(self.storage, clock=self.clock, choose=random.Random(7).choice)
        self.merges = Merges(self.accounts)
        self.codes: list[str] = []

    def prepare(self, earlier: list[Event], merge: Event) -> "Loyalty":
        """Two customers hold reward codes; "old" was merged into c2; "gone" was erased."""
        self.one_at_a_time(earlier)
        for customer in ("c0", "c1"):
            self.accounts.redeem("s1", customer, 500, request_id=f"r-{customer}")
            rewards = self.storage.accounts.get("s1", customer)["rewards"]
            self.codes.extend(reward["code"] for reward in rewards.values())
        self.merges.apply_merge(merge)
        self.accounts.erase("s1", ["gone"], "erasure-1")
        return self

    def one_at_a_time(self, events: list[Event]) -> None:
        for event in events:
            self.accounts.apply_order_event(event)

    def in_batches(self, events: list[Event], sizes: list[int], rng: random.Random) -> None:
        position = 0
        while position < len(events):
            size = rng.choice(sizes)
            self.accounts.apply_order_events(events[position:position + size])
            position += size

    def dump(self) -> dict:
        """Every document of every collection (owed events and journals included)."""
        database = self.storage.database
        return {name: sorted(database[name].find(), key=lambda doc: str(doc["_id"]))
                for name in sorted(database.list_collection_names())}


@pytest.fixture
def two(database, monkeypatch):
    """The database under test and an oracle beside it on the same server, both prepared by
    the same events; owed events are stamped with the pinned time."""
    monkeypatch.setattr(outbox, "utcnow", lambda: T0)
    earlier = [order_event(f"pre-{customer}", customer, 60_000, at=T0 - timedelta(days=30))
               for customer in ("c0", "c1", "old", "gone")]
    merge = merged("c2", "old")
    oracle_name = f"{database.name}_oracle"
    yield (Loyalty(database).prepare(earlier, merge),
           Loyalty(database.client[oracle_name]).prepare(earlier, merge))
    database.client.drop_database(oracle_name)


def stream(seed: int, codes: list[str]) -> list[Event]:
    """Each customer's orders through part of their life, the customers' streams shuffled
    together (each keeping its own order), some orders carrying reward codes, some guests',
    and some events delivered twice, late."""
    rng = random.Random(seed)
    per_customer: dict[str, list[Event]] = {}
    minute = 0
    for customer in [*CUSTOMERS, "old", "gone", "ghost", ""]:
        mine = per_customer.setdefault(customer or "guest", [])
        for number in range(rng.randint(1, 3)):
            order_id = f"{customer or 'g'}-{number}"
            total = rng.choice([2_000, 9_990, 25_000, 120_000])
            used = [rng.choice(codes)] if rng.random() < 0.3 else []
            for event_type, status, refunded in LIFE[:rng.randint(1, len(LIFE))]:
                minute += 1
                event = order_event(order_id, customer, total, status=status,
                                    refunded=min(refunded, total), event_type=event_type,
                                    at=T0 - timedelta(days=3) + timedelta(minutes=minute))
                if used:
                    event.data["coupon_codes"] = used
                if not customer:
                    event.data.update(customer_id=None, is_guest=True)
                mine.append(event)
    events: list[Event] = []
    queues = [list(q) for q in per_customer.values()]
    while queues:
        queue = rng.choice(queues)
        events.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    for _ in range(len(events) // 5):
        events.insert(rng.randint(0, len(events)), rng.choice(events))
    return events


@pytest.mark.parametrize("sizes", [[1], [2], [5], [1000], [1, 3, 7, 50]])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_leave_exactly_what_one_event_at_a_time_leaves(two, sizes, seed):
    batched, oracle = two
    assert batched.codes == oracle.codes and batched.dump() == oracle.dump()
    events = stream(seed, oracle.codes)
    oracle.one_at_a_time(events)
    batched.in_batches(events, sizes, random.Random(seed))
    assert batched.dump() == oracle.dump()
    # Delivered again (a redelivered batch, a retried half): nothing more is earned or owed.
    ledger = list(oracle.storage.ledger.collection.find())
    oracle.one_at_a_time(events)
    batched.in_batches(events, sizes, random.Random(seed + 1))
    assert batched.dump() == oracle.dump()
    assert list(oracle.storage.ledger.collection.find()) == ledger


def test_the_stream_touches_every_kind_of_customer(two):
    """The equality above means something: the stream earns, reverses, uses codes, and meets
    the merged, erased, unknown and guest customers."""
    batched, _ = two
    events = stream(1, batched.codes)
    batched.accounts.apply_order_events(events)
    kinds = {entry["kind"] for entry in batched.storage.ledger.collection.find()}
    assert {"earn", "reverse"} <= kinds
    rewards = [r for customer in ("c0", "c1")
               for r in batched.storage.accounts.get("s1", customer)["rewards"].values()]
    assert any(r.get("orders_using") for r in rewards)
    assert {"old", "gone", "ghost", ""} <= {e.data["customer_id"] or "" for e in events}


def test_unknown_erased_and_merged_customers_in_a_batch(two):
    batched, _ = two
    primary_before = batched.accounts.account_view("s1", "c2")["balance"]
    outcome = batched.accounts.apply_order_events([
        order_event("n-1", "newcomer", 10_000), order_event("e-1", "gone", 10_000),
        order_event("m-1", "old", 10_000), order_event("n-1", "newcomer", 10_000)])
    assert batched.accounts.account_view("s1", "newcomer")["balance"] == 1_000
    erased = batched.storage.accounts.get("s1", "gone")
    assert erased["status"] == "erased" and "orders" not in erased
    assert batched.storage.accounts.get("s1", "old")["status"] == "merged"
    # The merged record's order earns on the account it was merged into.
    earns = [(e["customer_id"], e["key"], e["delta"]) for e in outcome.entries
             if e["kind"] == "earn"]
    assert earns[0] == ("newcomer", "earn:n-1", 1_000) and earns[1][:2] == ("c2", "earn:m-1")
    assert len(earns) == 2
    assert batched.accounts.account_view("s1", "c2")["balance"] == primary_before + earns[1][2]
    assert sorted(doc for _, doc in outcome.touched) == ["s1:c2", "s1:newcomer"]


def test_accounts_changed_meanwhile_are_applied_one_event_at_a_time(two, monkeypatch):
    """Between the batch's read and its write, staff adjust c3's points and another worker
    makes c4's account: those two accounts' events go the one-event way after the write, the
    rest are written by the batch, and the outcome is that of the changes in that order."""
    batched, oracle = two
    events = [order_event("x-1", "c3", 10_000), order_event("x-2", "c5", 10_000),
              order_event("x-3", "c4", 20_000), order_event("x-4", "c3", 30_000),
              order_event("x-1", "c3", 10_000, status="completed", event_type="order.updated",
                          at=T0 + timedelta(minutes=1))]
    rival = order_event("rival", "c4", 5_000, at=T0 - timedelta(hours=1))
    earlier = order_event("pre-c3", "c3", 1_000, at=T0 - timedelta(days=1))
    oracle.accounts.apply_order_event(earlier)
    meanwhile_done = []
    read = batched.storage.accounts.get_many

    def read_then_race(keys):
        found = read(keys)
        if not meanwhile_done:
            meanwhile_done.append(True)
            batched.accounts.adjust("s1", "c3", 25, "goodwill", "staff@shop", request_id="adj")
            batched.accounts.apply_order_event(rival)
        return found

    batched.accounts.apply_order_event(earlier)
    monkeypatch.setattr(batched.storage.accounts, "get_many", read_then_race)
    written = []
    save_many = batched.storage.accounts.save_many

    def recording(changes):
        conflicted = save_many(changes)
        written.append(({c.working["_id"] for c in changes}, conflicted))
        return conflicted

    monkeypatch.setattr(batched.storage.accounts, "save_many", recording)
    batched.accounts.apply_order_events(events)

    oracle.accounts.adjust("s1", "c3", 25, "goodwill", "staff@shop", request_id="adj")
    oracle.accounts.apply_order_event(rival)
    oracle.one_at_a_time(events)
    assert written == [({"s1:c3", "s1:c4", "s1:c5"}, {"s1:c3", "s1:c4"})]
    assert batched.dump() == oracle.dump()
    assert batched.accounts.ledger_check("s1", "c3")["ok"]
    keys = {e["key"] for e in batched.storage.ledger.collection.find({"customer_id": "c3"})}
    assert keys == {"earn:pre-c3", "adjust:adj", "earn:x-1", "earn:x-4"}


def test_a_batch_costs_a_few_round_trips_whatever_its_size(two, monkeypatch):
    batched, _ = two
    calls: list[str] = []
    inside: list[str] = []  # mongomock's bulk_write calls its own methods: those do not count
    storage = batched.storage
    for collection in (storage.accounts.collection, storage.ledger.collection,
                       storage.ledger.accounts):
        for method in ("find", "find_one", "update_one", "update_many", "insert_one",
                       "insert_many", "bulk_write"):
            original = getattr(collection, method)

            def counted(*args, _original=original, _method=method, **kwargs):
                if not inside:
                    calls.append(_method)
                inside.append(_method)
                try:
                    return _original(*args, **kwargs)
                finally:
                    inside.pop()

            monkeypatch.setattr(collection, method, counted)
    events = [order_event(f"b-{n}", f"c{n % 8}", 10_000 + n) for n in range(40)]
    events[3].data["coupon_codes"] = [batched.codes[0]]
    batched.accounts.apply_order_events(events)
    # codes' holders, the accounts, one bulk write, the ledger copy and the journal pull
    assert sorted(calls) == sorted(["find", "find", "bulk_write", "insert_many", "update_many"])
    assert batched.accounts.account_view("s1", "c7")["balance"] > 0


def test_a_bulk_write_not_confirmed_at_the_write_concern_is_not_taken_as_written():
    """pymongo reports an unconfirmed bulk write as writeConcernErrors with no writeErrors;
    answering "all written" would acknowledge a batch that may be lost."""
    details = {"writeErrors": [], "writeConcernErrors": [
        {"code": 64, "errmsg": "waiting for replication timed out"}],
        "nInserted": 0, "nUpserted": 0, "nMatched": 1, "nModified": 1, "nRemoved": 0,
        "upserted": []}
    collection = mongomock.MongoClient().db.accounts
    collection.bulk_write = mock.Mock(side_effect=BulkWriteError(details))
    change = AccountWrite(3, {"_id": "s1:c1", "store_id": "s1", "customer_id": "c1"})
    with pytest.raises(BulkWriteError):
        AccountRepository(collection).save_many([change])


def test_an_unmerge_between_the_batch_reads_and_its_write_is_not_missed():
    """An order naming a merged guest is followed to the primary; the guest is only passed
    through, never written. An unmerge landing meanwhile must send the order to the guest, as
    applying it after the unmerge does, not leave it on the primary for good."""
    database = mongomock.MongoClient(tz_aware=True)["loyalty"]
    storage, clock = storage_at(LoyaltyStorage, database, T0)
    storage.ensure_indexes()
    accounts = Accounts(storage, clock=clock)
    merges = Merges(accounts)
    accounts.apply_order_event(order_event("g1", "guest", 8_000, at=T0 - timedelta(days=30)))
    accounts.apply_order_event(order_event("p1", "main", 3_000, at=T0 - timedelta(days=3)))
    merges.apply_merge(merged("main", "guest"))
    read = storage.accounts.get_many
    reads = []

    def unmerge_after_the_first_read(keys):
        reads.append(keys)
        if len(reads) == 2:  # the guest read, the hop to main not yet
            merges.apply_unmerge(unmerged("main", "guest", orders_since=("g2",)))
        return read(keys)

    storage.accounts.get_many = unmerge_after_the_first_read
    accounts.apply_order_events([order_event("g2", "guest", 5_000, at=T0 + timedelta(hours=1))])
    assert len(reads) >= 2
    main, guest = storage.accounts.get("s1", "main"), storage.accounts.get("s1", "guest")
    assert sorted(main["orders"]) == ["g1", "p1"]
    assert sorted(guest["orders"]) == ["g1", "g2"]
