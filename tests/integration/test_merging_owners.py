"""segmentation, notifications and gdpr on the real broker, fed customer_sync's
`customer.merged` and `customer.unmerged` (twice, as a broker may deliver them): each moves its
slice to the primary, hands it back, and publishes what changed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.gdpr.service import GdprService
from services.notifications.service import NotificationsService
from services.segmentation.service import SegmentationService
from shared import mongo
from shared.events import build_event, contract
from tests.support import EventBarrier, free_port, publish

STORE = "mrg"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def rpc(services):
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy


def event(event_type: str, data: dict, at: datetime | None = None) -> dict:
    return build_event(event_type, store_id=STORE, data=data, occurred_at=at or NOW).to_message()


def merged(primary="reg", other="guest", merge_id="m-1") -> dict:
    return event("customer.merged", {"customer_id": primary, "merged_customer_id": other,
                                     "merge_id": merge_id, "kind": "manual"})


def unmerged(primary="reg", other="guest", merge_id="m-1") -> dict:
    return event("customer.unmerged", {"customer_id": primary, "restored_customer_id": other,
                                       "merge_id": merge_id}, NOW + timedelta(minutes=1))


def placed(order_id: str, customer_id: str, amount: int) -> dict:
    return event("order.placed", {
        **contract("order.placed").sample, "order_id": order_id, "number": order_id,
        "customer_id": customer_id, "date_created": (NOW - timedelta(days=1)).isoformat(),
        "total": {"amount": amount, "currency": "EUR"},
        "total_refunded": {"amount": 0, "currency": "EUR"}})


def database(services, service: str):
    return mongo.connect(services.mongo_uri)[f"companion_{service}"]


def test_segmentation_moves_orders_and_manual_tags_and_hands_them_back(services, events, rpc):
    events.listen("segmentation")
    services.start(SegmentationService)
    barrier = EventBarrier(services, "segmentation", events).expect("order.placed")
    publish(services.amqp_uri, placed("o-1", "guest", 3000), placed("o-2", "reg", 4000))
    barrier.settled("order.placed", 2)
    rpc.segmentation.tag(STORE, "guest", ["gift"], actor="ops")
    barrier = EventBarrier(services, "segmentation", events).expect("customer.merged")
    publish(services.amqp_uri, merged(), merged())  # delivered twice
    barrier.settled("customer.merged", 2)
    reg = rpc.segmentation.get_profile(STORE, "reg")
    assert reg["stats"]["orders_count"] == 2 and [t["tag"] for t in reg["tags"]] == ["gift"]
    tagged = [e["data"]["customer_id"] for e in events.of_type("customer.tagged")
              if e["data"]["tag"] == "gift"]
    assert tagged == ["guest", "reg"]  # once for the primary, however often the merge came
    profiles = database(services, "segmentation")["profiles"]
    assert profiles.find_one({"_id": f"{STORE}:guest"})["status"] == "merged"

    barrier = EventBarrier(services, "segmentation", events).expect("customer.unmerged")
    publish(services.amqp_uri, unmerged(), unmerged())
    barrier.settled("customer.unmerged", 2)
    reg = rpc.segmentation.get_profile(STORE, "reg")
    guest = rpc.segmentation.get_profile(STORE, "guest")
    assert reg["stats"]["orders_count"] == 1 and reg["tags"] == []
    assert guest["stats"]["orders_count"] == 1 and [t["tag"] for t in guest["tags"]] == ["gift"]
    assert [e["data"]["customer_id"] for e in events.of_type("customer.untagged")] == ["reg"]


def test_notifications_drops_the_merged_contact_and_moves_its_pending_sends(
        services, smtp, twilio, rpc):
    port = free_port()
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                   SMTP_HOST=smtp.host, SMTP_PORT=str(smtp.port),
                   TWILIO_ACCOUNT_SID=twilio.account_sid, TWILIO_AUTH_TOKEN=twilio.auth_token,
                   TWILIO_FROM_NUMBER=twilio.phone_number, TWILIO_API_BASE=twilio.base_url,
                   NOTIFY_PUBLIC_URL=f"http://127.0.0.1:{port}", NOTIFY_POLL_SECONDS="0.2")
    barrier = EventBarrier(services, "notifications").expect("customer.created",
                                                             "customer.tagged")
    people = [event("customer.created", {**contract("customer.created").sample,
                                         "customer_id": who, "email": "ada@example.com"})
              for who in ("reg", "guest")]
    tags = [event("customer.tagged", {"customer_id": who, "tag": "news", "source": "manual",
                                      "rule_id": None, "actor": "ops"})
            for who in ("reg", "guest")]
    publish(services.amqp_uri, *people, *tags)
    barrier.settled("customer.created", 2)
    barrier.settled("customer.tagged", 2)
    later = (NOW + timedelta(days=3)).isoformat()
    rpc.notifications.bulk_send(STORE, {"tag": "news"}, "win_back", later, bulk_id="early")
    sends = database(services, "notifications")["sends"]
    sends.update_one({"_id": "bulk:early:reg"}, {"$set": {"status": "cancelled"}})

    barrier = EventBarrier(services, "notifications").expect("customer.merged")
    publish(services.amqp_uri, merged(), merged())
    barrier.settled("customer.merged", 2)
    assert sends.find_one({"_id": "bulk:early:guest"})["customer_id"] == "reg"
    rpc.notifications.bulk_send(STORE, {"tag": "news"}, "win_back", later, bulk_id="after")
    assert [s["customer_id"] for s in sends.find({"bulk_id": "after"})] == ["reg"]
    contacts = database(services, "notifications")["contacts"]
    assert contacts.find_one({"_id": f"{STORE}:guest"})["status"] == "merged"

    barrier = EventBarrier(services, "notifications").expect("customer.unmerged")
    publish(services.amqp_uri, unmerged(), unmerged())
    barrier.settled("customer.unmerged", 2)
    assert sends.find_one({"_id": "bulk:early:guest"})["customer_id"] == "guest"
    assert contacts.find_one({"_id": f"{STORE}:guest"})["status"] == "active"


def test_gdpr_withdraws_on_the_primary_and_gives_it_back(services, events, rpc):
    events.listen("gdpr", "consent.changed")
    services.start(GdprService)
    consents = database(services, "gdpr")["consents"]
    barrier = EventBarrier(services, "gdpr", events).expect("consent.changed")
    publish(services.amqp_uri, *[  # as notifications announces them: recorded, not re-sent
        event("consent.changed", {"customer_id": who, "purpose": "email_marketing",
                                  "granted": granted, "source": source,
                                  "changed_at": (NOW - timedelta(days=1)).isoformat(),
                                  "origin": "notifications"})
        for who, granted, source in (("reg", True, "preference_page"),
                                     ("guest", False, "unsubscribe_link"))])
    barrier.settled("consent.changed", 2)
    barrier = EventBarrier(services, "gdpr", events).expect("customer.merged")
    publish(services.amqp_uri, merged(), merged())
    barrier.settled("customer.merged", 2)
    assert consents.find_one({"_id": f"{STORE}:reg"})["purposes"]["email_marketing"][
        "granted"] is False
    assert barrier.published_types() == {"consent.changed": 1}

    barrier = EventBarrier(services, "gdpr", events).expect("customer.unmerged")
    publish(services.amqp_uri, unmerged(), unmerged())
    barrier.settled("customer.unmerged", 2)
    assert consents.find_one({"_id": f"{STORE}:reg"})["purposes"]["email_marketing"][
        "granted"] is True
    changes = [(e["data"]["customer_id"], e["data"]["granted"])
               for e in events.of_type("consent.changed")]
    assert changes[-2:] == [("reg", False), ("reg", True)]
    assert barrier.published_types() == {"consent.changed": 1}


def test_an_erasure_after_a_merge_leaves_segmentations_receipt_without_the_tags(
        services, events, rpc):
    events.listen("segmentation")
    events.listen("gdpr", "gdpr.erasure_completed")
    services.start(SegmentationService)
    barrier = EventBarrier(services, "segmentation", events).expect("order.placed")
    publish(services.amqp_uri, placed("o-1", "guest", 3000), placed("o-2", "reg", 4000))
    barrier.settled("order.placed", 2)
    rpc.segmentation.tag(STORE, "guest", ["complained-about-size-xl"], actor="ops@shop.test")
    barrier = EventBarrier(services, "segmentation", events).expect("customer.merged")
    publish(services.amqp_uri, merged())
    barrier.settled("customer.merged", 1)
    receipts = database(services, "segmentation")["merges"]
    assert "complained-about-size-xl" in receipts.find_one({"store_id": STORE})["tags"]
    publish(services.amqp_uri, build_event("gdpr.erasure_requested", store_id=STORE, data={
        "request_id": "req-m", "customer_ids": ["reg", "guest"],
        "email": "ada@example.com"}).to_message())
    events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    [receipt] = list(receipts.find({"store_id": STORE}))
    assert (receipt["tags"], receipt["groups"], receipt["orders"]) == ({}, {}, [])
    assert (receipt["state"], receipt["forgotten"]) == ("merged", True)
    assert "complained-about-size-xl" not in repr(receipt) and "ops@shop.test" not in repr(receipt)
    # A redelivered merge after the erasure changes nothing.
    profiles = database(services, "segmentation")["profiles"]
    held = list(profiles.find({"store_id": STORE}))
    barrier = EventBarrier(services, "segmentation", events).expect("customer.merged")
    publish(services.amqp_uri, merged())
    barrier.settled("customer.merged", 1)
    assert list(profiles.find({"store_id": STORE})) == held
    assert list(receipts.find({"store_id": STORE})) == [receipt]
