"""Derived events carry the time of the fact that caused them (`fact_at`), and notifications'
trigger-age limit reads it: a shop's history, backfilled today, earns its customers tags,
segments and tiers dated in the past, which start no workflow; the same change from a live order
does."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.loyalty.accounts import Accounts
from services.loyalty.repository import LoyaltyStorage
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.segmentation import fact_times
from services.segmentation import stats as st
from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from shared.events import build_event, contract
from shared.events.facts import fact_time
from shared.outbox import OUTBOX_FIELD
from tests.support import Clock, storage_at

NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
LONG_AGO = NOW - timedelta(days=100)
BIG = 600_000  # over the default vip_min_spent (5,000.00), and 60,000 points: a top tier


def _order(event_type: str, customer: str, order_id: str, total: int, created: datetime,
           **extra) -> object:
    """An order event published now (a backfill, or a live webhook) about an order of `created`."""
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "total": {"amount": total, "currency": "EUR"},
            "shipping_total": {"amount": 0, "currency": "EUR"},
            "tax_total": {"amount": 0, "currency": "EUR"},
            "date_created": created.isoformat(), "date_paid": None,
            "date_modified": created.isoformat(), **extra}
    return build_event(event_type, store_id="s1", data=data, occurred_at=NOW)


def _owed(collection, event_type: str) -> list[dict]:
    return [e["message"]["data"] for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}})
            for e in doc[OUTBOX_FIELD] if e["message"]["event_type"] == event_type]


@pytest.fixture
def segmentation(database):
    storage, clock = storage_at(SegmentationStorage, database, NOW)
    storage.rules.insert_one({"store_id": "s1", "rule_id": "big", "name": "Big spenders",
                              "enabled": True, "position": 0, "match": "all",
                              "conditions": [{"field": "total_spent", "op": "gt", "value": 100_000}],
                              "actions": [{"type": "add_tag", "value": "big-spender"},
                                          {"type": "join_group", "value": "patrons"}]})
    return storage, Profiles(storage, clock=clock), clock


def test_segmentation_dates_what_an_order_brings_by_the_order(segmentation):
    storage, profiles, _ = segmentation
    profiles.apply_order_event(_order("order.placed", "history", "1", BIG, LONG_AGO))
    profiles.apply_order_event(_order("order.placed", "live", "2", BIG, NOW - timedelta(minutes=1)))
    collection = storage.profiles.collection
    by_customer: dict[str, set] = {}
    for event_type in ("customer.segment_changed", "customer.tagged", "customer.group_joined"):
        for data in _owed(collection, event_type):
            by_customer.setdefault(data["customer_id"], set()).add((event_type, data["fact_at"]))
    assert by_customer == {
        "history": {(t, LONG_AGO.isoformat()) for t in ("customer.segment_changed",
                                                        "customer.tagged",
                                                        "customer.group_joined")},
        "live": {(t, (NOW - timedelta(minutes=1)).isoformat())
                 for t in ("customer.segment_changed", "customer.tagged",
                           "customer.group_joined")}}
    [vip] = [d for d in _owed(collection, "customer.segment_changed") if d["customer_id"] == "live"]
    assert vip["new_segment"] == "vip"


def test_an_order_change_is_dated_by_its_modification_and_a_person_by_now(segmentation):
    storage, profiles, _ = segmentation
    profiles.apply_order_event(_order("order.placed", "c1", "1", 50_000, LONG_AGO))
    # The same old order, completed an hour ago with a bigger total (an edit at the shop).
    profiles.apply_order_event(_order(
        "order.updated", "c1", "1", BIG, LONG_AGO, status="completed", old_status="processing",
        new_status="completed", changed_fields=["status", "total"],
        date_modified=(NOW - timedelta(hours=1)).isoformat()))
    [tagged] = _owed(storage.profiles.collection, "customer.tagged")
    assert tagged["tag"] == "big-spender"
    assert tagged["fact_at"] == (NOW - timedelta(hours=1)).isoformat()
    profiles.set_tags("s1", "c1", add=["hand-picked"], actor="ops@shop.example")
    [manual] = [d for d in _owed(storage.profiles.collection, "customer.tagged")
                if d["tag"] == "hand-picked"]
    assert manual["fact_at"] == NOW.isoformat()


def test_a_recompute_dates_a_change_by_the_facts_or_the_clock_never_by_the_run(segmentation):
    """The store's first recompute puts its top spenders over the VIP cutoff: no new fact, so
    dated by their last order. A customer drifting into at risk is dated by the day the clock
    made them so (91 whole days after the last order), not by the run that noticed."""
    storage, profiles, clock = segmentation
    storage.rules.delete_many({})
    storage.settings.update("s1", {"thresholds": {"vip_min_spent": None}})
    for i, spent in enumerate((90_000, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000,
                               9_000)):
        profiles.apply_order_event(_order("order.placed", f"c{i}", f"o{i}", spent, LONG_AGO))
    # two orders 60 and 50 days ago: regular now, at risk 91 days after the last
    for order_id, days in (("r1", 60), ("r2", 50)):
        profiles.apply_order_event(_order("order.placed", "drifter", order_id, 20_000,
                                          NOW - timedelta(days=days)))
    # The backfill also refreshed c0's contact from that old order's billing (customer.updated,
    # published now): dated by the shop's time of the contact, not by its publication.
    profiles.apply_customer_event(build_event("customer.updated", store_id="s1", occurred_at=NOW,
                                              data={**contract("customer.updated").sample,
                                                    "customer_id": "c0",
                                                    "date_created": LONG_AGO.isoformat(),
                                                    "date_modified": LONG_AGO.isoformat()}))
    collection = storage.profiles.collection
    collection.update_many({}, {"$unset": {OUTBOX_FIELD: ""}})
    clock.now = NOW + timedelta(days=45)  # the drifter's last order is 95 days old
    profiles.recompute_store("s1")
    changed = {d["customer_id"]: d for d in _owed(collection, "customer.segment_changed")}
    assert changed["c0"]["new_segment"] == "vip"
    assert changed["c0"]["fact_at"] == LONG_AGO.isoformat()
    assert changed["drifter"]["new_segment"] == "at_risk"
    assert changed["drifter"]["fact_at"] == (NOW - timedelta(days=50)
                                             + timedelta(days=91)).isoformat()


def test_clock_turns_follow_thresholds_and_day_rules():
    first, last = LONG_AGO, LONG_AGO + timedelta(days=10)
    stats = st.Stats(orders_count=2, total_spent=1, first_order_at=first, last_order_at=last)
    rule = {"conditions": [{"field": "days_since_last_order", "op": "gt", "value": 14},
                           {"field": "days_since_last_order", "op": "in", "value": [3]},
                           {"field": "total_spent", "op": "gt", "value": 5}]}
    turns = fact_times.clock_turns(stats, st.Thresholds(), [rule])
    day = timedelta(days=1)
    assert sorted(turns) == sorted([first + 31 * day, first + 31 * day, last + 91 * day,
                                    last + 14 * day, last + 15 * day, last + 3 * day,
                                    last + 4 * day])
    assert fact_times.clock_turns(st.Stats(), st.Thresholds()) == []
    # the later of the newest fact and the last turn passed that changed anything; never
    # after now; now with neither
    at_risk_from = last + 15 * day

    def state(moment):
        return moment >= at_risk_from

    assert fact_times.derived_fact_at([first, None], turns, last + 20 * day, state) == at_risk_from
    assert fact_times.derived_fact_at([first], turns, last + 20 * day, lambda m: "same") == first
    assert fact_times.derived_fact_at([last + 16 * day], turns, last + 20 * day,
                                      state) == last + 16 * day
    assert fact_times.derived_fact_at([NOW + day], [], NOW, state) == NOW
    assert fact_times.derived_fact_at([None], [], NOW, state) == NOW


def test_loyalty_dates_a_tier_by_the_order_or_by_the_daily_run(database):
    storage, clock = storage_at(LoyaltyStorage, database, NOW)
    accounts = Accounts(storage, clock=clock)
    accounts.apply_order_event(_order("order.placed", "history", "1", 10_000, LONG_AGO))
    accounts.apply_order_event(_order("order.placed", "live", "2", 10_000,
                                      NOW - timedelta(minutes=2)))
    collection = storage.accounts.collection
    tiers = {d["customer_id"]: d for d in _owed(collection, "loyalty.tier_changed")}
    assert (tiers["history"]["new_tier"], tiers["history"]["fact_at"]) == (
        "silver", LONG_AGO.isoformat())
    assert tiers["live"]["fact_at"] == (NOW - timedelta(minutes=2)).isoformat()
    collection.update_many({}, {"$unset": {OUTBOX_FIELD: ""}})
    clock.now = LONG_AGO + timedelta(days=400)  # the points left the 12-month window
    accounts.daily("s1", "history")
    [down] = _owed(collection, "loyalty.tier_changed")
    assert (down["direction"], down["fact_at"]) == ("down", clock.now.isoformat())


def test_loyalty_dates_points_by_the_order_or_by_the_request(database):
    storage = LoyaltyStorage(database)
    storage.ensure_indexes()
    accounts = Accounts(storage, clock=Clock(NOW))
    accounts.apply_order_event(_order("order.placed", "history", "1", 10_000, LONG_AGO))
    [earned] = _owed(storage.accounts.collection, "loyalty.points_changed")
    assert (earned["kind"], earned["fact_at"]) == ("earn", LONG_AGO.isoformat())
    storage.accounts.collection.update_many({}, {"$unset": {OUTBOX_FIELD: ""}})
    accounts.adjust("s1", "history", 50, "goodwill", "ops@shop.example", "r-1")
    [adjusted] = _owed(storage.accounts.collection, "loyalty.points_changed")
    assert (adjusted["kind"], adjusted["fact_at"]) == ("adjust", NOW.isoformat())


def test_fact_time_reads_each_kind_of_event():
    assert fact_time("customer.tagged", {"fact_at": "2026-01-02T03:04:05+00:00"}) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert fact_time("loyalty.tier_changed", {"fact_at": None}) is None  # an older publisher
    assert fact_time("order.updated", {"date_modified": "2026-01-02T03:04:05",
                                       "date_created": "2020-01-01T00:00:00"}) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert fact_time("order.placed", {"date_created": "not a time"}) is None
    assert fact_time("loyalty.points_changed", {"fact_at": "2026-01-02T03:04:05+00:00"}) == (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert fact_time("notification.sent", {"fact_at": "2026-01-02T03:04:05+00:00"}) is None


@pytest.mark.parametrize("event_type,data,workflow_trigger", [
    ("customer.segment_changed", {"old_segment": "regular", "new_segment": "vip",
                                  "orders_count": 4, "total_spent": None},
     {"event": "customer.segment_changed", "to": "vip"}),
    ("customer.tagged", {"tag": "big-spender", "source": "rule"},
     {"event": "customer.tagged", "tag": "big-spender"}),
    ("loyalty.tier_changed", {"old_tier": "silver", "new_tier": "gold", "direction": "up",
                              "points_in_window": 5000},
     {"event": "loyalty.tier_changed", "direction": "up"}),
    ("loyalty.points_changed", {"entry_key": "earn:1", "kind": "earn", "delta": 450,
                                "balance": 450, "reason": "order 1", "order_id": "1"},
     {"event": "loyalty.points_changed"}),
])
def test_the_trigger_age_limit_reads_a_derived_events_fact(database, event_type, data,
                                                            workflow_trigger):
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    notifier = Notifier(storage, Clock(NOW))
    store = f"age-{event_type}"
    notifier.save_workflow(store, {"workflow_id": "news", "name": "News", "trigger":
                                   workflow_trigger, "channel": "email",
                                   "template": "tier_upgrade", "purpose": "marketing"})

    def event(customer: str, fact_at: datetime | None):
        return build_event(event_type, store_id=store, occurred_at=NOW, data={
            **data, "customer_id": customer,
            **({"fact_at": fact_at.isoformat()} if fact_at else {})})

    assert notifier.apply(event("history", LONG_AGO)) == 0
    assert notifier.apply(event("edge", NOW - timedelta(hours=73))) == 0
    assert notifier.apply(event("live", NOW - timedelta(minutes=1))) == 1
    assert notifier.apply(event("old-publisher", None)) == 1  # says nothing: taken as news
    assert sorted(s["customer_id"] for s in storage.sends.collection.find(
        {"store_id": store})) == ["live", "old-publisher"]
