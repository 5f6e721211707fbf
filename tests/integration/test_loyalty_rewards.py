"""Rewards as coupons on the real broker: loyalty and customer_sync as services, the WooCommerce
stand-in as the shop. A redemption makes its coupon at the shop; an outage leaves it pending
until the shop is back; a refusal gives the points back; the shop's orders spend it and give it
back; a cancel or an expiry deletes it and gives the points back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.customer_sync.service import CustomerSyncService
from services.customer_sync.door.signature import sign
from services.loyalty.bootstrap import build
from services.loyalty.service import LoyaltyService
from shared import mongo
from shared.mongo import MongoStorage
from demo.shop import FakeWooShop
from tests.support import wait_until

SECRET = "whsec-rewards-1234"
STORE_ID = "rewards-shop"


class MovedClock:
    """Real time plus an offset the test moves: loyalty's expiries without waiting."""

    offset = timedelta(0)

    @classmethod
    def now(cls) -> datetime:
        return datetime.now(timezone.utc) + cls.offset


class LoyaltyOnMovedClock(LoyaltyService):
    app = MongoStorage(partial(build, clock=MovedClock.now))


@pytest.fixture
def shop():
    with FakeWooShop(seed=11) as shop:
        yield shop


@pytest.fixture
def rpc(services, events, shop):
    MovedClock.offset = timedelta(0)
    events.listen("loyalty")
    services.start(CustomerSyncService, WOO_MAX_RETRIES=1, TIMELINE_SWEEP_SECONDS=0.2)
    services.start(LoyaltyOnMovedClock, LOYALTY_REWARD_STEP_SECONDS=0.2,
                   LOYALTY_REWARD_RETRY_SECONDS=2, LOYALTY_REWARD_RETRY_MAX_SECONDS=2)
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=30) as proxy:
        proxy.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": shop.base_url, "webhook_secret": SECRET,
            "consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret})
        yield proxy


def deliver(services, shop, topic: str, resource_id: int) -> None:
    body = shop.webhook_body(topic, resource_id)
    headers = {"Content-Type": "application/json", "X-WC-Webhook-Topic": topic,
               "X-WC-Webhook-ID": "3", "X-WC-Webhook-Delivery-ID": f"{topic}-{resource_id}",
               "X-WC-Webhook-Signature": sign(body, SECRET)}
    answer = requests.post(f"{services.web_url}/webhooks/woocommerce/{STORE_ID}", data=body,
                           headers=headers, timeout=10)
    assert answer.ok, answer.text


def member(services, rpc, shop) -> tuple[dict, str]:
    """A shop customer whose first order earned points here."""
    woo = shop.add_customer()
    deliver(services, shop, "customer.created", woo["id"])
    order = shop.add_order(customer_id=woo["id"], status="processing")
    deliver(services, shop, "order.created", order["id"])
    customer_id = wait_until(lambda: _found(rpc, woo["email"]), message="customer known")
    wait_until(lambda: _balance(rpc, customer_id) > 0, message="points earned")
    return woo, customer_id


def _found(rpc, email: str):
    try:
        return rpc.customer_sync.find_customer(STORE_ID, email)["customer_id"]
    except Exception:
        return None


def _balance(rpc, customer_id: str) -> int:
    try:
        return rpc.loyalty.get_account(STORE_ID, customer_id)["balance"]
    except Exception:
        return 0


def reward(rpc, customer_id: str, reward_id: str) -> dict:
    return next(r for r in rpc.loyalty.list_rewards(STORE_ID, customer_id)["items"]
                if r["reward_id"] == reward_id)


def of(events, event_type: str, reward_id: str) -> list[dict]:
    return [e["data"] for e in events.of_type(event_type) if e["data"].get("reward_id") == reward_id]


def balanced(rpc, customer_id: str) -> None:
    check = rpc.loyalty.ledger_check(STORE_ID, customer_id)
    assert check["ok"], check["problems"]


def test_a_redemption_is_a_coupon_at_the_shop_spent_by_orders_and_cancelled_back(
        services, rpc, events, shop):
    woo, customer_id = member(services, rpc, shop)
    start = _balance(rpc, customer_id)
    answer = rpc.loyalty.redeem(STORE_ID, customer_id, 100, request_id="first", actor="ops")
    made = answer["reward"]
    assert made["state"] == "issued" and made["amount"]["amount"] == 100
    coupon = shop.coupon_by_code(made["code"])
    assert coupon["discount_type"] == "fixed_cart" and coupon["amount"] == "1.00"
    assert coupon["usage_limit"] == 1 and coupon["individual_use"] is False
    assert coupon["email_restrictions"] == [woo["email"].lower()]
    assert coupon["date_expires_gmt"].startswith(
        (datetime.now(timezone.utc) + timedelta(days=90)).date().isoformat())
    meta = {m["key"]: m["value"] for m in coupon["meta_data"]}
    assert meta["loyalty_customer"] == customer_id and meta["loyalty_entry"] == "redeem:first"
    assert rpc.loyalty.redeem(STORE_ID, customer_id, 100, request_id="first")["reward"][
        "code"] == made["code"]  # asked again: the same coupon
    assert len([c for c in shop.coupons.values() if c["code"] == made["code"]]) == 1
    events.wait_for(lambda got: of(events, "loyalty.reward_issued", made["reward_id"]))

    # The customer spends it at the shop; the order webhook says so.
    order = shop.add_order(customer_id=woo["id"], coupon_code=made["code"], status="processing")
    deliver(services, shop, "order.created", order["id"])
    wait_until(lambda: reward(rpc, customer_id, made["reward_id"])["state"] == "used",
               message="reward used")
    assert reward(rpc, customer_id, made["reward_id"])["order_id"] == str(order["id"])
    events.wait_for(lambda got: of(events, "loyalty.reward_used", made["reward_id"]))
    # The order is cancelled: the shop gives the use back, and so does loyalty.
    shop.update_order(order["id"], status="cancelled")
    deliver(services, shop, "order.updated", order["id"])
    wait_until(lambda: reward(rpc, customer_id, made["reward_id"])["state"] == "issued",
               message="reward issued again")

    # An operator cancels it: the coupon is deleted at the shop, then the points come back.
    balance = _balance(rpc, customer_id)
    cancelled = rpc.loyalty.cancel_reward(STORE_ID, customer_id, made["reward_id"], "ops")
    assert cancelled["state"] == "returned"
    assert shop.coupon_by_code(made["code"]) is None
    assert _balance(rpc, customer_id) == balance + 100
    events.wait_for(lambda got: of(events, "loyalty.reward_returned", made["reward_id"]))
    [returned] = of(events, "loyalty.reward_returned", made["reward_id"])
    assert (returned["reason"], returned["points_returned"]) == ("cancelled", 100)
    assert _balance(rpc, customer_id) == start
    balanced(rpc, customer_id)


def test_a_shop_outage_leaves_it_pending_and_a_refusal_gives_the_points_back(
        services, rpc, events, shop):
    _, customer_id = member(services, rpc, shop)
    start = _balance(rpc, customer_id)
    shop.coupons_down()
    pending = rpc.loyalty.redeem(STORE_ID, customer_id, 100)["reward"]
    assert pending["state"] == "pending" and pending["attempts"] == 1
    assert pending["last_error"] and pending["next_attempt_at"]
    assert rpc.loyalty.get_account(STORE_ID, customer_id)["rewards_pending"] == 1
    assert _balance(rpc, customer_id) == start - 100
    shop.reset_faults()
    wait_until(lambda: reward(rpc, customer_id, pending["reward_id"])["state"] == "issued",
               timeout=20, message="issued once the shop is back")
    assert shop.coupon_by_code(pending["code"]) is not None

    shop.refuse_coupon_writes()
    refused = rpc.loyalty.redeem(STORE_ID, customer_id, 100)["reward"]
    assert refused["state"] == "returned" and "refused" in refused["last_error"]
    assert _balance(rpc, customer_id) == start - 100  # the first reward's points only
    assert shop.coupon_by_code(refused["code"]) is None
    events.wait_for(lambda got: of(events, "loyalty.reward_returned", refused["reward_id"]))
    balanced(rpc, customer_id)


def test_an_expired_reward_is_deleted_at_the_shop_and_its_points_come_back(
        services, rpc, events, shop):
    _, customer_id = member(services, rpc, shop)
    start = _balance(rpc, customer_id)
    made = rpc.loyalty.redeem(STORE_ID, customer_id, 100)["reward"]
    assert shop.coupon_by_code(made["code"]) is not None
    MovedClock.offset = timedelta(days=90, seconds=1)
    wait_until(lambda: reward(rpc, customer_id, made["reward_id"])["state"] == "expired",
               timeout=20, message="expired by the reward step")
    assert shop.coupon_by_code(made["code"]) is None
    assert _balance(rpc, customer_id) == start
    events.wait_for(lambda got: of(events, "loyalty.reward_expired", made["reward_id"]))
    [expired] = of(events, "loyalty.reward_expired", made["reward_id"])
    assert (expired["reason"], expired["points_returned"]) == ("expired", 100)
    balanced(rpc, customer_id)
