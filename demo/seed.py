"""A believable store for the demo, the same for the same seed: two years of history in the
simulated shop, then the store set up through the companion's HTTP API as its operator would
(consent at checkout, message templates and workflows, the loyalty programme, tagging rules and
saved segments)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

from demo.shop import FakeWooShop
from demo.traffic import WooTraffic

DEFAULT_SEED = 2024
HISTORY_DAYS = 730
OPT_IN_KEY = "_newsletter_optin"  # the checkout's "send me news" box, as a plugin stores it
BIRTHDAY_SHARE = 0.6  # of registered customers, who gave a birthday at sign-up
REGULAR_ORDERS = 5  # the "regular" tag's threshold, and the demo's first thank-you email
BIG_SPENDER = 30_000  # minor units: 300.00


def build_history(shop: FakeWooShop, seed: int, customers: int, orders: int) -> WooTraffic:
    """Customers and orders of the last two years in `shop` (guests, refunds, cancellations
    included: demo/traffic.py), birthdays for most, and a ticked opt-in box on the first
    order of those who consented. Nothing is delivered: the backfill brings the history."""
    # Follow-ups (payments, shipping, refunds) run on past the last order; a rehearsal in a
    # scratch shop of the same seed says by how much, so the history ends just before now.
    rehearsal = FakeWooShop(seed=shop.seed)
    began = rehearsal.clock.now()
    WooTraffic(rehearsal, seed, customers, orders, span_days=HISTORY_DAYS).build()
    lasted = rehearsal.clock.now() - began
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    traffic = WooTraffic(shop, seed, customers, orders, start=now - lasted - timedelta(hours=1),
                         span_days=HISTORY_DAYS).build()
    rng = random.Random(seed * 31 + 5)
    meta_id = 900_000_000
    for woo_id in sorted(shop.customers):
        if rng.random() < BIRTHDAY_SHARE:
            born = datetime(rng.randrange(1950, 2005), rng.randrange(1, 13), rng.randrange(1, 29))
            meta_id += 1
            shop.update_customer(woo_id, meta_data=[
                {"id": meta_id, "key": "birthday", "value": born.strftime("%Y-%m-%d")}])
    first_orders: dict[int, dict] = {}
    for order in sorted(shop.orders.values(), key=lambda o: o["id"]):
        if order["customer_id"] in traffic.consenting:
            first_orders.setdefault(order["customer_id"], order)
    with shop._lock:
        for order in first_orders.values():
            meta_id += 1
            order["meta_data"].append({"id": meta_id, "key": OPT_IN_KEY, "value": "yes"})
    return traffic


class Api:
    """The companion's HTTP API with one key, failing loudly on any refusal."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.session.request(method, self.base + path, json=body,
                                        params=params or None, timeout=30)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} answered {response.status_code}: "
                               f"{response.text[:500]}")
        return response.json()


def email(subject: str, text: str, html: str, name: str) -> dict:
    return {"channel": "email", "name": name, "subject": subject, "text": text, "html": html}


TEMPLATES = {
    "regular_thanks": email(
        "You are one of our regulars, {{ customer.first_name }}",
        "Hi {{ customer.first_name }},\n\nThank you for coming back to {{ store.name }} so "
        "often. You have {{ customer.points }} points to spend on your next order.",
        "<p>Hi {{ customer.first_name }},</p><p>Thank you for coming back to {{ store.name }} so "
        "often. You have {{ customer.points }} points to spend on your next order.</p>",
        "Regulars thank-you"),
    "order_shipped": email(
        "Your order {{ customer.last_order.number }} is on its way",
        "Hi {{ customer.first_name }},\n\nOrder {{ customer.last_order.number }} has left "
        "{{ store.name }}.",
        "<p>Hi {{ customer.first_name }},</p><p>Order {{ customer.last_order.number }} has left "
        "{{ store.name }}.</p>", "Order shipped"),
    "first_order_sms": {"channel": "sms", "name": "First order SMS",
                        "body": "{{ store.name }}: thanks for your first order, "
                                "{{ customer.first_name }}!"},
}

WORKFLOWS = [
    {"workflow_id": "regulars", "name": "Thank regulars (5th order)", "enabled": True,
     "trigger": {"event": "customer.tagged", "tag": "regular"}, "delay_seconds": 0,
     "channel": "email", "template": "regular_thanks", "purpose": "marketing"},
    {"workflow_id": "first-order-sms", "name": "First order SMS", "enabled": True,
     "trigger": {"event": "order.placed", "first_order": True}, "delay_seconds": 0,
     "channel": "sms", "template": "first_order_sms", "purpose": "transactional"},
    {"workflow_id": "shipped", "name": "Order shipped", "enabled": True,
     "trigger": {"event": "order.updated", "to_status": "completed"}, "delay_seconds": 0,
     "channel": "email", "template": "order_shipped", "purpose": "transactional"},
    {"workflow_id": "birthday", "name": "Birthday wishes", "enabled": True,
     "trigger": {"date": "birthday"}, "delay_seconds": 0,
     "channel": "email", "template": "birthday", "purpose": "marketing"},
]

RULES = [
    {"rule_id": "big-spender", "name": "Spent over 300.00", "position": 10, "enabled": True,
     "match": "all", "conditions": [{"field": "total_spent", "op": "gt", "value": BIG_SPENDER}],
     "actions": [{"type": "add_tag", "value": "big-spender"}]},
    {"rule_id": "regular", "name": f"{REGULAR_ORDERS} orders or more", "position": 20,
     "enabled": True, "match": "all",
     "conditions": [{"field": "orders_count", "op": "gte", "value": REGULAR_ORDERS}],
     "actions": [{"type": "add_tag", "value": "regular"}]},
    {"rule_id": "lapsed", "name": "No order for half a year", "position": 30, "enabled": True,
     "match": "all", "conditions": [{"field": "days_since_last_order", "op": "gt", "value": 180}],
     "actions": [{"type": "add_tag", "value": "lapsed"}]},
]

SEGMENTS = [
    {"segment_id": "big-regulars", "name": "Big spenders who come back", "match": "all",
     "conditions": [{"field": "tags", "op": "contains", "value": "big-spender"},
                    {"field": "tags", "op": "contains", "value": "regular"}]},
    {"segment_id": "win-back", "name": "Lapsed, once valuable", "match": "all",
     "conditions": [{"field": "tags", "op": "contains", "value": "lapsed"},
                    {"field": "total_spent", "op": "gt", "value": 10_000}]},
]

PROGRAMME = {
    "tiers": [{"name": "bronze", "min_points": 0, "max_points": 999, "rate": 10},
              {"name": "silver", "min_points": 1000, "max_points": 4999, "rate": 12},
              {"name": "gold", "min_points": 5000, "max_points": None, "rate": 15}],
    "points_per_unit": 100, "min_redeem_points": 500, "expiry_months": 24,
    "coupon_prefix": "demo",
}


def configure_store(api: Api, shop_url: str) -> None:
    """Everything an operator sets up before the first backfill, over the HTTP API."""
    api.call("PUT", "/consent/capture", {"rules": [
        {"scope": "order", "key": OPT_IN_KEY, "yes_values": ["yes", "1"],
         "purpose": "email_marketing"}]})
    api.call("PUT", "/notifications/settings", {"name": "Demo Tea House", "url": shop_url})
    for slug, template in TEMPLATES.items():
        api.call("PUT", f"/notifications/templates/{slug}", template)
    for workflow in WORKFLOWS:
        api.call("POST", "/notifications/workflows", workflow)
    api.call("PUT", "/loyalty/programme", PROGRAMME)
    for rule in RULES:
        api.call("POST", "/rules", rule)
    for segment in SEGMENTS:
        api.call("POST", "/segments", segment)
