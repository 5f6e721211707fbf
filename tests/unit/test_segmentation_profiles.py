"""Segmentation's profiles on an in-memory MongoDB: events in, state and owed events out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.segmentation.profiles import Profiles
from services.segmentation.repository import SegmentationStorage
from shared.events import build_event, contract
from shared.outbox import OUTBOX_FIELD
from tests.support import storage_at

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)



@pytest.fixture
def setup(database):
    storage, clock = storage_at(SegmentationStorage, database, T0)
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
    if event_type == "order.updated":
        data.update(old_status="processing", new_status=status, changed_fields=["status"])
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


def customer_event(event_type: str, customer: str, at: datetime, email: str = "ada@example.com"):
    if event_type == "customer.deleted":
        data = {"customer_id": customer, "woo_customer_id": 42}
    else:
        data = {**contract(event_type).sample, "customer_id": customer, "email": email}
    return build_event(event_type, store_id="s1", data=data, occurred_at=at)


def test_a_deleted_customer_keeps_their_facts_but_leaves_segments_and_says_nothing(setup):
    storage, profiles, clock = setup
    profiles.apply_customer_event(customer_event("customer.created", "c1", T0))
    profiles.apply_order_event(order_event("1", "c1", 4990))
    profiles.apply_order_event(order_event("2", "c2", 4990))
    owed_before = len(owed(storage))
    profiles.apply_customer_deleted(customer_event("customer.deleted", "c1", T0 + timedelta(hours=1)))
    doc = storage.profiles.get("s1", "c1")
    assert doc["status"] == "deleted" and doc["orders"]["1"]["total"] == 4990
    # an order update still lands as a fact, but derives and publishes nothing
    profiles.apply_order_event(order_event("1", "c1", 4990, status="completed",
                                           at=T0 + timedelta(hours=2), event_type="order.updated"))
    assert storage.profiles.get("s1", "c1")["orders"]["1"]["status"] == "completed"
    assert len(owed(storage)) == owed_before
    # not in segment listings, recomputes or reports
    members, _ = profiles.members("s1", {"match": "all", "conditions": [
        {"field": "segment", "op": "eq", "value": "new"}]}, None, 10)
    assert [m["customer_id"] for m in members] == ["c2"]
    assert profiles.recompute_store("s1")["profiles"] == 1
    # a customer event from before the deletion, delivered late, does not bring them back
    profiles.apply_customer_event(customer_event("customer.updated", "c1", T0 + timedelta(minutes=30)))
    assert storage.profiles.get("s1", "c1")["status"] == "deleted"
    # manual tags are refused with the reason
    from shared.errors import Conflict
    with pytest.raises(Conflict, match="deleted"):
        profiles.set_tags("s1", "c1", add=["gift"])


def test_a_deletion_older_than_the_latest_customer_event_is_ignored(setup):
    storage, profiles, _ = setup
    profiles.apply_customer_event(customer_event("customer.updated", "c1", T0 + timedelta(hours=1)))
    profiles.apply_customer_deleted(customer_event("customer.deleted", "c1", T0))
    assert storage.profiles.get("s1", "c1")["status"] == "active"


def test_erasure_leaves_a_marker_holding_nothing_and_late_events_do_not_recreate(setup):
    storage, profiles, _ = setup
    profiles.apply_customer_event(customer_event("customer.created", "c1", T0))
    profiles.apply_order_event(order_event("1", "c1", 600_000))  # a VIP, tagged by a person too
    profiles.set_tags("s1", "c1", add=["gift"])
    # the profile now holds the name and email the customer list shows (and its sort keys)
    from shared.personal_data import search_personal_data
    terms = ["Lovelace", "ada@example.com"]
    assert storage.profiles.get("s1", "c1")["contact"]["last_name"] == "Lovelace"
    assert search_personal_data(storage.database, "s1", terms) == [
        {"collection": "profiles", "count": 1}]
    counts = profiles.erase("s1", ["c1", "never-seen"], "req-1")
    assert counts == {"profiles": 1}
    assert search_personal_data(storage.database, "s1", terms) == []
    for customer_id in ("c1", "never-seen"):
        doc = storage.profiles.collection.find_one({"_id": f"s1:{customer_id}"})
        assert doc["status"] == "erased" and doc["erasure_request_id"] == "req-1"
        assert set(doc) == {"_id", "store_id", "customer_id", "status", "erased_at",
                            "erasure_request_id", "had_profile", "version"}
    # redelivered and late events for either leave the markers alone
    profiles.apply_order_event(order_event("1", "c1", 600_000, status="completed",
                                           at=T0 + timedelta(hours=1), event_type="order.updated"))
    profiles.apply_customer_event(customer_event("customer.updated", "never-seen", T0 + timedelta(hours=1)))
    assert storage.profiles.get("s1", "c1")["status"] == "erased"
    assert "contact" not in storage.profiles.get("s1", "never-seen")
    assert profiles.set_tags("s1", "c1", add=["gift"]).events == []
    # asked again, the same answer
    assert profiles.erase("s1", ["c1", "never-seen"], "req-1") == {"profiles": 1}


def test_erasure_handler_confirms_once_with_counts_and_drops_parked_messages(setup):
    """The handler segmentation inherits from DataOwnerRpc erases through its profiles."""
    from types import SimpleNamespace

    from nameko.testing.services import worker_factory

    from services.segmentation.service import SegmentationService
    from shared.erasure import mentions

    storage, profiles, _ = setup
    service = worker_factory(SegmentationService,
                             app=SimpleNamespace(storage=storage, profiles=profiles))
    profiles.apply_order_event(order_event("1", "c1", 4990))
    parked = [
        {"store_id": "s1", "data": {"customer_id": "c1"}},
        {"store_id": "s2", "data": {"customer_id": "c1"}},  # another store's customer c1
        {"store_id": "s9", "data": {"email": "ADA@example.com"}},
        {"store_id": "s1", "data": {"customer_id": "c2"}},
    ]

    def drop_parked(matches):
        dropped = [body for body in parked if matches(body)]
        parked[:] = [body for body in parked if not matches(body)]
        return len(dropped)

    service._drop_parked = drop_parked  # the broker's parked queue, here a list
    request = build_event("gdpr.erasure_requested", store_id="s1",
                          data={"request_id": "req-1", "customer_ids": ["c1"],
                                "email": "ada@example.com"})
    service.on_erasure_requested(request)
    service.outbox.notify.assert_called_once_with([("erasures", "s1:req-1")])
    assert parked == [{"store_id": "s2", "data": {"customer_id": "c1"}},
                      {"store_id": "s1", "data": {"customer_id": "c2"}}]
    receipt = storage.erasures.get("s1", "req-1")
    confirmation = receipt[OUTBOX_FIELD][0]["message"]
    assert receipt[OUTBOX_FIELD][0]["exchange"] == "gdpr.events"
    assert confirmation["data"] == {"request_id": "req-1", "service": "segmentation",
                                    "customer_ids": ["c1"],
                                    "counts": {"profiles": 1, "parked_messages": 2}}
    assert confirmation["causation_id"] == request.event_id
    # asked again (a new event for the same request): the same confirmation, the same counts
    again = build_event("gdpr.erasure_requested", store_id="s1", data=request.data)
    service.on_erasure_requested(again)
    messages = [e["message"] for e in storage.erasures.get("s1", "req-1")[OUTBOX_FIELD]]
    assert [m["event_id"] for m in messages] == [confirmation["event_id"]] * 2
    assert messages[1]["data"]["counts"] == {"profiles": 1, "parked_messages": 2}
    assert not mentions("not a dict", "s1", ["c1"], None)
