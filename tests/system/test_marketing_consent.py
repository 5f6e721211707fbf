"""Marketing that may lawfully reach people, end to end: consent taken where it is given, a way
out that works from the email itself, and an address the mail server refuses never tried again.

Every service is its own OS process (the fault tests' stack), with the local SMTP server. A
fresh store maps its checkout's opt-in box (`_newsletter_optin`, "yes" or "1") to email
marketing. Its shop holds months of seeded history (demo/traffic.py) in which some
registered customers ticked the box at an old checkout; `companion backfill` brings those. Then,
the same hour, live checkouts arrive as signed webhooks: some tick the box (new and existing
customers), some leave it out, untick it or carry another plugin's key, and a block-checkout
draft carries a tick that is no checkout at all.

The expected audience is computed from the shop's own data (the documented rule, written out
here), never from the companion's. Then:

1. a marketing workflow (on a tag an operator gives everyone) emails exactly that audience;
2. the one-click POST (RFC 8058) to one recipient's `List-Unsubscribe` URL turns their email
   marketing off, and a forged token for another answers 404 and changes nothing;
3. a second marketing workflow, with the mail server refusing a third recipient (550 5.1.1):
   the unsubscribed one is not mailed, the one with the forged token is, the refused one is
   suppressed;
4. their orders are completed: the unsubscribed one still gets the transactional "on its way"
   email, and the refused address's email is held as suppressed though the server would now
   take it.

Deterministic: seeded shop, every wait is on a condition, email only (quiet hours hold
marketing SMS only, so the time of day cannot decide). Sizes: MARKETING_CUSTOMERS and
MARKETING_ORDERS (default 24 and 60), MARKETING_SEED.
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses
from typing import Callable

import requests

from demo.shop import FakeWooShop
from demo.traffic import WooTraffic
from tests.system.fault_stack import FaultStack, cli_json, size
from tests.system.scenario import pages

STORE = "consentshop"
CUSTOMERS, ORDERS = size("MARKETING_CUSTOMERS", 24), size("MARKETING_ORDERS", 60)
SEED = size("MARKETING_SEED", 43)
OPT_IN_KEY = "_newsletter_optin"
YES_VALUES = ("yes", "1")
NOT_A_CHECKOUT = {"checkout-draft", "trash"}  # docs/consent-capture.md: nothing captured
CAMPAIGNS = {"spring-sale": "Spring sale", "autumn-sale": "Autumn sale"}
SHIPPED_SUBJECT = "Your order is on its way"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 90.0) -> object:
    """Poll `condition` until it answers something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.5)


def recipients(messages: list) -> list[str]:
    return sorted(address.lower() for m in messages for _, address in getaddresses([m["To"] or ""]))


def meta(key: str, value: str) -> list[dict]:
    return [{"id": 1, "key": key, "value": value}]


def opted_in_from_shop(shop: FakeWooShop) -> dict[int, str]:
    """WooCommerce id -> email of each registered customer whose order holds a ticked box: the
    mapped key with a "yes" value (trimmed, any case), in an order that was a checkout."""
    found = {}
    for order in shop.orders.values():
        if not order["customer_id"] or order["status"] in NOT_A_CHECKOUT:
            continue
        if any(m["key"] == OPT_IN_KEY and str(m["value"]).strip().lower() in YES_VALUES
               for m in order["meta_data"]):
            found[order["customer_id"]] = shop.customers[order["customer_id"]]["email"].lower()
    return found


def add_store(stack: FaultStack, shop: FakeWooShop) -> None:
    """Add the store and its webhooks over the CLI, as an operator does; wait for the new
    store's first (empty) reconciliation, so the history comes by the backfill."""
    env = {"WOO_WEBHOOK_SECRET": f"whsec-{STORE}-1", "WOO_CONSUMER_KEY": shop.consumer_key,
           "WOO_CONSUMER_SECRET": shop.consumer_secret}
    added = stack.companion("stores", "add", "--store", STORE, "--shop-url", shop.base_url,
                            env=env)
    assert added.returncode == 0, added.stdout + added.stderr
    registered = stack.companion("webhooks", "register", "--store", STORE, "--delivery-url",
                                 stack.procs.web_url("customer_sync"))
    assert registered.returncode == 0, registered.stdout + registered.stderr
    with stack.rpc() as rpc:
        wait_for(lambda: rpc.customer_sync.store_health(STORE)["last_reconciled_at"],
                 "the store's first reconciliation")


def configure(stack: FaultStack) -> None:
    """The opt-in mapping, two marketing workflows on tags and a transactional one on an order
    completed. The store keeps its default trigger-age limit: the history starts nothing."""
    with stack.rpc() as rpc:
        rpc.customer_sync.set_consent_capture(STORE, {"rules": [
            {"scope": "order", "key": OPT_IN_KEY, "yes_values": list(YES_VALUES),
             "purpose": "email_marketing"}]}, "system-test")
        rpc.notifications.save_store_settings(STORE, {
            "name": "Consent Shop", "quiet_start": "00:00", "quiet_end": "00:00",
            "weekly_marketing_cap": 100})
        for tag, subject in CAMPAIGNS.items():
            slug = tag.replace("-", "_")
            rpc.notifications.save_template(STORE, {
                "slug": slug, "channel": "email",
                "subject": subject + ", {{ customer.first_name }}",
                "text": subject + ": 20 % off everything.", "html": f"<p>{subject}: 20 % off.</p>"})
            rpc.notifications.save_workflow(STORE, {
                "workflow_id": tag, "name": subject, "enabled": True,
                "trigger": {"event": "customer.tagged", "tag": tag}, "delay_seconds": 0,
                "channel": "email", "template": slug, "purpose": "marketing"})
        rpc.notifications.save_template(STORE, {
            "slug": "order_shipped", "channel": "email", "subject": SHIPPED_SUBJECT,
            "text": "Order {{ customer.last_order.number }} has shipped.",
            "html": "<p>Your order has shipped.</p>"})
        rpc.notifications.save_workflow(STORE, {
            "workflow_id": "shipped", "name": SHIPPED_SUBJECT, "enabled": True,
            "trigger": {"event": "order.updated", "to_status": "completed"}, "delay_seconds": 0,
            "channel": "email", "template": "order_shipped", "purpose": "transactional"})


def sends_of(stack: FaultStack, workflow_id: str) -> list[dict]:
    with stack.rpc() as rpc:
        return pages(lambda store, page: rpc.notifications.list_sends(
            store, {"workflow_id": workflow_id}, page), STORE)


def decided(stack: FaultStack, workflow_id: str, count: int) -> list[dict]:
    """The workflow's sends once there are `count` and none is still scheduled or sending (a
    send is marked sent only once the mail server took it), then the system quiet."""
    def final():
        sends = sends_of(stack, workflow_id)
        return sends if len(sends) == count and all(
            s["status"] not in ("scheduled", "sending") for s in sends) else None
    sends = wait_for(final, f"{count} {workflow_id} sends decided", timeout=180)
    stack.quiet()
    return sends


def campaign(stack: FaultStack, customer_ids: list[str], tag: str) -> list[dict]:
    """An operator tags everyone (news dated now): one send each, decided."""
    with stack.rpc() as rpc:
        tagged = rpc.segmentation.bulk_tag(STORE, customer_ids, [tag], "system-test")["results"]
    assert set(tagged.values()) == {"tagged"}, tagged
    return decided(stack, tag, len(customer_ids))


def test_marketing_reaches_those_who_opted_in_and_stops_when_they_say_so(stack):
    began = time.monotonic()
    timings: dict[str, float] = {}

    def lap(label: str) -> None:
        timings[label] = round(time.monotonic() - began, 1)

    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    rng = random.Random(SEED)
    shop = FakeWooShop(seed=SEED, ping_webhooks=True).start()
    try:
        add_store(stack, shop)
        configure(stack)
        lap("store ready")

        # The shop's history: sign-ups 150 days ago, orders over the 60 days after. Some
        # registered customers ticked the box at one old checkout; one customer's tick is in
        # a checkout draft, which is no checkout.
        traffic = WooTraffic(shop, SEED, CUSTOMERS, ORDERS, start=now - timedelta(days=150),
                             span_days=60).build()
        placed = sorted(oid for oid, o in shop.orders.items() if o["customer_id"]
                        and o["status"] in ("processing", "completed"))
        buyers = sorted({shop.orders[oid]["customer_id"] for oid in placed})
        old_yes = set(rng.sample(buyers, max(2, len(buyers) // 3)))
        for woo_id in sorted(old_yes):
            oid = rng.choice([o for o in placed if shop.orders[o]["customer_id"] == woo_id])
            shop.update_order(oid, meta_data=meta(OPT_IN_KEY, rng.choice(("yes", "1", " Yes "))))
        drafted = rng.choice(sorted(set(buyers) - old_yes))
        draft = next(o for o in placed if shop.orders[o]["customer_id"] == drafted)
        shop.update_order(draft, status="checkout-draft", meta_data=meta(OPT_IN_KEY, "yes"))

        mails_from = stack.smtp.received
        done = stack.companion("--json", "backfill", "--store", STORE)
        assert done.returncode == 0, done.stdout + done.stderr
        assert cli_json(done)["status"] == "completed", done.stdout
        stack.quiet()
        assert stack.smtp.received == mails_from  # old history: no message
        lap("backfilled")

        # Live checkouts the same hour, as signed webhooks: ticks, an unticked box, another
        # plugin's key, no box; new customers too.
        shop.clock.catch_up(now - timedelta(minutes=60))
        others = sorted(set(shop.customers) - old_yes - {drafted})
        live_yes, live_other = others[:4], others[4:7]
        again_unticked = sorted(old_yes)[:2]  # ticked before, not this time: still consenting
        deliveries, live_orders = [], {}
        for woo_id, box in [*((w, meta(OPT_IN_KEY, "yes")) for w in live_yes),
                            (live_other[0], meta(OPT_IN_KEY, "no")),
                            (live_other[1], meta("_terms_accepted", "yes")),
                            (live_other[2], []),
                            *((w, meta(OPT_IN_KEY, "")) for w in again_unticked)]:
            delivery = traffic.place_now(woo_id, status="processing", meta_data=box)
            deliveries.append(delivery)
            live_orders[woo_id] = delivery.resource_id
        for box in (meta(OPT_IN_KEY, "1"), meta(OPT_IN_KEY, "YES"), []):
            signed_up = traffic.sign_up_now()
            deliveries += [signed_up, traffic.place_now(signed_up.resource_id,
                                                        status="processing", meta_data=box)]
        assert [traffic.send_once(d) for d in deliveries] == [200] * len(deliveries)
        stack.quiet()
        assert stack.smtp.received == mails_from  # no workflow for a checkout
        lap("live checkouts")

        expected = opted_in_from_shop(shop)
        assert old_yes <= set(expected) and set(live_yes) <= set(expected)
        assert drafted not in expected and not set(live_other) & set(expected)
        with stack.rpc() as rpc:
            customers = pages(rpc.customer_sync.list_customers, STORE, None)
        assert len(customers) == len(traffic.expected()["customers"])
        by_woo = {c["woo_customer_id"]: c["customer_id"] for c in customers if c.get("registered")}
        everyone = sorted(c["customer_id"] for c in customers)

        # 1. The first marketing email reaches exactly those who opted in, once each: those
        # whose only tick is in the history the backfill brought among them.
        sends = campaign(stack, everyone, "spring-sale")
        spring = stack.smtp.messages[mails_from:]
        assert recipients(spring) == sorted(expected.values()), (
            sorted(set(recipients(spring)) ^ set(expected.values())))
        assert {expected[w] for w in old_yes} <= set(recipients(spring))
        held = {s["held_reason"] for s in sends if s["status"] != "sent"}
        assert held == {"no_consent"}, held
        for mail in spring:
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", mail["To"]
            assert mail["List-Unsubscribe"].startswith(f"<{stack.procs.web_url('notifications')}"
                                                       "/unsubscribe/"), mail["List-Unsubscribe"]
        lap("first campaign")

        # 2. Three recipients with live orders: one unsubscribes in one click, one has a token
        # forged in their name, and the mail server will refuse the third.
        unsubscriber, forged_for, refused = (by_woo[w] for w in live_yes[:3])
        mail_of = {by_woo[w]: expected[w] for w in live_yes[:3]}
        link = {recipients([m])[0]: m["List-Unsubscribe"].strip("<>") for m in spring}

        one_click = requests.post(link[mail_of[unsubscriber]], timeout=30,
                                  data="List-Unsubscribe=One-Click",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert one_click.status_code == 200, one_click.text

        with stack.rpc() as rpc:
            def unsubscribed():
                record = rpc.gdpr.get_consent(STORE, unsubscriber)
                state = record["purposes"].get("email_marketing") or {}
                return state.get("granted") is False and record
            record = wait_for(unsubscribed, "gdpr recorded the unsubscribe")
            assert record["history"][-1]["source"] == "unsubscribe_link", record["history"]
            consent_before = rpc.gdpr.get_consent(STORE, forged_for)
        assert consent_before["purposes"]["email_marketing"]["granted"] is True

        genuine = link[mail_of[forged_for]]
        base, token = genuine.rsplit("/", 1)
        forged_mac = token[:22] + ("B" if token[22] != "B" else "C") + token[23:]
        stranger = "A" * 22 + token[22:]  # their signature on another link id
        for forged in (forged_mac, stranger):
            answer = requests.post(f"{base}/{forged}", data="List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"},
                                   timeout=30)
            assert answer.status_code == 404, (forged, answer.status_code)
        stack.quiet()
        with stack.rpc() as rpc:
            assert rpc.gdpr.get_consent(STORE, forged_for) == consent_before
        lap("one click and forgeries")

        # 3. The next marketing email: not to who unsubscribed, still to the forged token's
        # owner, and refused by the mail server for the third, whose address is suppressed.
        stack.smtp.reject_recipient(mail_of[refused], 550)
        before = stack.smtp.received
        second = set(expected.values()) - {mail_of[unsubscriber], mail_of[refused]}
        sends = campaign(stack, everyone, "autumn-sale")
        autumn = stack.smtp.messages[before:]
        assert recipients(autumn) == sorted(second)
        assert mail_of[forged_for] in recipients(autumn)
        by_customer = {s["customer_id"]: s for s in sends}
        assert by_customer[unsubscriber]["held_reason"] == "no_consent", by_customer[unsubscriber]
        assert by_customer[refused]["status"] == "failed", by_customer[refused]
        with stack.rpc() as rpc:
            suppressed = rpc.notifications.list_suppressions(
                STORE, {"channel": "email", "address": mail_of[refused]})["items"]
        assert [(s["kinds"], s["blocks"]) for s in suppressed] == [(["smtp_refusal"], "all")]
        lap("second campaign")

        # 4. Transactional email: still to who unsubscribed from marketing; held for the
        # suppressed address, though the mail server would take it now.
        stack.smtp.accept_recipient(mail_of[refused])
        before = stack.smtp.received
        completed = [traffic.change_status_now(live_orders[w], "completed") for w in live_yes[:3]]
        assert [traffic.send_once(d) for d in completed] == [200] * 3
        shipped = {s["customer_id"]: s for s in decided(stack, "shipped", 3)}
        mails = stack.smtp.messages[before:]
        assert recipients(mails) == sorted([mail_of[unsubscriber], mail_of[forged_for]])
        assert {m["Subject"] for m in mails} == {SHIPPED_SUBJECT}
        assert all(m["List-Unsubscribe"] is None for m in mails)  # transactional: no way out
        assert shipped[refused]["held_reason"] == "suppressed", shipped[refused]
        assert shipped[refused]["status"] != "sent"
        lap("order completed")
        print(f"{STORE}: {len(customers)} customers, {len(expected)} opted in ({len(old_yes)} "
              f"at an old checkout only, {len(expected) - len(old_yes)} at a live one); "
              f"timings: {timings}")
    finally:
        shop.stop()
