"""Saved segments across services on the real broker: segmentation keeps a customer's
membership from the events that change them and announces entering and leaving; notifications
projects it, starts a workflow triggered by it, and sends to it as a bulk audience."""
from __future__ import annotations

from services.segmentation.service import SegmentationService
from tests.integration.test_notifications import (STORE, consent, customer, known, rpc,  # noqa: F401
                                                  start)
from tests.support import EventBarrier, publish, wait_until

GIFT = {"segment_id": "gift-buyers", "name": "Gift buyers",
        "conditions": [{"field": "tags", "op": "contains", "value": "gift"}]}
WELCOME_GIFT = {"workflow_id": "gift-hello", "name": "Hello gift buyer", "trigger": {
    "event": "customer.saved_segment_entered", "segment_id": "gift-buyers"},
    "delay_seconds": 0, "channel": "email", "template": "welcome", "purpose": "transactional"}


def _in_segment(rpc, customer_id: str) -> list:  # noqa: F811
    contact = rpc.notifications.export_customer(STORE, customer_id)["contact"]
    return sorted((contact.get("saved_segments") or {}))


def test_entering_a_saved_segment_starts_its_workflow_and_makes_it_an_audience(
        services, smtp, twilio, rpc):  # noqa: F811
    start(services, smtp, twilio)
    services.start(SegmentationService)
    rpc.notifications.save_store_settings(STORE, {"name": "Tea & Co", "url": "https://tea.example"})
    publish(services.amqp_uri, customer("c1", "ada@example.com"), customer("c2", "bo@example.com"),
            consent("c1", "email_marketing"))
    known(rpc, "c1")
    wait_until(lambda: all(_profile(rpc, c) for c in ("c1", "c2")), timeout=10,
               message="both profiles in segmentation")
    assert rpc.segmentation.save_segment(STORE, GIFT)["segment_id"] == "gift-buyers"
    rpc.notifications.save_workflow(STORE, WELCOME_GIFT)

    entered = EventBarrier(services, "notifications").expect("customer.saved_segment_entered")
    rpc.segmentation.tag(STORE, "c1", ["gift"], "ops")
    entered.settled("customer.saved_segment_entered")
    [mail] = smtp.wait_for(1, timeout=15)
    assert mail["To"] == "ada@example.com"
    assert [s["workflow_id"] for s in rpc.notifications.send_log(STORE, "c1")] == ["gift-hello"]
    assert _in_segment(rpc, "c1") == ["gift-buyers"] and _in_segment(rpc, "c2") == []
    assert rpc.segmentation.export_customer(STORE, "c1")["saved_segments"] == ["gift-buyers"]
    listed = rpc.segmentation.list_segments(STORE)
    assert [(s["segment_id"], s["customers"]) for s in listed] == [("gift-buyers", 1)]
    found = rpc.segmentation.search_customers(STORE, {"saved_segment": "gift-buyers"})
    assert [c["customer_id"] for c in found["items"]] == ["c1"]

    bulk = rpc.notifications.bulk_send(STORE, {"saved_segment": "gift-buyers"}, "welcome",
                                       None, "transactional")
    wait_until(lambda: rpc.notifications.bulk_status(STORE, bulk["bulk_id"])["total"] == 1,
               timeout=15, message="the bulk send scheduled for the segment's one member")
    smtp.wait_for(2, timeout=15)
    assert {m["To"] for m in smtp.messages} == {"ada@example.com"}

    left = EventBarrier(services, "notifications").expect("customer.saved_segment_left")
    rpc.segmentation.untag(STORE, "c1", ["gift"], "ops")
    left.settled("customer.saved_segment_left")
    assert _in_segment(rpc, "c1") == []
    assert smtp.received == 2  # leaving starts nothing: no workflow is triggered by it


def _profile(rpc, customer_id: str) -> bool:  # noqa: F811
    try:
        return bool(rpc.segmentation.get_profile(STORE, customer_id))
    except Exception:
        return False
