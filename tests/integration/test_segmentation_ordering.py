"""Segmentation on the real broker, fed customer_sync's and gdpr's events directly, in the
order a broker may really deliver them: late, twice, after a deletion or an erasure."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.segmentation.service import SegmentationService
from shared.errors import NotFound
from shared.events import build_event, contract
from shared.messaging.parking import ParkedMessages
from tests.support import EventBarrier, publish, wait_until

STORE = "ooo"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def rpc(services, events):
    events.listen("segmentation")
    events.listen("gdpr", "gdpr.erasure_completed")
    services.start(SegmentationService)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy



def order(event_type: str, customer: str, total: int, *, at: datetime, refunded: int = 0,
          status: str = "processing", order_id: str = "9001") -> dict:
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "status": status, "date_created": (NOW - timedelta(days=2)).isoformat(),
            "total": {"amount": total, "currency": "EUR"},
            "total_refunded": {"amount": refunded, "currency": "EUR"}}
    if event_type == "order.refunded":
        data["refund_delta"] = {"amount": refunded, "currency": "EUR"}
    if event_type == "order.cancelled":
        data["old_status"] = "processing"
    if event_type == "order.updated":
        data.update(old_status="processing", new_status=status, changed_fields=["status"])
    return build_event(event_type, store_id=STORE, data=data, occurred_at=at).to_message()


def segment_changes(events, customer: str) -> list[tuple]:
    return [(e["data"]["old_segment"], e["data"]["new_segment"])
            for e in events.of_type("customer.segment_changed") if e["data"]["customer_id"] == customer]


def test_a_cancellation_delivered_before_its_placement_wins(services, rpc, events):
    cancelled = order("order.cancelled", "c-late", 4990, status="cancelled", at=NOW)
    placed = order("order.placed", "c-late", 4990, at=NOW - timedelta(minutes=5))
    publish(services.amqp_uri, cancelled)
    events.wait_for(lambda got: segment_changes(events, "c-late"))
    barrier = EventBarrier(services, "segmentation", events).expect("order.placed")
    publish(services.amqp_uri, placed, placed)  # the placement late, and twice
    barrier.settled("order.placed", 2)
    assert barrier.published() == 0
    assert segment_changes(events, "c-late") == [(None, "prospect")]
    profile = rpc.segmentation.get_profile(STORE, "c-late")
    assert profile["stats"]["orders_count"] == 0 and profile["segment"] == "prospect"


def test_a_refund_before_its_order_and_a_vip_dropped_by_a_refund(services, rpc, events):
    # The refund's later state arrives first: the order is held with its refund, and the
    # placement that follows (older) changes nothing.
    refunded = order("order.refunded", "c-ref", 4990, refunded=1000, at=NOW)
    placed = order("order.placed", "c-ref", 4990, at=NOW - timedelta(hours=1))
    publish(services.amqp_uri, refunded)
    events.wait_for(lambda got: segment_changes(events, "c-ref"))
    barrier = EventBarrier(services, "segmentation", events).expect("order.placed")
    publish(services.amqp_uri, placed)
    barrier.settled("order.placed")
    assert barrier.published() == 0
    assert rpc.segmentation.get_profile(STORE, "c-ref")["stats"]["total_spent"] == 3990
    assert segment_changes(events, "c-ref") == [(None, "new")]
    # A VIP (over 5,000.00) refunded below the threshold becomes new again, said once even
    # though the refund is delivered twice.
    rpc.segmentation.save_rule(STORE, {
        "name": "vip tag", "position": 1, "match": "all",
        "conditions": [{"field": "segment", "op": "eq", "value": "vip"}],
        "actions": [{"type": "add_tag", "value": "vip-club"}]})
    publish(services.amqp_uri, order("order.placed", "c-vip", 600_000, at=NOW - timedelta(hours=2),
                                     order_id="9100"))
    events.wait_for(lambda got: ("new", "vip") in segment_changes(events, "c-vip")
                    or (None, "vip") in segment_changes(events, "c-vip"))
    tagged = [e for e in events.of_type("customer.tagged") if e["data"]["customer_id"] == "c-vip"]
    assert [(e["data"]["tag"], e["data"]["source"]) for e in tagged] == [("vip-club", "rule")]
    refund = order("order.refunded", "c-vip", 600_000, refunded=200_000, at=NOW - timedelta(hours=1),
                   order_id="9100")
    barrier = EventBarrier(services, "segmentation", events).expect("order.refunded")
    publish(services.amqp_uri, refund, refund)
    barrier.settled("order.refunded", 2)
    assert barrier.published() == 1  # the segment change, once
    assert segment_changes(events, "c-vip") == [(None, "vip"), ("vip", "new")]
    assert rpc.segmentation.get_profile(STORE, "c-vip")["stats"]["total_spent"] == 400_000


def test_a_deleted_customer_leaves_the_segments_and_a_late_update_does_not_return_them(
        services, rpc, events):
    publish(services.amqp_uri, order("order.placed", "c-del", 4990, at=NOW - timedelta(hours=1)))
    events.wait_for(lambda got: segment_changes(events, "c-del"))
    deleted = build_event("customer.deleted", store_id=STORE, occurred_at=NOW,
                          data={"customer_id": "c-del", "woo_customer_id": 77}).to_message()
    late = build_event("customer.updated", store_id=STORE, occurred_at=NOW - timedelta(minutes=1),
                       data={**contract("customer.updated").sample, "customer_id": "c-del"}
                       ).to_message()
    publish(services.amqp_uri, deleted)
    wait_until(lambda: rpc.segmentation.get_profile(STORE, "c-del")["status"] == "deleted")
    barrier = EventBarrier(services, "segmentation", events).expect("customer.updated")
    publish(services.amqp_uri, late)  # an update from before the deletion, delivered after it
    barrier.settled("customer.updated")
    assert barrier.published() == 0
    assert rpc.segmentation.get_profile(STORE, "c-del")["status"] == "deleted"
    members = rpc.segmentation.segment_members(STORE, "new", {"size": 10})
    assert "c-del" not in [m["customer_id"] for m in members["items"]]
    result = rpc.segmentation.bulk_tag(STORE, ["c-del"], ["gift"])
    assert result["results"]["c-del"].startswith("refused")


def test_erasure_forgets_the_profile_drops_parked_messages_and_confirms(services, rpc, events):
    publish(services.amqp_uri, order("order.placed", "c-gone", 4990, at=NOW - timedelta(hours=1)))
    events.wait_for(lambda got: segment_changes(events, "c-gone"))
    # A message about the person that could not be applied is parked (it breaks its contract).
    broken = {**order("order.placed", "c-gone", 4990, at=NOW),
              "event_type": "order.updated"}  # lacks old_status and the rest of its contract
    publish(services.amqp_uri, broken)
    parked = ParkedMessages(services.amqp_uri)
    wait_until(lambda: parked.list("segmentation"), timeout=15, message="the message to park")
    request = build_event("gdpr.erasure_requested", store_id=STORE,
                          data={"request_id": "req-42", "customer_ids": ["c-gone"],
                                "email": "gone@example.com"}).to_message()
    publish(services.amqp_uri, request)
    got = events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    [done] = [e for e in got if e["event_type"] == "gdpr.erasure_completed"]
    assert done["data"] == {"request_id": "req-42", "service": "segmentation",
                            "customer_ids": ["c-gone"],
                            "counts": {"profiles": 1, "parked_messages": 1}}
    assert done["causation_id"] == request["event_id"]
    assert parked.list("segmentation") == []
    with pytest.raises(NotFound):
        rpc.segmentation.get_profile(STORE, "c-gone")
    with pytest.raises(NotFound):
        rpc.segmentation.export_customer(STORE, "c-gone")
    # A later event for the person (a redelivery, a replay) brings nothing back.
    barrier = EventBarrier(services, "segmentation", events).expect("order.updated")
    publish(services.amqp_uri, order("order.updated", "c-gone", 4990, status="completed",
                                     at=NOW + timedelta(minutes=1)))
    barrier.settled("order.updated")
    with pytest.raises(NotFound):
        rpc.segmentation.get_profile(STORE, "c-gone")
    assert barrier.published() == 0
    stored = segmentation_database(services)["profiles"].find_one({"customer_id": "c-gone"})
    assert stored["status"] == "erased"
    assert not {"orders", "contact", "stats", "segment", "tags", "outbox"} & set(stored)


def segmentation_database(services):
    from shared import mongo
    return mongo.connect(services.mongo_uri)["companion_segmentation"]
