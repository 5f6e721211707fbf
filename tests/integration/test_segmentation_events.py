"""Segmentation on the real broker: customer_sync's events in, segmentation's events out."""
from __future__ import annotations

import json
import time

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.segmentation.service import SegmentationService
from shared.errors import ValidationError
from tests import payloads
from tests.support import EventBarrier, wait_until

SECRET = "whsec-seg-12345"


@pytest.fixture
def system(services, events):
    events.listen("segmentation")
    services.start(SegmentationService)  # its queues exist before anything is published
    services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as rpc:
        rpc.customer_sync.register_store({
            "store_id": "seg", "shop_url": "https://shop.example", "webhook_secret": SECRET,
            "consumer_key": "ck", "consumer_secret": "cs"})
        yield rpc


def post(services, topic: str, body: dict) -> None:
    raw = json.dumps(body).encode()
    r = requests.post(f"{services.web_url}/webhooks/woocommerce/seg", data=raw, timeout=10,
                      headers={"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Signature": sign(raw, SECRET)})
    assert r.status_code == 200, r.text


def recent(days_ago: int) -> str:
    from datetime import datetime, timedelta, timezone
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S")


def test_order_events_make_a_new_customer_and_redelivery_publishes_nothing(services, system, events):
    rpc = system
    order = payloads.order(501, customer_id=42, date_created_gmt=recent(2), modified=recent(1))
    post(services, "customer.created", payloads.customer(woo_id=42, email="ada@acme.example"))
    post(services, "order.created", order)
    # The customer and the order reach segmentation on different queues: the customer alone
    # makes a prospect first, or the order comes first and makes them new at once.
    got = events.wait_for(lambda got: any(e["event_type"] == "customer.segment_changed"
                                          and e["data"]["new_segment"] == "new" for e in got))
    changed = [e for e in got if e["event_type"] == "customer.segment_changed"]
    steps = [(e["data"]["old_segment"], e["data"]["new_segment"]) for e in changed]
    assert steps in ([(None, "new")], [(None, "prospect"), ("prospect", "new")]), steps
    assert changed[-1]["data"]["orders_count"] == 1
    customer_id = changed[-1]["data"]["customer_id"]
    profile = rpc.segmentation.get_profile("seg", customer_id)
    assert profile["segment"] == "new" and profile["stats"]["total_spent"] == 4990
    assert profile["email_domain"] == "acme.example" and profile["country"] == "GB"
    report = rpc.segmentation.report("seg", "day")
    assert report["buyers"] == 1 and report["segment_sizes"] == {"new": 1}
    export = rpc.segmentation.export_customer("seg", customer_id)
    assert export["service"] == "segmentation" and [o["order_id"] for o in export["orders"]] == ["501"]
    json.dumps(export)
    before = len(events.received)
    barrier = EventBarrier(services, "segmentation", events).expect("order.updated")
    post(services, "order.updated", {**order, "status": "completed",
                                     "date_modified_gmt": recent(0)})
    barrier.settled("order.updated")
    # A status change that changes no segment, tag or group publishes nothing here.
    assert barrier.published() == 0 and len(events.received) == before


def test_manual_tags_and_rules_publish_their_changes_once(services, system, events):
    rpc = system
    with pytest.raises(ValidationError) as info:
        rpc.segmentation.save_rule("seg", {"name": "bad", "match": "all",
                                           "conditions": [{"field": "country", "op": "gt", "value": 3}],
                                           "actions": [{"type": "add_tag", "value": "x"}]})
    assert "conditions" in str(info.value)
    rpc.segmentation.save_rule("seg", {
        "name": "big spenders", "position": 1, "match": "all",
        "conditions": [{"field": "total_spent", "op": "gt", "value": 10000}],
        "actions": [{"type": "add_tag", "value": "big-spender"}]})
    post(services, "order.created", payloads.order(601, customer_id=7, total="150.00",
                                                   email="bo@example.com",
                                                   date_created_gmt=recent(3), modified=recent(3)))
    got = events.wait_for(lambda got: any(e["event_type"] == "customer.tagged" for e in got))
    [tagged] = [e for e in got if e["event_type"] == "customer.tagged"]
    assert tagged["data"]["tag"] == "big-spender" and tagged["data"]["source"] == "rule"
    customer_id = tagged["data"]["customer_id"]
    barrier = EventBarrier(services, "segmentation", events)
    rpc.segmentation.tag("seg", customer_id, ["gift"], actor="ops@shop.example")
    rpc.segmentation.tag("seg", customer_id, ["gift"], actor="ops@shop.example")  # no change
    barrier.caught_up()  # both calls have returned: what they published is here
    gift = [e for e in events.received if e["event_type"] == "customer.tagged"
            and e["data"]["tag"] == "gift"]
    assert len(gift) == 1 and gift[0]["data"]["source"] == "manual"
    assert gift[0]["data"]["actor"] == "ops@shop.example"
    profile = rpc.segmentation.get_profile("seg", customer_id)
    assert [t["tag"] for t in profile["tags"]] == ["big-spender", "gift"]


def test_healthcheck_command_asks_the_service_over_rpc(services, system):
    import os
    import subprocess
    import sys

    env = {**os.environ, "AMQP_URI": services.amqp_uri}
    ok = subprocess.run([sys.executable, "-m", "ops.healthcheck", "segmentation"],
                        capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "ready" in ok.stdout
    missing = subprocess.run([sys.executable, "-m", "ops.healthcheck", "nobody"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert missing.returncode == 1


def test_groups_are_data_and_membership_publishes_once(services, system, events):
    rpc = system
    with pytest.raises(ValidationError) as info:
        rpc.segmentation.save_group("seg", {"slug": "Wholesale!", "name": "Wholesale"})
    assert "slug" in str(info.value)
    saved = rpc.segmentation.save_group("seg", {
        "slug": "wholesale", "name": "Wholesale", "description": "Trade buyers",
        "discount_percent": "12.5", "free_shipping_threshold": 10000, "payment_terms_days": 30})
    assert saved["discount_percent"] == "12.5"
    assert [g["slug"] for g in rpc.segmentation.list_groups("seg")] == ["wholesale"]
    post(services, "order.created", payloads.order(701, customer_id=9, email="t@trade.example",
                                                   date_created_gmt=recent(1), modified=recent(1)))
    got = events.wait_for(lambda got: any(e["event_type"] == "customer.segment_changed"
                                          for e in got))
    customer_id = next(e for e in got if e["event_type"] == "customer.segment_changed")["data"][
        "customer_id"]
    barrier = EventBarrier(services, "segmentation", events)
    first = rpc.segmentation.add_to_group("seg", [customer_id], "wholesale", actor="ops")
    again = rpc.segmentation.add_to_group("seg", [customer_id], "wholesale", actor="ops")
    assert first["results"][customer_id] == "changed" and again["results"][customer_id] == "unchanged"
    events.wait_for(lambda got: any(e["event_type"] == "customer.group_joined" for e in got))
    rpc.segmentation.remove_from_group("seg", [customer_id], "wholesale")
    barrier.caught_up()
    assert len(events.of_type("customer.group_left")) == 1
    assert len(events.of_type("customer.group_joined")) == 1
    assert rpc.segmentation.get_profile("seg", customer_id)["groups"] == []


def test_saved_segment_members_are_paged(services, system, events):
    rpc = system
    with pytest.raises(ValidationError) as info:
        rpc.segmentation.save_segment("seg", {"name": "x", "conditions": [
            {"field": "last_order_month", "op": "in", "value": "november"}]})
    assert "conditions.0.value" in str(info.value)
    seg = rpc.segmentation.save_segment("seg", {"name": "holiday gifts", "match": "all",
                                                "conditions": [
        {"field": "largest_order", "op": "gt", "value": 10000},
        {"field": "tags", "op": "contains", "value": "gift"}]})
    for n in range(5):
        post(services, "order.created", payloads.order(800 + n, customer_id=900 + n,
                                                       total="150.00" if n % 2 == 0 else "50.00",
                                                       email=f"h{n}@example.com",
                                                       date_created_gmt=recent(1),
                                                       modified=recent(1)))
    # Each customer is first a prospect (customer.created), then new (order.placed).
    got = events.wait_for(lambda got: sum(e["event_type"] == "customer.segment_changed"
                                          and e["data"]["new_segment"] == "new" for e in got) == 5)
    ids = [e["data"]["customer_id"] for e in got if e["event_type"] == "customer.segment_changed"
           and e["data"]["new_segment"] == "new"]
    rpc.segmentation.bulk_tag("seg", ids, ["gift"])
    members, cursor = [], None
    while True:
        page = rpc.segmentation.segment_members("seg", seg["segment_id"], {"size": 1, "cursor": cursor})
        members.extend(p["customer_id"] for p in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    spent = {p: rpc.segmentation.get_profile("seg", p)["stats"]["total_spent"] for p in ids}
    assert sorted(members) == sorted(p for p in ids if spent[p] > 10000) and len(members) == 3
    new = rpc.segmentation.segment_members("seg", "new", {"size": 50})
    assert {p["customer_id"] for p in new["items"]} == set(ids)
