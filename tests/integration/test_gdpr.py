"""GDPR across every service on the real broker: a shop's customer arrives by signed webhooks,
then asks what is held about them."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.gdpr.service import GdprService
from services.loyalty.service import LoyaltyService
from services.notifications.service import NotificationsService
from services.segmentation.service import SegmentationService
from shared import mongo
from shared.errors import Conflict
from tests import payloads
from tests.support import EventBarrier, free_port, wait_until

STORE = "gd"
SECRET = "whsec-gdpr-12345"
FAST = dict(GDPR_PROCESS_SECONDS="0.3", GDPR_RETRY_SECONDS="0.5", GDPR_RPC_TIMEOUT_SECONDS="3")


@pytest.fixture
def system(services):
    containers = {
        "segmentation": services.start(SegmentationService),
        "loyalty": services.start(LoyaltyService),
        "notifications": services.start(NotificationsService,
                                        WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}"),
        "customer_sync": services.start(CustomerSyncService, RECONCILE_POLL_SECONDS="3600"),
        "gdpr": services.start(GdprService, **FAST),
    }
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": STORE, "shop_url": "https://shop.example", "webhook_secret": SECRET,
            "consumer_key": "ck", "consumer_secret": "cs"})
        yield rpc, containers


def post(services, topic: str, body: dict) -> None:
    raw = json.dumps(body).encode()
    r = requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE}", data=raw, timeout=10,
                      headers={"X-WC-Webhook-Topic": topic,
                               "X-WC-Webhook-Signature": sign(raw, SECRET)})
    assert r.status_code == 200, r.text


def recent(days_ago: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S")


def a_customer_with_an_order(services, rpc) -> str:
    post(services, "customer.created", payloads.customer(woo_id=42, email="ada@acme.example"))
    post(services, "order.created", payloads.order(901, customer_id=42, date_created_gmt=recent(2),
                                                   modified=recent(1)))
    customer_id = wait_until(lambda: _found(rpc), timeout=15, message="the customer")
    wait_until(lambda: _held_by_all(rpc, customer_id), timeout=20, message="every service's data")
    return customer_id


def _found(rpc):
    try:
        return rpc.customer_sync.find_customer(STORE, "ada@acme.example")["customer_id"]
    except Exception:
        return None


def _request_or_none(rpc, request_id: str) -> dict | None:
    try:
        return rpc.gdpr.get_request(request_id)
    except Exception:
        return None


def _held_by_all(rpc, customer_id) -> bool:
    try:  # the order has reached each service, not just the customer
        profile = rpc.segmentation.get_profile(STORE, customer_id)
        rpc.loyalty.get_account(STORE, customer_id)
        contact = rpc.notifications.export_customer(STORE, customer_id)["contact"]
        return (profile["stats"] or {}).get("orders_count") == 1 and contact.get("order_ids")
    except Exception:
        return False


def test_an_access_request_gathers_every_services_data(services, system):
    rpc, _ = system
    customer_id = a_customer_with_an_order(services, rpc)
    rpc.gdpr.set_consent(STORE, customer_id, "email_marketing", True, "checkout", "shop")
    request = rpc.gdpr.submit_request(STORE, "access", "ada@acme.example", None, "ops@shop")
    with pytest.raises(Conflict, match="not ready"):
        rpc.gdpr.download_export(request["request_id"])  # nothing before verification
    rpc.gdpr.verify_identity(request["request_id"], "ops@shop", "replied from the address")
    wait_until(lambda: rpc.gdpr.get_request(request["request_id"])["state"] == "completed",
               timeout=30, message="the access request to complete")
    export = rpc.gdpr.download_export(request["request_id"])
    manifest = {m["service"]: m["status"] for m in export["manifest"]}
    assert manifest == {"customer_sync": "data", "segmentation": "data", "loyalty": "data",
                        "notifications": "data", "gdpr": "data"}
    assert export["subject"] == {"email": "ada@acme.example", "customer_ids": [customer_id]}
    assert export["data"]["loyalty"]["account"]["balance"] > 0
    assert export["data"]["segmentation"]["profile"]["segment"] == "new"
    assert export["data"]["notifications"]["contact"]["email"] == "ada@acme.example"
    assert export["data"]["gdpr"]["consent"][0]["purposes"]["email_marketing"]["granted"] is True
    json.dumps(export)
    audit = [a["action"] for a in rpc.gdpr.get_request(request["request_id"])["audit"]]
    assert audit[0] == "received" and audit[-1] == "completed" and "resolved" in audit


def test_an_objection_turns_marketing_off_everywhere(services, system):
    rpc, _ = system
    customer_id = a_customer_with_an_order(services, rpc)
    request = rpc.gdpr.submit_request(STORE, "objection", "ada@acme.example", None, "ops@shop")
    rpc.gdpr.verify_identity(request["request_id"], "ops@shop")
    wait_until(lambda: rpc.gdpr.get_request(request["request_id"])["state"] == "completed",
               timeout=30)
    consent = rpc.gdpr.get_consent(STORE, customer_id)["purposes"]
    assert not consent["email_marketing"]["granted"] and not consent["sms_marketing"]["granted"]
    # notifications heard it (consent.changed) and will send this person no marketing
    wait_until(lambda: rpc.notifications.export_customer(STORE, customer_id)["contact"]
               .get("consent", {}).get("sms_marketing", {}).get("granted") is False, timeout=15)


def every_trace(services, strings: list[str]) -> list[str]:
    """Every document, in every collection of every database, holding one of the strings."""
    from shared import mongo

    client = mongo.connect(services.mongo_uri)
    found = []
    for db_name in client.list_database_names():
        database = client[db_name]
        for name in database.list_collection_names():
            for doc in database[name].find({}):
                text = json.dumps(doc, default=str).lower()
                for needle in strings:
                    if needle.lower() in text:
                        found.append(f"{db_name}.{name}:{doc.get('_id')}: {needle}")
    return found


PERSON = ["ada@acme.example", "Lovelace", "+441234567890"]


def test_an_erasure_leaves_no_trace_waits_for_a_service_that_was_down_and_stays_erased(
        services, system):
    rpc, containers = system
    a_customer_with_an_order(services, rpc)
    assert every_trace(services, PERSON)  # the person is there to begin with
    services.kill(containers["loyalty"])  # loyalty is down when the erasure is asked
    request = rpc.gdpr.submit_request(STORE, "erasure", "ada@acme.example", None, "ops@shop")
    rpc.gdpr.verify_identity(request["request_id"], "ops@shop", "signed request")

    def confirmed():
        erasure = rpc.gdpr.get_request(request["request_id"]).get("erasure") or {}
        return set(erasure.get("confirmations") or {})

    wait_until(lambda: confirmed() == {"customer_sync", "segmentation", "notifications"},
               timeout=30, message="the three running services to confirm")
    assert rpc.gdpr.get_request(request["request_id"])["state"] == "in_progress"
    services.start(LoyaltyService)  # back: its queue kept the request
    wait_until(lambda: rpc.gdpr.get_request(request["request_id"])["state"] == "completed",
               timeout=40, message="the erasure to complete")
    done = rpc.gdpr.get_request(request["request_id"])
    assert done["result"]["verification"] == "nothing found"
    assert set(done["result"]["confirmations"]) == {"customer_sync", "segmentation", "loyalty",
                                                    "notifications"}
    traces = [t for t in every_trace(services, PERSON) if not t.startswith("companion_gdpr.")]
    assert traces == []
    # the gdpr service keeps the requester's email as proof of the request, and nothing more
    assert all(".requests:" in t and "ada@acme.example" in t
               for t in every_trace(services, PERSON) if t.startswith("companion_gdpr."))
    # The shop sends the person again (a late webhook, a backfill): nothing personal returns.
    barrier = EventBarrier(services, "customer_sync")
    consumers = [EventBarrier(services, name).expect("order.updated")
                 for name in ("segmentation", "loyalty")]
    post(services, "customer.updated", {**payloads.customer(woo_id=42, email="ada@acme.example"),
                                        "date_modified_gmt": recent(0)})
    post(services, "order.updated", payloads.order(901, customer_id=42, date_created_gmt=recent(2),
                                                   modified=recent(0), status="completed"))
    # Barrier: both deliveries applied (or dropped) by customer_sync, what it published from
    # them (the order's change, anonymised) applied by the services that listen to it.
    inbox = mongo.connect(services.mongo_uri)["companion_customer_sync"]["webhook_inbox"]
    wait_until(lambda: inbox.count_documents({"status": {"$in": ["pending", "processing"]}}) == 0,
               message="the late deliveries applied")
    barrier.caught_up()
    published = barrier.published_types()
    assert set(published) <= {"order.updated"}, published
    for consumer in consumers:
        consumer.settled("order.updated", published.get("order.updated", 0))
    traces = [t for t in every_trace(services, PERSON) if not t.startswith("companion_gdpr.")]
    assert traces == []


def test_the_shops_own_eraser_is_carried_to_every_service(services, system):
    rpc, _ = system
    customer_id = a_customer_with_an_order(services, rpc)
    # WordPress's "Erase personal data": the customer saved with blanked fields.
    blank = {k: "" for k in payloads.customer(woo_id=42, email="x@y.z")["billing"]}
    post(services, "customer.updated", {**payloads.customer(woo_id=42, email="ada@acme.example"),
                                        "email": "", "first_name": "", "last_name": "",
                                        "billing": blank, "shipping": blank,
                                        "date_modified_gmt": recent(0)})
    request_id = f"shop-{STORE}-{customer_id}"

    def state():
        try:
            return rpc.gdpr.get_request(request_id)["state"]
        except Exception:
            return None

    try:
        wait_until(lambda: state() == "completed", timeout=40,
                   message="the shop's erasure to complete")
    except AssertionError:
        raise AssertionError(f"the shop's erasure did not complete: {_request_or_none(rpc, request_id)}")
    done = rpc.gdpr.get_request(request_id)
    assert set(done["result"]["confirmations"]) == {"customer_sync", "segmentation", "loyalty",
                                                    "notifications"}
    assert [a["actor"] for a in done["audit"]][:2] == ["shop", "shop"]
    traces = [t for t in every_trace(services, PERSON)]
    assert traces == []
    from shared.errors import NotFound
    for call in (rpc.segmentation.get_profile, rpc.loyalty.get_account,
                 rpc.notifications.export_customer):
        with pytest.raises(NotFound):
            call(STORE, customer_id)
