"""A shop's history imported by a backfill messages nobody; a live order the same minute does.

notifications starts a workflow for `order.placed` or `customer.created` only when the order's
or the sign-up's `date_created` is within the store's `max_trigger_age_hours` (72 by default).
The other system tests turn that limit off (scenario.configure), since they replay months of
history as if it were live, so this test keeps the store's default, end to end: every service
its own OS process (the fault tests' stack), a fake shop whose customers signed up and ordered
months ago, a first-order SMS and a welcome email (both transactional, so no consent is needed
and only the age can hold them back), the history imported by `companion backfill`, and then
a new customer's signed webhooks dated now.

The second test does the same for what segmentation and loyalty derive from that history: a
backfill makes big spenders, VIPs (the store's first recompute puts its top spenders over the
cutoff) and silver or gold members, each announced today but dated (`fact_at`) by the orders
behind it, so their workflows start nothing; a live order that makes an existing customer a
VIP, a big spender and gold, the same minute, starts each of them once.

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
VIP_STORE = "vipshop"
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


# Transactional, like the test above: no consent is needed, so only the age can hold them back.
_NEWS = {
    "vip-mail": ({"event": "customer.segment_changed", "to": "vip"}, "You are a VIP now"),
    "tier-mail": ({"event": "loyalty.tier_changed", "direction": "up"}, "You moved up a tier"),
    "big-spender-mail": ({"event": "customer.tagged", "tag": "big-spender"}, "Thank you"),
}


def test_what_a_backfill_derives_messages_nobody_but_a_live_vip_order_does(stack):
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    scenario = StoreScenario(stack, VIP_STORE, SEED + 1, CUSTOMERS, ORDERS,
                             start=now - timedelta(days=120), span_days=60,
                             max_trigger_age_hours=None)
    shop = scenario.shop
    try:
        with stack.rpc() as rpc:
            for workflow_id, (trigger, subject) in _NEWS.items():
                rpc.notifications.save_template(VIP_STORE, {
                    "slug": workflow_id.replace("-", "_"), "channel": "email",
                    "subject": subject + ", {{ customer.first_name }}", "text": subject + ".",
                    "html": f"<p>{subject}.</p>"})
                rpc.notifications.save_workflow(VIP_STORE, {
                    "workflow_id": workflow_id, "name": subject, "enabled": True,
                    "trigger": trigger, "delay_seconds": 0, "channel": "email",
                    "template": workflow_id.replace("-", "_"), "purpose": "transactional"})
        mails_from, texts_from = len(stack.smtp.messages), len(stack.twilio.messages)
        derived_before = {t: _handled(stack, t) for t in (
            "customer.tagged", "customer.segment_changed", "loyalty.tier_changed")}

        done = stack.companion("--json", "backfill", "--store", VIP_STORE)
        assert done.returncode == 0, done.stdout + done.stderr
        assert cli_json(done)["status"] == "completed", done.stdout
        stack.quiet()
        with stack.rpc() as rpc:  # what the hourly recompute does: the store's VIP cutoff
            rpc.segmentation.recompute_store(VIP_STORE)
        stack.quiet()
        scenario.lap("backfilled and recomputed")

        # The history made big spenders, VIPs and tiers, and notifications heard of each...
        with stack.rpc() as rpc:
            customers = pages(rpc.customer_sync.list_customers, VIP_STORE, None)
            profiles = {c["customer_id"]: rpc.segmentation.get_profile(VIP_STORE, c["customer_id"])
                        for c in customers}
            tiers = {}
            for c in customers:
                try:
                    tiers[c["customer_id"]] = rpc.loyalty.get_account(
                        VIP_STORE, c["customer_id"])["tier"]
                except Exception:  # noqa: BLE001 - no order, no account
                    tiers[c["customer_id"]] = None
        segments = [p["segment"] for p in profiles.values()]
        big = [cid for cid, p in profiles.items() if any(t["tag"] == "big-spender" for t in p["tags"])]
        assert "vip" in segments and big, (segments, big)
        assert {"silver", "gold"} & set(tiers.values()), tiers
        for event_type, before in derived_before.items():
            assert _handled(stack, event_type) > before, event_type
        # ... and messaged nobody about any of it.
        sent = {"sms": [m.to for m in stack.twilio.messages[texts_from:]],
                "email": _recipients(stack.smtp.messages[mails_from:])}
        assert sent == {"sms": [], "email": []}, {k: (len(v), v) for k, v in sent.items()}

        # The same minute, an existing registered customer, neither VIP, big spender nor gold,
        # places an order of 6,000.00: live news, each workflow once.
        registered = {c["customer_id"]: c for c in customers if c.get("registered")}
        # ... and with an order placed before (so not a first order), chosen by the shop's id:
        # ids here are random, and the first of them was someone without orders now and then.
        ordered = {o["customer_id"] for o in shop.orders.values()
                   if o["status"] in ("pending", "processing", "on-hold", "completed")}
        candidates = sorted((c["woo_customer_id"], cid) for cid, c in registered.items()
                            if profiles[cid]["segment"] != "vip" and cid not in big
                            and tiers[cid] != "gold" and c["woo_customer_id"] in ordered)
        assert candidates, (segments, big, tiers)
        chosen = registered[candidates[0][1]]
        shop.clock.catch_up(datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
                            - timedelta(minutes=2))  # the order below adds a minute
        order = scenario.traffic.place_now(chosen["woo_customer_id"], status="processing",
                                           total="6000.00")
        assert scenario.traffic.send_once(order) == 200
        stack.quiet()
        scenario.lap("live order")

        mails = stack.smtp.messages[mails_from:]
        email = shop.customers[chosen["woo_customer_id"]]["email"].lower()
        assert _recipients(mails) == [email] * 3, _recipients(mails)
        assert sorted(m["Subject"].split(",")[0] for m in mails) == sorted(
            subject for _, subject in _NEWS.values())
        assert stack.twilio.messages[texts_from:] == []  # not their first order
        print(f"{VIP_STORE} timings:", scenario.timings)
    finally:
        scenario.close()
