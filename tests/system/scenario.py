"""The system scenario's shared parts: the store's rules and workflows, and the consistency
checks that compare every service with the traffic driver's oracle (demo/traffic.py).

`tests/system/test_system.py` runs them once at size, `tests/system/test_kill.py` after killing
each service in turn (both set up alike: `plan_traffic`, `quiet_recorder`);
`tests/system/test_faults.py` runs them after each injected fault, one store per fault. The checks are computed from the shop, never
from the services: customer and order counts and each order's state (customer_sync); order
counts, spend, segments and rule tags (segmentation); each balance against its ledger and the
orders (loyalty); each triggered email and SMS sent exactly once, consent respected
(notifications).
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import getaddresses
from typing import Callable

from demo.traffic import EARNING, WooTraffic
from tests.system.harness import wait_quiet

BIG_SPENDER = 30_000  # minor units: the rule tags customers who spent over 300.00
FREQUENT = 10  # the rule tags customers with at least this many counted orders
TIER_RATES = ((0, 10), (1000, 12), (5000, 15))  # the default programme, written out


def pages(call, *args, key="next_cursor", size=500) -> list:
    cursor, items = None, []
    while True:
        page = call(*args, {"size": size, "cursor": cursor})
        items.extend(page["items"])
        cursor = page.get(key)
        if not cursor:
            return items


def opt_in_consenting(rpc, store: str, traffic: WooTraffic) -> None:
    """The plan's customers who opt in to marketing email, given that consent over RPC as an
    operator would (the shop's consent plugin would otherwise)."""
    registered = {c["woo_customer_id"]: c for c in pages(rpc.customer_sync.list_customers, store,
                                                         None) if c.get("registered")}
    for woo_id in sorted(traffic.consenting):
        rpc.gdpr.set_consent(store, registered[woo_id]["customer_id"], "email_marketing", True,
                             "operator", "system-test", "opted in at checkout")


def search_pages(rpc, store: str) -> list[dict]:
    cursor, items = None, []
    while True:
        page = rpc.segmentation.search_customers(store, None, None, {"size": 500, "cursor": cursor})
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def history(rpc, store: str, customer_id: str) -> list[dict]:
    cursor, items = None, []
    while True:
        page = rpc.loyalty.history(store, customer_id, {"size": 500, "cursor": cursor})
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if cursor is None:
            return items


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone or "")


def _parse(gmt: str) -> datetime:
    return datetime.fromisoformat(gmt).replace(tzinfo=timezone.utc)


def expected_segment(c: dict, now: datetime, cutoff: int | None) -> str:
    """The product's segment rules (docs/services/segmentation.md), written out independently."""
    n, spent = c["orders_count"], c["total_spent"]
    if n == 0:
        return "prospect"
    since_first = max(0, (now - _parse(c["first_order_at"])) // timedelta(days=1))
    since_last = max(0, (now - _parse(c["last_order_at"])) // timedelta(days=1))
    vip = spent > 500_000 or (cutoff is not None and spent > 0 and spent >= cutoff)
    if n >= 2 and since_last > 90 and (spent >= 10_000 or vip):
        return "at_risk"
    if vip:
        return "vip"
    if since_first <= 30 and n < 3:
        return "new"
    if n == 1 and since_first > 30:
        return "one_time"
    return "regular"


def tier_rate(points_in_window: int) -> int:
    rate = TIER_RATES[0][1]
    for floor, r in TIER_RATES:
        if points_in_window >= floor:
            rate = r
    return rate


def configure(rpc, store: str, max_trigger_age_hours: int | None = 0) -> None:
    """Tag rules and two workflows: marketing email to big spenders, a transactional SMS on a
    customer's first order. Quiet hours off and a high weekly cap, so real time cannot decide;
    by default no age limit on triggers, since the traffic replays months of history as if
    live (None keeps the store's default limit, for a test of that limit)."""
    settings = {"name": "System Shop", "quiet_start": "00:00", "quiet_end": "00:00",
                "weekly_marketing_cap": 100}
    if max_trigger_age_hours is not None:
        settings["max_trigger_age_hours"] = max_trigger_age_hours
    rpc.notifications.save_store_settings(store, settings)
    rpc.notifications.save_template(store, {
        "slug": "big_spender", "channel": "email", "subject": "Thank you, {{ customer.first_name }}",
        "text": "You are one of our best customers.", "html": "<p>You are one of our best customers.</p>"})
    rpc.notifications.save_template(store, {
        "slug": "first_order_sms", "channel": "sms", "body": "{{ store.name }}: thanks for your first order!"})
    rpc.notifications.save_workflow(store, {
        "workflow_id": "big-spender-mail", "name": "Big spender thanks", "enabled": True,
        "trigger": {"event": "customer.tagged", "tag": "big-spender"}, "delay_seconds": 0,
        "channel": "email", "template": "big_spender", "purpose": "marketing"})
    rpc.notifications.save_workflow(store, {
        "workflow_id": "first-order-sms", "name": "First order SMS", "enabled": True,
        "trigger": {"event": "order.placed", "first_order": True}, "delay_seconds": 0,
        "channel": "sms", "template": "first_order_sms", "purpose": "transactional"})
    rpc.segmentation.save_rule(store, {
        "rule_id": "big-spender", "name": "Spent over 300", "position": 10, "enabled": True,
        "match": "all", "conditions": [{"field": "total_spent", "op": "gt", "value": BIG_SPENDER}],
        "actions": [{"type": "add_tag", "value": "big-spender"}]})
    rpc.segmentation.save_rule(store, {
        "rule_id": "frequent", "name": "Ten orders", "position": 20, "enabled": True,
        "match": "all", "conditions": [{"field": "orders_count", "op": "gte", "value": FREQUENT}],
        "actions": [{"type": "add_tag", "value": "frequent"}]})



def messages_sent(system: dict) -> Callable[[], tuple]:
    """What the SMTP server and Twilio have received so far, as one comparable value."""
    smtp, twilio = system["smtp"], system["twilio"]
    return lambda: (smtp.received, len(twilio.messages))


def quiet_recorder(system: dict, timings: dict[str, float]) -> Callable[[str], None]:
    """`quiet(label)` waits until the system fixture's vhost is quiet and no message is still
    being sent (harness.wait_quiet), and records the wait in `timings` as "quiet after <label>"."""
    admin, vhost, sent = system["admin"], system["vhost"], messages_sent(system)

    def quiet(label: str) -> None:
        timings[f"quiet after {label}"] = wait_quiet(admin, vhost, sent)
    return quiet


def plan_traffic(shop, seed: int, customers: int, orders: int) -> WooTraffic:
    """The seeded traffic of a shop's last 200 days, built (and its plan printed) up front, so
    that delivering it measures the companion and not the driver."""
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    traffic = WooTraffic(shop, seed, customers, orders,
                         start=now - timedelta(days=200), span_days=199).build()
    print("plan:", traffic.summary())
    return traffic

def outcome_unknown_sends(send_log: list[dict], channel: str, senders_killed: bool) -> list[str]:
    """The sends of `channel` in a customer's log that a killed sender left failed with
    "outcome unknown" (it was handing them to the provider; notifications does not send them
    again: at most once by design, docs/services/notifications.md, Sending). Only a run that killed a sender may
    excuse a missing message so: anywhere else there are none to excuse."""
    if not senders_killed:
        return []
    return [s["_id"] for s in send_log if s.get("channel") == channel
            and s.get("status") == "failed"
            and str(s.get("reason", "")).startswith("outcome unknown")]


def check_consistency(rpc, store: str, traffic: WooTraffic, emails: list, sms: list,
                      senders_killed: bool = False) -> dict:
    """Compare every service's state for `store` with the oracle; AssertionError listing every
    inconsistency found. `emails` and `sms` are the messages the SMTP server and Twilio received
    for this store (a slice, when several stores share them one after the other);
    `senders_killed`: the run killed notifications, so a send left "outcome unknown" is no
    inconsistency. Answers what the checks read (`expected`, `customers` by oracle key,
    segmentation `rows`), for more."""
    expected = traffic.expected()
    problems: dict[str, list] = {}

    def problem(kind: str, *detail) -> None:
        problems.setdefault(kind, []).append(detail)

    # -- customer_sync: customers and orders ------------------------------------------------
    customers = pages(rpc.customer_sync.list_customers, store, None)
    by_key = {}
    for c in customers:
        key = f"woo:{c['woo_customer_id']}" if c.get("registered") else f"guest:{(c['email'] or '').lower()}"
        if key in by_key:
            problem("customer twice", key)
        by_key[key] = c
    assert len(customers) == len(expected["customers"]), (
        f"{len(customers)} customers, the shop implies {len(expected['customers'])}: missing "
        f"{sorted(set(expected['customers']) - set(by_key))[:10]}, unexpected "
        f"{sorted(set(by_key) - set(expected['customers']))[:10]}")
    assert sum(1 for c in customers if c.get("registered")) == expected["registered_total"]

    orders_seen = 0
    for key, exp in expected["customers"].items():
        c = by_key.get(key)
        if c is None:
            problem("customer missing", key)
            continue
        orders = pages(rpc.customer_sync.list_orders, store, c["customer_id"])
        orders_seen += len(orders)
        held = {str(o["order_id"]): o for o in orders}
        for order_id, o in exp["loyalty_orders"].items() if exp["registered"] else ():
            h = held.get(order_id)
            if h is None:
                problem("order missing", key, order_id)
            elif (h["status"], h["total"]["amount"], h["total_refunded"]["amount"]) != (
                    o["status"], o["total"], o["refunded"]):
                problem("order state", key, order_id, (h["status"], h["total"]["amount"],
                        h["total_refunded"]["amount"]), (o["status"], o["total"], o["refunded"]))
        if len(orders) != exp["orders"]:
            problem("order count", key, len(orders), exp["orders"])
    assert orders_seen == expected["orders_total"] == len(traffic.shop.orders), (orders_seen, len(traffic.shop.orders))

    # -- segmentation: stats, segments, tags -------------------------------------------------
    rows = {r["customer_id"]: r for r in search_pages(rpc, store)}
    paying = sorted((c["total_spent"] for c in expected["customers"].values() if c["total_spent"] > 0),
                    reverse=True)
    cutoff = paying[max(1, math.floor(0.1 * len(paying))) - 1] if paying else None
    seg_now = datetime.now(timezone.utc)
    tagged: dict[str, set] = {}
    for key, exp in expected["customers"].items():
        c = by_key.get(key)
        row = rows.get(c["customer_id"]) if c else None
        if row is None:
            problem("profile missing", key)
            continue
        stats = row["stats"]
        got = (stats["orders_count"], (stats["total_spent"] or {}).get("amount", 0) if stats["total_spent"] else 0)
        if got != (exp["orders_count"], exp["total_spent"]):
            problem("spend", key, got, (exp["orders_count"], exp["total_spent"]))
        segment = expected_segment(exp, seg_now, cutoff)
        if row["segment"] != segment:
            problem("segment", key, row["segment"], segment)
        tagged[key] = set(row["tags"])
        big_must, big_may = exp["total_spent"] > BIG_SPENDER, exp["max_spent"] > BIG_SPENDER
        if big_must and "big-spender" not in row["tags"]:
            problem("tag big-spender missing", key, exp["total_spent"])
        if "big-spender" in row["tags"] and not big_may:
            problem("tag big-spender unearned", key, exp["max_spent"])
        if exp["orders_count"] >= FREQUENT and "frequent" not in row["tags"]:
            problem("tag frequent missing", key, exp["orders_count"])
        if "frequent" in row["tags"] and exp["orders"] < FREQUENT:
            problem("tag frequent unearned", key, exp["orders"])

    # -- loyalty: balance = ledger = what the orders imply ------------------------------------
    for key, exp in expected["customers"].items():
        if not exp["registered"] or key not in by_key:
            continue
        customer_id = by_key[key]["customer_id"]
        try:
            account = rpc.loyalty.get_account(store, customer_id)
            entries = sorted(history(rpc, store, customer_id), key=lambda e: e["seq"])
        except Exception as exc:  # no account: only right when no order ever earned
            if any(o["ever_earning"] and o["basis"] >= 10 for o in exp["loyalty_orders"].values()):
                problem("loyalty account missing", key, type(exc).__name__)
            continue
        points = [e for e in entries if e["book"] == "points"]
        keys = Counter(e["key"] for e in points)
        if any(n > 1 for n in keys.values()):
            problem("ledger key twice", key, [k for k, n in keys.items() if n > 1])
        window, earned, net = 0, {}, Counter()
        for e in points:
            if e["kind"] == "earn":
                o = exp["loyalty_orders"].get(str(e["order_id"]))
                rate = tier_rate(window)
                if o is None:
                    problem("earn for an unknown order", key, e["order_id"])
                elif (e["details"]["rate"], e["delta"]) != (rate, o["basis"] * rate // 100):
                    problem("earn amount", key, e["order_id"], (e["details"]["rate"], e["delta"]),
                            (rate, o["basis"] * rate // 100))
                earned[str(e["order_id"])] = e["delta"]
            window += e["delta"] if e["kind"] in ("earn", "reverse") else 0
            if e.get("order_id") is not None:
                net[str(e["order_id"])] += e["delta"]
        implied = 0
        for order_id, o in exp["loyalty_orders"].items():
            if o["status"] in EARNING:
                if order_id not in earned and o["basis"] * 10 // 100 > 0:
                    problem("earn missing", key, order_id, o)
                    continue
                e = earned.get(order_id, 0)
                want = e - e * min(o["refunded"], o["total"]) // o["total"]
            else:
                want = 0
            if net[order_id] != want:
                problem("order points", key, order_id, net[order_id], want, o)
            implied += want
        ledger_sum = sum(e["delta"] for e in points)
        if not (account["balance"] == ledger_sum == implied):
            problem("balance", key, account["balance"], ledger_sum, implied)

    # -- notifications: each triggered message exactly once, consent respected ---------------
    emails_to = Counter()
    for message in emails:
        for _, address in getaddresses([message["To"] or ""]):
            emails_to[address.lower()] += 1
    sms_to = Counter(_digits(m.to) for m in sms)
    phone_owner: dict[str, set] = {}
    for key, exp in expected["customers"].items():
        for phone in exp["phones"]:
            phone_owner.setdefault(_digits(phone), set()).add(key)
    known_emails = {e for exp in expected["customers"].values() for e in exp["emails"]}
    stray = {a: n for a, n in emails_to.items() if a not in known_emails}
    if stray:
        problem("email to an unknown address", stray)
    stray_sms = {p: n for p, n in sms_to.items() if p not in phone_owner}
    if stray_sms:
        problem("sms to an unknown number", stray_sms)
    unknown_outcomes: list = []

    def outcome_unknown(key: str, channel: str) -> bool:
        """The customer's message of this channel was lost to a killed sender (see
        `outcome_unknown_sends`): missing, it is no inconsistency in a run that killed one."""
        if key not in by_key or not senders_killed:
            return False
        log = rpc.notifications.send_log(store, by_key[key]["customer_id"], 10)
        found = outcome_unknown_sends(log, channel, senders_killed)
        unknown_outcomes.extend((key, send_id) for send_id in found)
        return bool(found)

    for key, exp in expected["customers"].items():
        mails = sum(emails_to[e] for e in exp["emails"])
        is_tagged = "big-spender" in tagged.get(key, ())
        want = 1 if is_tagged and exp["consent_email"] else 0
        if mails == 0 and want == 1 and outcome_unknown(key, "email"):
            pass
        elif mails != want:
            kind = "marketing email without consent" if mails and not exp["consent_email"] else \
                "big-spender email count"
            problem(kind, key, mails, want, {"tagged": is_tagged, "consent": exp["consent_email"]})
        phones = {_digits(p) for p in exp["phones"]}
        if any(len(phone_owner[p]) > 1 for p in phones):
            continue  # a number two people share cannot be attributed
        sms = sum(sms_to[p] for p in phones)
        if sms > 1 or (sms and not exp["placed_may"]):
            problem("first-order sms sent twice or unearned", key, sms)
        elif not sms and exp["placed_must"] and exp["always_phone"] \
                and not outcome_unknown(key, "sms"):
            log = rpc.notifications.send_log(store, by_key[key]["customer_id"], 10) \
                if key in by_key else None
            problem("first-order sms missing", key, sorted(phones), log)

    summary = {k: (len(v), v[:5]) for k, v in problems.items()}
    print(f"{store}: messages: email", sum(emails_to.values()), "sms", sum(sms_to.values()),
          "outcome unknown (a sender killed during the provider call):", unknown_outcomes)
    assert not problems, f"inconsistencies: {summary}"
    return {"expected": expected, "customers": by_key, "rows": rows,
            "emails": sum(emails_to.values()), "sms": sum(sms_to.values())}


def run_backfill(rpc, store: str, timeout: float = 600.0) -> dict:
    """A full backfill of `store`, followed until it ends; its run as `backfill_status` answers."""
    run = rpc.customer_sync.backfill(store)
    deadline = time.monotonic() + timeout
    while run["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(1)
        run = rpc.customer_sync.backfill_status(store, run["run_id"])
    assert run["status"] == "completed", run
    return run


def backfill_changes_nothing(rpc, store: str, checked: dict, quiet: Callable[[], None],
                             messages: Callable[[], tuple]) -> dict:
    """A full backfill once everything was delivered finds nothing missing. The shop changes some
    customer fields without any webhook (is_paying_customer and the address saved at checkout:
    docs/woocommerce.md), so the first backfill may update customers, and only customers; every order
    is already exact, and no count, stat, segment or message (`messages()`: what the SMTP server
    and Twilio received) moves. A second backfill finds every state held: nothing updated,
    nothing published. `checked` is what `check_consistency` answered. Answers the first run's
    outcomes per phase."""
    sent_before = messages()
    first = run_backfill(rpc, store)
    quiet()
    by_phase = first["outcomes_by_phase"]
    assert set(by_phase.get("customers", {})) <= {"unchanged", "updated"}, by_phase
    for phase in ("orders", "trashed_orders"):
        assert set(by_phase.get(phase, {})) <= {"unchanged"}, by_phase
    second = run_backfill(rpc, store)
    quiet()
    assert all(set(counts) <= {"unchanged"} for counts in second["outcomes_by_phase"].values()), \
        second["outcomes_by_phase"]
    assert messages() == sent_before
    assert len(pages(rpc.customer_sync.list_customers, store, None)) == \
        len(checked["expected"]["customers"])
    after = {r["customer_id"]: r for r in search_pages(rpc, store)}
    moved = [cid for cid, r in checked["rows"].items()
             if (after[cid]["stats"], after[cid]["segment"]) != (r["stats"], r["segment"])]
    assert not moved, f"the backfill changed stats or segments of {len(moved)} customers"
    return by_phase
