"""A shop's history imported by a backfill messages nobody; a live order the same minute does.

notifications starts a workflow for `order.placed` or `customer.created` only when the order's
or the sign-up's `date_created` is within the store's `max_trigger_age_hours` (72 by default).
The other system tests turn that limit off (scenario.configure), since they replay months of
history as if it were live, so this test keeps the store's default, end to end: every service
its own OS process (the fault tests' stack), a fake shop whose customers signed up and ordered
months ago, a first-order SMS and a welcome email (both transactional, so no consent is needed
and only the age can hold them back), the history imported by `companion backfill`, and then
a new customer's signed webhooks dated now.

Sizes: TRIGGER_AGE_CUSTOMERS and TRIGGER_AGE_ORDERS (default 20 and 40), TRIGGER_AGE_SEED.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses

from services.notifications.policy import StoreSettings
from tests.system.fault_stack import FaultStack, StoreScenario, cli_json, size
from tests.system.scenario import pages

STORE = "ageshop"
CUSTOMERS, ORDERS = size("TRIGGER_AGE_CUSTOMERS", 20), size("TRIGGER_AGE_ORDERS", 40)
SEED = size("TRIGGER_AGE_SEED", 29)
LIVE_PHONE = "+49 151 7770002"


def _handled(stack: FaultStack, event_type: str) -> float:
    return stack.metric("notifications", "companion_events_handled_total",
                        service="notifications", event_type=event_type)


def _published(stack: FaultStack, event_type: str) -> float:
    return stack.metric("customer_sync", "companion_outbox_published_total",
                        service="customer_sync", event_type=event_type)


def _recipients(messages: list) -> list[str]:
    return [address.lower() for m in messages for _, address in getaddresses([m["To"] or ""])]


def test_backfilled_history_messages_nobody_but_a_live_order_does(stack):
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    # Sign-ups 120 days ago, orders over the 60 days after; the store keeps its default limit.
    scenario = StoreScenario(stack, STORE, SEED, CUSTOMERS, ORDERS, start=now - timedelta(days=120),
                             span_days=60, max_trigger_age_hours=None)
    shop, traffic = scenario.shop, scenario.traffic
    try:
        with stack.rpc() as rpc:
            limit = rpc.notifications.get_store_settings(STORE)["max_trigger_age_hours"]
            rpc.notifications.save_workflow(STORE, {
                "workflow_id": "welcome-mail", "name": "Welcome", "enabled": True,
                "trigger": {"event": "customer.created"}, "delay_seconds": 0,
                "channel": "email", "template": "welcome", "purpose": "transactional"})
        assert limit == StoreSettings().max_trigger_age_hours > 0
        newest = max(r["date_created_gmt"] for r in [*shop.customers.values(), *shop.orders.values()])
        assert datetime.fromisoformat(newest) < now - timedelta(hours=limit), newest

        mails_from, texts_from = len(stack.smtp.messages), len(stack.twilio.messages)
        done = stack.companion("--json", "backfill", "--store", STORE)
        assert done.returncode == 0, done.stdout + done.stderr
        assert cli_json(done)["status"] == "completed", done.stdout
        stack.quiet()
        scenario.lap("backfilled")

        # Every customer and order imported, and notifications heard each sign-up and order...
        expected = traffic.expected()
        with stack.rpc() as rpc:
            customers = pages(rpc.customer_sync.list_customers, STORE, None)
            orders = sum(len(pages(rpc.customer_sync.list_orders, STORE, c["customer_id"]))
                         for c in customers)
        assert len(customers) == len(expected["customers"]), (len(customers), traffic.summary())
        assert orders == expected["orders_total"] == len(shop.orders), orders
        assert _handled(stack, "customer.created") == _published(stack, "customer.created") \
            == len(customers)
        placed = _published(stack, "order.placed")
        assert placed > 0 and _handled(stack, "order.placed") == placed
        # ... and messaged nobody about any of it.
        sent = {"sms": [m.to for m in stack.twilio.messages[texts_from:]],
                "email": _recipients(stack.smtp.messages[mails_from:])}
        assert sent == {"sms": [], "email": []}, {k: (len(v), v) for k, v in sent.items()}

        # The same minute, a new customer signs up and orders: live news, messaged once each.
        shop.clock.catch_up(datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
                            - timedelta(minutes=3))  # the two changes below add a minute each
        signed_up = traffic.sign_up_now(billing={"phone": LIVE_PHONE})
        order = traffic.place_now(signed_up.resource_id, status="processing")
        assert traffic.send_once(signed_up) == 200
        assert traffic.send_once(order) == 200
        stack.quiet()
        scenario.lap("live order")

        texts = stack.twilio.messages[texts_from:]
        assert [m.to for m in texts] == ["+" + re.sub(r"\D", "", LIVE_PHONE)], texts
        assert "thanks for your first order" in texts[0].body
        email = shop.customers[signed_up.resource_id]["email"].lower()
        mails = stack.smtp.messages[mails_from:]
        assert _recipients(mails) == [email]
        assert mails[0]["Subject"].startswith("Welcome to System Shop")
        print(f"{STORE} timings:", scenario.timings)
    finally:
        scenario.close()
