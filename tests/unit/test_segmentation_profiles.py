"""Segmentation's profiles on an in-memory MongoDB: events in, state and owed events out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from shared.events import build_event, contract
from shared.outbox import OUTBOX_FIELD

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup(database):
    storage = SegmentationStorage(database)
    storage.ensure_indexes()
    clock = Clock()
    return storage, Profiles(storage, clock=clock), clock


def order_event(order_id: str, customer: str, total: int, *, status: str = "processing",
                refunded: int = 0, created: datetime = T0, at: datetime = T0,
                event_type: str = "order.placed"):
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "status": status,
            "total": {"amount": total, "currency": "EUR"},
            "total_refunded": {"amount": refunded, "currency": "EUR"},
            "date_created": created.isoformat()}
    if event_type == "order.refunded":
        data["refund_delta"] = {"amount": refunded, "currency": "EUR"}
    if event_type == "order.cancelled":
        data["old_status"] = "processing"
    return build_event(event_type, store_id="s1", data=data, occurred_at=at)


def owed(storage) -> list[dict]:
    out = []
    for doc in storage.profiles.collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}}):
        out.extend(e["message"] for e in doc[OUTBOX_FIELD])
    return out


def test_first_order_makes_a_new_customer_and_redelivery_changes_nothing(setup):
    storage, profiles, _ = setup
    event = order_event("1", "c1", 4990)
    profiles.apply_order_event(event)
    profiles.apply_order_event(event)
    doc = storage.profiles.get("s1", "c1")
    assert doc["segment"] == "new" and doc["stats"]["total_spent"] == 4990
    changes = [m for m in owed(storage) if m["event_type"] == "customer.segment_changed"]
    assert [(m["data"]["old_segment"], m["data"]["new_segment"]) for m in changes] == [(None, "new")]


def test_an_older_state_of_an_order_after_a_newer_one_is_ignored(setup):
    storage, profiles, _ = setup
    profiles.apply_order_event(order_event("1", "c1", 4990, status="cancelled",
                                           at=T0 + timedelta(minutes=5), event_type="order.cancelled"))
    profiles.apply_order_event(order_event("1", "c1", 4990, at=T0))  # placed, delivered late
    doc = storage.profiles.get("s1", "c1")
    assert doc["orders"]["1"]["status"] == "cancelled"
    assert doc["stats"]["orders_count"] == 0


def test_a_refund_drops_a_vip_below_the_threshold(setup):
    storage, profiles, _ = setup
    profiles.apply_order_event(order_event("1", "c1", 550_000))
    assert storage.profiles.get("s1", "c1")["segment"] == "vip"
    profiles.apply_order_event(order_event("1", "c1", 550_000, refunded=60_000,
                                           at=T0 + timedelta(minutes=1),
                                           event_type="order.refunded"))
    assert storage.profiles.get("s1", "c1")["segment"] == "new"
    changes = [m["data"]["new_segment"] for m in owed(storage)
               if m["event_type"] == "customer.segment_changed"]
    assert changes == ["vip", "new"]


def test_recompute_store_finds_drift_and_the_store_wide_cutoffs(setup):
    storage, profiles, clock = setup
    for n in range(20):
        for k in range(2):
            created = T0 - timedelta(days=100 + k)
            clock.now = created  # applied when they happened: the customers were new then
            profiles.apply_order_event(order_event(f"{n}-{k}", f"c{n}", 10_000 * (n + 1),
                                                   created=created, at=created))
    clock.now = T0
    before = {d["customer_id"]: d["segment"] for d in storage.profiles.collection.find()}
    counts = profiles.recompute_store("s1")
    assert counts["profiles"] == 20 and counts["changed"] == 20
    after = {d["customer_id"]: d["segment"] for d in storage.profiles.collection.find()}
    # two orders, none in 90 days, valuable: at risk now, whatever they were
    assert set(after.values()) == {"at_risk"}
    assert before != after
    assert counts["vip_cutoff"] == 2 * 10_000 * 19  # top 10% of 20 customers: the best 2
    settings = storage.settings.get("s1")
    assert settings["rfm_cutoffs"]["monetary"]
    assert all(d["rfm"]["monetary"] in range(1, 6) for d in storage.profiles.collection.find())
    # Nothing changed since: a second recompute writes nothing and owes nothing new.
    owed_before = len(owed(storage))
    again = profiles.recompute_store("s1")
    assert again["changed"] == 0 and len(owed(storage)) == owed_before


def test_merge_moves_a_guests_orders_to_the_registered_customer(setup):
    storage, profiles, _ = setup
    profiles.apply_order_event(order_event("1", "guest", 3000))
    profiles.apply_order_event(order_event("2", "reg", 4000))
    merge = build_event("customer.merged", store_id="s1",
                        data={"customer_id": "reg", "merged_customer_id": "guest"})
    profiles.apply_merge(merge)
    assert storage.profiles.get("s1", "reg")["stats"]["orders_count"] == 2
    assert storage.profiles.get("s1", "guest")["status"] == "merged"


def test_store_report(setup):
    from services.segmentation.reports import store_report

    storage, profiles, clock = setup
    for n in range(10):
        for k in range(1 + (n >= 7)):  # customers 7, 8, 9 ordered twice
            created = T0 - timedelta(days=10 + 40 * k + (100 if n == 0 else 0))
            clock.now = created
            profiles.apply_order_event(order_event(f"{n}-{k}", f"c{n}", 1000 * (n + 1),
                                                   created=created, at=created))
    clock.now = T0
    profiles.set_groups("s1", "c9", add=["wholesale"])
    report = store_report(storage.profiles.collection.find(), T0, "month")
    assert report["buyers"] == 10
    assert report["repeat_purchase_rate"] == 0.3
    assert report["churn_rate"] == 0.1  # c0's only order was 110 days ago
    total = sum(1000 * (n + 1) * (1 + (n >= 7)) for n in range(10))
    assert report["lifetime_value"]["total"] == total
    assert report["top_10_percent_revenue_share"] == round(20000 / total, 4)
    assert report["average_order_value_by_group"] == {"wholesale": 10000}
    assert sum(row["count"] for row in report["new_customers"]) == 10
    with pytest.raises(ValueError):
        store_report([], T0, "year")
