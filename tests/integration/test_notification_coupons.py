"""A workflow's coupon end to end on the real broker: notifications and customer_sync running,
the WooCommerce stand-in and a local SMTP server. A customer signs up at the shop; the welcome
email carries a code that exists at the shop, restricted to that customer's email and expiring
when the email says; a shop whose coupons are down delays the email, which goes once the shop
is back, with one coupon; a send asked again for its coupon reuses the code."""
from __future__ import annotations

from datetime import datetime

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from demo.shop import FakeWooShop
from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.notifications.service import NotificationsService
from shared import mongo
from shared.events import build_event
from tests.support import free_port, publish, wait_until

STORE = "cp"
SECRET = "whsec-coupons-1234"
GIFT = {"slug": "welcome_gift", "channel": "email", "name": "Welcome with a gift",
        "subject": "A gift from {{ store.name }}",
        "html": "<p>Use <b>{{ coupon.code }}</b> for {{ coupon.amount }} off until "
                "{{ coupon.expires }}.</p>",
        "text": "CODE={{ coupon.code }}|AMOUNT={{ coupon.amount }}|UNTIL={{ coupon.expires }}"}
WELCOME = {"workflow_id": "welcome", "name": "Welcome", "trigger": {"event": "customer.created"},
           "channel": "email", "template": "welcome_gift", "purpose": "transactional",
           "coupon": {"type": "percent", "amount": 10, "currency": "EUR", "validity_days": 30,
                      "individual_use": True}}


@pytest.fixture
def shop():
    with FakeWooShop(seed=5) as fake:
        yield fake


@pytest.fixture
def rpc(services, shop, smtp):
    services.start(CustomerSyncService, WOO_MAX_RETRIES="1")
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}",
                   SMTP_HOST=smtp.host, SMTP_PORT=str(smtp.port), NOTIFY_POLL_SECONDS="0.2",
                   NOTIFY_RETRY_SECONDS="0.5", NOTIFY_MAX_ATTEMPTS="10",
                   NOTIFY_COUPON_TIMEOUT_SECONDS="10",
                   NOTIFY_COUPON_WITHDRAW_SECONDS="3600")  # the tests run the step themselves
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        # The stand-in's customers sign up on its own calendar: any sign-up is news here.
        proxy.notifications.save_store_settings(STORE, {"name": "Tea & Co",
                                                        "max_trigger_age_hours": 0})
        proxy.notifications.save_template(STORE, GIFT)
        proxy.notifications.save_workflow(STORE, WELCOME)
        yield proxy


def sign_up(services, shop) -> dict:
    """A customer made at the shop and delivered to customer_sync by its webhook."""
    woo = shop.add_customer()
    body = shop.webhook_body("customer.created", woo["id"])
    answer = requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE}", data=body,
                           timeout=10, headers={"Content-Type": "application/json",
                                                "X-WC-Webhook-Topic": "customer.created",
                                                "X-WC-Webhook-Signature": sign(body, SECRET)})
    assert answer.status_code == 200, answer.text
    return woo


def sends(services) -> list[dict]:
    return list(mongo.connect(services.mongo_uri)["companion_notifications"]["sends"].find(
        {"store_id": STORE}))


def fields(mail) -> dict:
    text = mail.get_body(("plain",)).get_content()
    return dict(part.split("=", 1) for part in text.strip().split("|"))


def shop_coupons(shop, code: str | None = None) -> list[dict]:
    return [c for c in shop.coupons.values() if code is None or c["code"] == code]


def test_the_welcome_email_carries_a_coupon_made_at_the_shop_for_that_customer(
        services, shop, smtp, rpc):
    preview = rpc.notifications.preview(STORE, "welcome_gift")
    assert "CODE=gift-sample00000|AMOUNT=10 %" in preview["text"]
    woo = sign_up(services, shop)
    [mail] = smtp.wait_for(1, timeout=30)
    said = fields(mail)
    assert mail["To"] == woo["email"]
    assert said["AMOUNT"] == "10 %"
    [coupon] = shop_coupons(shop)
    assert said["CODE"] == coupon["code"] and coupon["code"].startswith("gift-")
    assert coupon["email_restrictions"] == [woo["email"].lower()]
    assert (coupon["discount_type"], coupon["amount"], coupon["usage_limit"]) == \
        ("percent", "10.00", 1)
    assert coupon["individual_use"] is True
    assert datetime.fromisoformat(coupon["date_expires_gmt"]).date().isoformat() == said["UNTIL"]
    [send] = sends(services)
    assert send["coupon"]["code"] == coupon["code"]
    assert {"key": "companion_send", "value": send["_id"]} in [
        {"key": m["key"], "value": m["value"]} for m in coupon["meta_data"]]
    # A preview for the customer shows the sample code and makes no coupon.
    customer_id = send["customer_id"]
    shown = rpc.notifications.preview(STORE, "welcome_gift", customer_id)
    assert "CODE=gift-sample00000" in shown["text"]
    assert len(shop.coupons) == 1


def test_a_shop_outage_delays_the_email_which_goes_once_the_shop_is_back_with_one_coupon(
        services, shop, smtp, rpc):
    shop.coupons_down(503)
    sign_up(services, shop)

    def retried() -> bool:
        found = sends(services)
        return bool(found) and any(a.get("outcome") == "retry"
                                   and "coupon not created" in a.get("detail", "")
                                   for a in found[0]["attempts"])

    wait_until(retried, timeout=30, message="the send retried for its coupon")
    assert smtp.received == 0 and shop.coupons == {}
    code = sends(services)[0]["coupon"]["code"]
    shop.reset_faults()
    [mail] = smtp.wait_for(1, timeout=30)
    assert fields(mail)["CODE"] == code
    assert [c["code"] for c in shop_coupons(shop)] == [code]
    wait_until(lambda: sends(services)[0]["status"] == "sent", message="the send finished")
    assert smtp.received == 1


def test_a_send_asked_again_for_its_coupon_reuses_the_code(services, shop, smtp, rpc):
    sign_up(services, shop)
    [first] = smtp.wait_for(1, timeout=30)
    wait_until(lambda: sends(services)[0]["status"] == "sent", message="the send finished")
    [send] = sends(services)
    code = send["coupon"]["code"]
    # As a sender that stopped before it recorded the shop's answer would leave it: the code
    # is kept, the coupon's id is not, and the send is due again.
    mongo.connect(services.mongo_uri)["companion_notifications"]["sends"].update_one(
        {"_id": send["_id"]}, {"$unset": {"coupon.coupon_id": ""},
                               "$set": {"status": "scheduled", "attempts": [],
                                        "due_at": send["due_at"]}})
    second = smtp.wait_for(2, timeout=30)[1]
    assert fields(second)["CODE"] == fields(first)["CODE"] == code
    assert len(shop_coupons(shop, code)) == 1 and len(shop.coupons) == 1
    wait_until(lambda: sends(services)[0].get("coupon", {}).get("coupon_id") is not None,
               message="the coupon's id recorded again")
    assert sends(services)[0]["coupon"]["coupon_id"] == shop_coupons(shop, code)[0]["id"]


def test_an_erasure_takes_the_persons_unused_message_coupon_back_from_the_shop(
        services, shop, smtp, rpc):
    """The coupon carries the person's email at the shop: their erasure deletes it (retried
    while the shop is away), and what notifications kept to do so is gone once it is done."""
    woo = sign_up(services, shop)
    smtp.wait_for(1, timeout=30)
    [coupon] = shop_coupons(shop)
    assert coupon["email_restrictions"] == [woo["email"].lower()]
    [send] = sends(services)
    request = build_event("gdpr.erasure_requested", store_id=STORE,
                          data={"request_id": "req-coupon", "customer_ids": [send["customer_id"]],
                                "email": woo["email"]}).to_message()
    shop.coupons_down(503)
    publish(services.amqp_uri, request)
    database = mongo.connect(services.mongo_uri)["companion_notifications"]
    wait_until(lambda: database["coupon_withdrawals"].count_documents({}) == 1, timeout=15,
               message="the coupon's withdrawal owed")
    assert rpc.notifications.run_coupon_withdrawals()["retrying"] == 1
    assert shop_coupons(shop, coupon["code"])  # still there: the shop was away
    database["coupon_withdrawals"].update_many(  # due now rather than after the wait
        {}, {"$set": {"next_attempt_at": datetime(2000, 1, 1)}})
    shop.reset_faults()
    done = rpc.notifications.run_coupon_withdrawals()
    assert (done["withdrawn"], done["waiting"]) == (1, 0)
    assert shop_coupons(shop) == []
    assert database["coupon_withdrawals"].count_documents({}) == 0
