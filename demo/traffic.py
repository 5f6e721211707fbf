"""Shop traffic the way WooCommerce makes it, and what the companion should end up knowing.

A seeded, deterministic plan over a FakeWooShop: N registered customers (some edited right
after signing up), then M orders by them and by guests (identified by billing email, typed in
different case on later orders), moving through WooCommerce's statuses (pending -> processing
-> completed, on-hold, cancelled, failed), partial and full refunds (an `order.updated` whose
`refunds` grew), and admin edits that change nothing that matters. Every mutation is made in
the shop first, and its webhook body captured at that moment, as WooCommerce does.

Rewards get spent: with `coupon_use_share`, that share of a registered customer's orders
applies one of their unused coupons found in the shop itself (published, restricted to their
email, never used, not expired), and `coupon_cancel_share` of those orders is then cancelled,
so the shop gives the use back. An order the shop's checkout refuses is not placed
(`coupon_refusals`). `extend()` adds orders after the plan, e.g. once the companion has
issued coupons. Without `coupon_use_share` the plan is the same as it always was.

Delivery imitates WooCommerce's Action Scheduler: deliveries go out in bursts, concurrently,
some twice (the same state again, sometimes much later, after newer states), some out of order
(an `order.updated` before its `order.created`), and a follow-up can race its create in the same
burst. Deliveries are signed with the registered webhook's secret and sent to its
delivery URL, so webhooks must be registered in the shop first (`companion webhooks register`
pings them, as WooCommerce does on saving a webhook).

`expected()` is the oracle: computed from the plan and the shop's own final state, never from
the companion's code or data. It gives, per person (registered customer by WooCommerce id, guest
by lower-cased billing email), the counted orders and spend (segmentation's definitions: orders
not cancelled/failed/trashed, net of refunds, fully refunded orders count but add nothing), each
order's loyalty earning basis (total - shipping - tax, default programme) and final state, and
bounds for rule-driven messages where the outcome legitimately depends on delivery order.

As its own program (a separate OS process):

    python -m demo.traffic --seed 7 --customers 1000 --orders 5000 \\
        --target http://127.0.0.1:8000/webhooks/woocommerce/mystore --secret whsec_... \\
        [--port 8088] [--expected expected.json] [--hold]

It starts the shop (REST API on --port), registers webhooks for --target itself (with a ping),
drives the plan, writes the expected state as JSON, and with --hold keeps serving the REST API
(for backfill and reconciliation) until interrupted.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable

import requests

from demo.shop import CouponRejected, FakeWooShop, webhook_headers

REAL_STATUSES = frozenset({"pending", "processing", "on-hold", "completed"})
# An order is placed the first time it is seen in one of these: a refunded order was paid, so
# met first as refunded (its earlier states lost, or never real) it is placed and refunded at
# once (services/customer_sync/core/changes.py, PLACED_ON_FIRST_SIGHT).
PLACEABLE_STATUSES = REAL_STATUSES | {"refunded"}
NOT_COUNTED = frozenset({"cancelled", "failed", "trash", "checkout-draft"})
EARNING = frozenset({"processing", "completed"})
TOPICS = ("customer.created", "customer.updated", "customer.deleted", "order.created",
          "order.updated", "order.deleted", "order.restored")


def cents(amount: str) -> int:
    return int((Decimal(str(amount)) * 100).to_integral_value())


@dataclass
class Delivery:
    """One webhook delivery: a topic and the body captured when the shop changed."""

    seq: int  # the mutation's place in the plan
    topic: str
    resource_id: int
    body: bytes
    copy: bool = False  # a repeat WooCommerce sent again


@dataclass
class OrderHistory:
    order_id: int
    person: tuple  # ("woo", id) or ("guest", email)
    states: list[dict] = field(default_factory=list)  # every state delivered, in shop order


@dataclass
class DeliveryReport:
    sent: int = 0
    copies: int = 0
    reordered: int = 0
    statuses: dict = field(default_factory=dict)  # HTTP status -> count
    failures: list = field(default_factory=list)  # (topic, id, status) of non-200s
    delivered: set = field(default_factory=set, repr=False)  # seqs of changes that got a 200
    skipped: int = 0  # not sent: the topic's webhook was not active (WooCommerce sends nothing)
    seconds: float = 0.0


def _order_state(order: dict) -> dict:
    refunded = -sum(cents(r["total"]) for r in order.get("refunds") or [])
    return {"status": order["status"], "total": cents(order["total"]), "refunded": refunded,
            "shipping": cents(order["shipping_total"]), "tax": cents(order["total_tax"]),
            "date_created_gmt": order["date_created_gmt"],
            "email": (order["billing"].get("email") or "").lower(),
            "phone": order["billing"].get("phone") or ""}


def _net(state: dict) -> int:
    """An order's contribution to spend (segmentation's definition, written out here)."""
    if state["status"] in NOT_COUNTED or state["status"] == "refunded":
        return 0
    return max(0, state["total"] - state["refunded"])


class WooTraffic:
    """Builds the plan in `shop` (mutating it) and delivers it; see the module doc."""

    def __init__(self, shop: FakeWooShop, seed: int = 1, customers: int = 100, orders: int = 500,
                 *, start: datetime | None = None, span_days: int = 200,
                 guest_ratio: float = 0.2, consent_ratio: float = 0.5,
                 duplicate_rate: float = 0.05, reorder_rate: float = 0.1,
                 burst: tuple[int, int] = (10, 40), concurrency: int = 8,
                 coupon_use_share: float = 0.0, coupon_cancel_share: float = 0.3) -> None:
        self.shop = shop
        self.seed = seed
        self.n_customers = customers
        self.n_orders = orders
        self.rng = random.Random(seed * 1_000_003 + 11)
        self.guest_ratio = guest_ratio
        self.consent_ratio = consent_ratio
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self.burst = burst
        self.concurrency = concurrency
        # Of a registered customer's orders, this share spends one of their unused coupons
        # (when they have one), and of those this share is then cancelled.
        self.coupon_use_share = coupon_use_share
        self.coupon_cancel_share = coupon_cancel_share
        self.coupon_orders: dict[int, str] = {}  # order id -> the code it applied
        self.coupon_refusals: list[tuple] = []  # (person, code, WooCommerce error) not placed
        self.span = timedelta(days=span_days)
        if start is not None:
            shop.clock.set(start)
        self.start = shop.clock.now()
        self.customer_deliveries: list[Delivery] = []
        self.order_deliveries: list[Delivery] = []
        self.orders: dict[int, OrderHistory] = {}
        self.person_phones: dict[tuple, set[str]] = {}
        self.person_emails: dict[tuple, set[str]] = {}
        self.phone_gaps: set[tuple] = set()
        self.consenting: set[int] = set()  # WooCommerce ids of customers who opt in to email
        self._seq = 0
        self._guests: list[dict] = []
        self._built = False

    # ------------------------------------------------------------------ the plan
    def build(self) -> "WooTraffic":
        """Make every change in the shop (deterministic for a seed) and capture its bodies."""
        if self._built:
            return self
        self._built = True
        rng = self.rng
        # Customers sign up over the first day; some edit their account moments later.
        follow: dict[int, list] = {}
        for i in range(self.n_customers):
            self.shop.clock.advance(rng.randrange(20, 120))
            woo = self.shop.add_customer()
            self._capture(self.customer_deliveries, "customer.created", woo["id"])
            person = ("woo", woo["id"])
            self._remember_contact(person, woo)
            if rng.random() < self.consent_ratio:
                self.consenting.add(woo["id"])
            if rng.random() < 0.15:
                follow.setdefault(i + rng.randrange(0, 4), []).append(woo["id"])
            for cid in follow.pop(i, []):
                self._edit_customer(cid)
        for cids in follow.values():
            for cid in cids:
                self._edit_customer(cid)

        self._place_orders(self.n_orders, self.span)
        return self

    def extend(self, orders: int, span_days: float = 1.0) -> list[Delivery]:
        """`orders` more orders over the next `span_days`, after the plan (e.g. once rewards
        exist at the shop, for orders to spend them); answers their deliveries, which are also
        added to `order_deliveries`. Deterministic for the seed and what the shop holds."""
        first = len(self.order_deliveries)
        self._place_orders(orders, timedelta(days=span_days))
        return self.order_deliveries[first:]

    def _place_orders(self, n_orders: int, span: timedelta) -> None:
        """Orders over `span`; each schedules its follow-ups a few steps later (0: the same
        moment, so the update races its create)."""
        rng = self.rng
        step = span / max(1, n_orders)
        pending: dict[int, list[tuple[int, str]]] = {}
        registered = sorted(self.shop.customers)
        for i in range(n_orders):
            self.shop.clock.advance(max(1.0, step.total_seconds() * rng.uniform(0.5, 1.5)))
            for order_id, action in pending.pop(i, []):
                self._follow_up(order_id, action, i, pending)
            if registered and rng.random() >= self.guest_ratio:
                # Some customers buy often (skewed), as in real shops.
                woo_id = registered[int(len(registered) * rng.random() ** 1.5)]
                self._place(("woo", woo_id), i, pending, customer_id=woo_id)
            else:
                guest = self._guest()
                email = guest["email"]
                if guest["orders"] and rng.random() < 0.3:  # typed differently this time
                    email = email.upper() if rng.random() < 0.5 else email.capitalize()
                guest["orders"] += 1
                self._place(("guest", guest["email"].lower()), i, pending, customer_id=0,
                            billing={"first_name": guest["first"], "last_name": guest["last"],
                                     "email": email, "phone": guest["phone"]})
        for i in sorted(pending):
            self.shop.clock.advance(60)
            for order_id, action in pending[i]:
                self._follow_up(order_id, action, i, None)

    def _capture(self, into: list[Delivery], topic: str, resource_id: int) -> Delivery:
        body = self.shop.webhook_body(topic, resource_id)
        delivery = Delivery(self._seq, topic, resource_id, body)
        self._seq += 1
        into.append(delivery)
        return delivery

    def _remember_contact(self, person: tuple, record: dict) -> None:
        billing = record.get("billing") or {}
        phone = billing.get("phone")
        if phone:
            self.person_phones.setdefault(person, set()).add(phone)
        else:  # for a while, the customer had no number to text
            self.phone_gaps.add(person)
        for email in (record.get("email"), billing.get("email")):
            if email:
                self.person_emails.setdefault(person, set()).add(email.lower())

    def _edit_customer(self, woo_id: int) -> None:
        rng = self.rng
        self.shop.clock.advance(rng.randrange(1, 30))
        if rng.random() < 0.5:
            customer = self.shop.update_customer(woo_id, last_name=rng.choice(
                ("Meyer", "Lang", "Rossi", "Dubois", "Novak")))
        else:
            phone = f"+49 15{rng.randrange(1, 9)} {rng.randrange(1000000, 9999999)}"
            customer = self.shop.update_customer(woo_id, billing={"phone": phone})
        self._capture(self.customer_deliveries, "customer.updated", woo_id)
        self._remember_contact(("woo", woo_id), customer)

    def _guest(self) -> dict:
        rng = self.rng
        if self._guests and rng.random() < 0.4:
            return rng.choice(self._guests)
        first, last = rng.choice(("Ana", "Ben", "Chloe", "Dev", "Ema", "Finn")), rng.choice(
            ("Kraus", "Silva", "Okafor", "Berg", "Moreau", "Kowalski"))
        guest = {"first": first, "last": last,
                 "email": self.shop._unique_email(rng, first, last),  # unique shop-wide
                 "phone": "" if rng.random() < 0.1 else
                 f"+33 6{rng.randrange(10000000, 99999999)}", "orders": 0}
        self._guests.append(guest)
        return guest

    def _place(self, person: tuple, i: int, pending: dict, **overrides: Any) -> None:
        rng = self.rng
        status = rng.choices(("processing", "pending", "on-hold"), weights=(65, 25, 10))[0]
        code = None
        # Drawn only when coupons are spent at all, so plans without them stay as they were.
        if self.coupon_use_share and person[0] == "woo" and rng.random() < self.coupon_use_share:
            code = self._unused_coupon(person[1])
        try:
            order = self.shop.add_order(status=status, coupon_code=code, **overrides)
        except CouponRejected as refused:  # the shop would not take it: no order is placed
            self.coupon_refusals.append((person, code, refused.error_number))
            return
        history = OrderHistory(order["id"], person)
        self.orders[order["id"]] = history
        self._capture(self.order_deliveries, "order.created", order["id"])
        history.states.append(_order_state(order))
        self._remember_contact(person, order)
        if code is not None:
            self.coupon_orders[order["id"]] = order["coupon_lines"][0]["code"]
            if rng.random() < self.coupon_cancel_share:
                # The buyer gives up: the order is cancelled and the shop gives the use back.
                pending.setdefault(i + rng.randrange(1, 10), []).append((order["id"], "cancelled"))
                return
        self._schedule(order["id"], status, i, pending)

    def _unused_coupon(self, woo_id: int) -> str | None:
        """One of the customer's coupons the shop would take now: published, restricted to
        their email (that says whose it is), never used, not expired; None when there is none."""
        with self.shop._lock:
            customer = self.shop.customers[woo_id]
            emails = {customer["email"].strip().lower(),
                      (customer["billing"].get("email") or "").strip().lower()} - {""}
            now = self.shop.clock.now()
            codes = sorted(
                c["code"] for c in self.shop.coupons.values()
                if c["status"] == "publish" and c["code"] and c["usage_count"] == 0
                and c["discount_type"] in ("percent", "fixed_cart")
                and emails & set(c["email_restrictions"])
                and (c["date_expires_gmt"] is None
                     or now <= datetime.fromisoformat(c["date_expires_gmt"])))
        return self.rng.choice(codes) if codes else None

    def _schedule(self, order_id: int, status: str, i: int, pending: dict | None) -> None:
        rng = self.rng
        options = {
            "pending": (("processing", 60), ("cancelled", 20), ("failed", 10), (None, 10)),
            "on-hold": (("processing", 70), (None, 30)),
            "processing": (("completed", 70), ("cancelled", 8), ("edit", 7), (None, 15)),
            "completed": (("refund_part", 10), ("refund_full", 5), ("refund_twice", 3),
                          ("edit", 5), (None, 77)),
        }.get(status)
        if not options:
            return
        action = rng.choices([a for a, _ in options], weights=[w for _, w in options])[0]
        if action is None:
            return
        when = i + (0 if rng.random() < 0.15 else rng.randrange(1, 40))
        if pending is None:  # draining the tail: apply now, in order
            self._apply(order_id, action, i, None)
        else:
            pending.setdefault(when, []).append((order_id, action))

    def _follow_up(self, order_id: int, action: str, i: int, pending: dict | None) -> None:
        self._apply(order_id, action, i, pending)

    def _apply(self, order_id: int, action: str, i: int, pending: dict | None) -> None:
        rng = self.rng
        self.shop.clock.advance(rng.randrange(1, 600))
        shop_order = self.shop.orders[order_id]
        remaining = cents(shop_order["total"]) + sum(cents(r["total"]) for r in shop_order["refunds"])
        if action in ("processing", "completed", "cancelled", "failed"):
            order = self.shop.update_order(order_id, status=action)
        elif action == "edit":
            order = self.shop.update_order(order_id, customer_note=rng.choice(
                ("Gift wrap please", "Call before delivery", "")))
        elif action == "refund_full":
            order = self.shop.refund_order(order_id, f"{remaining / 100:.2f}", "Returned")
        else:
            part = max(1, remaining * rng.randrange(10, 60) // 100)
            order = self.shop.refund_order(order_id, f"{part / 100:.2f}", "Damaged")
            if action == "refund_twice":
                self._capture(self.order_deliveries, "order.updated", order_id)
                self.orders[order_id].states.append(_order_state(order))
                self.shop.clock.advance(rng.randrange(60, 3600))
                left = cents(order["total"]) + sum(cents(r["total"]) for r in order["refunds"])
                order = self.shop.refund_order(order_id, f"{max(1, left // 3) / 100:.2f}", "Late")
        self._capture(self.order_deliveries, "order.updated", order_id)
        self.orders[order_id].states.append(_order_state(order))
        if action in ("processing", "completed"):
            self._schedule(order_id, action, i, pending)

    # ------------------------------------------------------------------ one-off changes
    def _move_clock(self, at: datetime | None) -> None:
        """A minute on, or to `at` (never back: the shop's times only grow) for live traffic."""
        if at is None:
            self.shop.clock.advance(60)
        else:
            self.shop.clock.catch_up(at)

    def sign_up_now(self, consent: bool = False, *, at: datetime | None = None,
                    **overrides: Any) -> Delivery:
        """A customer registers now, beyond the plan (the oracle includes them); answers the
        customer.created delivery to send. `at`: the shop's clock moves to it instead of a
        minute on (live traffic keeps the shop's times with the wall clock)."""
        self._move_clock(at)
        woo = self.shop.add_customer(**overrides)
        delivery = self._capture([], "customer.created", woo["id"])
        self._remember_contact(("woo", woo["id"]), woo)
        if consent:
            self.consenting.add(woo["id"])
        return delivery

    def place_now(self, woo_id: int, *, at: datetime | None = None, **overrides: Any) -> Delivery:
        """Customer `woo_id` places an order now, beyond the plan (the oracle includes it);
        answers the order.created delivery to send. Overriding `total` keeps the line items
        as generated (fine for the companion, which reads the totals). `coupon_code` spends one
        of the shop's coupons as checkout does (`CouponRejected` when the shop refuses it).
        `at` as for `sign_up_now`."""
        self._move_clock(at)
        order = self.shop.add_order(customer_id=woo_id, **overrides)
        history = OrderHistory(order["id"], ("woo", woo_id))
        self.orders[order["id"]] = history
        delivery = self._capture([], "order.created", order["id"])
        history.states.append(_order_state(order))
        self._remember_contact(("woo", woo_id), order)
        return delivery

    def change_status_now(self, order_id: int, status: str, *,
                          at: datetime | None = None) -> Delivery:
        """Order `order_id` moves to `status` now, beyond the plan (the oracle follows it): e.g.
        an order that spent a reward code is cancelled and the shop gives the use back. Answers
        the order.updated delivery to send. `at` as for `sign_up_now`."""
        self._move_clock(at)
        order = self.shop.update_order(order_id, status=status)
        delivery = self._capture([], "order.updated", order_id)
        self.orders[order_id].states.append(_order_state(order))
        return delivery

    def send_once(self, delivery: Delivery, session: requests.Session | None = None) -> int:
        """POST one delivery as WooCommerce would; answers the HTTP status."""
        hook = self._webhook_for(delivery.topic)
        headers = webhook_headers(delivery.topic, delivery.body, hook["secret"],
                                  self.shop.base_url, hook["id"])
        return (session or requests).post(hook["delivery_url"], data=delivery.body,
                                          headers=headers, timeout=30,
                                          allow_redirects=False).status_code

    # ------------------------------------------------------------------ delivery
    def bursts(self, deliveries: list[Delivery]) -> list[list[Delivery]]:
        """Cut into bursts; inside one, some neighbours swap (an update before its create);
        some deliveries are sent again, in the same burst or several bursts later (an older
        state arriving after newer ones). Deterministic for the seed."""
        rng = random.Random(self.seed * 7 + len(deliveries))
        out: list[list[Delivery]] = []
        late: dict[int, list[Delivery]] = {}
        i = 0
        while i < len(deliveries):
            size = rng.randrange(self.burst[0], self.burst[1] + 1)
            burst = list(deliveries[i:i + size])
            i += size
            for j in range(len(burst) - 1):
                if rng.random() < self.reorder_rate:
                    burst[j], burst[j + 1] = burst[j + 1], burst[j]
            for d in list(burst):
                if rng.random() < self.duplicate_rate:
                    again = Delivery(d.seq, d.topic, d.resource_id, d.body, copy=True)
                    if rng.random() < 0.5:
                        burst.insert(rng.randrange(len(burst) + 1), again)
                    else:
                        late.setdefault(len(out) + rng.randrange(1, 5), []).append(again)
            burst.extend(late.pop(len(out), []))
            out.append(burst)
        for rest in late.values():
            out.append(rest)
        return out

    def _active(self, topic: str) -> bool:
        with self.shop._lock:
            return any(w["topic"] == topic and w["status"] == "active"
                       for w in self.shop.webhooks.values())

    def _webhook_for(self, topic: str) -> dict:
        with self.shop._lock:
            hooks = [w for w in self.shop.webhooks.values()
                     if w["topic"] == topic and w["status"] == "active"]
        if not hooks:
            raise RuntimeError(f"no active webhook for {topic} in the shop: register webhooks first")
        return hooks[0]

    def deliver(self, deliveries: list[Delivery], session: requests.Session | None = None,
                *, skip_inactive: bool = False) -> DeliveryReport:
        """Send in bursts, each burst's deliveries concurrently; wait for a burst before the
        next (Action Scheduler runs batches). With `skip_inactive`, a delivery whose topic has
        no active webhook (disabled or paused in the shop) is not sent, as WooCommerce sends
        nothing for it, and is counted in `skipped`; otherwise that is an error."""
        report = DeliveryReport()
        session = session or requests.Session()
        lock = threading.Lock()
        began = time.monotonic()

        def send(d: Delivery) -> None:
            if skip_inactive and not self._active(d.topic):
                with lock:
                    report.skipped += 1
                return
            hook = self._webhook_for(d.topic)
            headers = webhook_headers(d.topic, d.body, hook["secret"], self.shop.base_url,
                                      hook["id"])
            status: int | None
            for attempt in range(3):
                try:
                    status = session.post(hook["delivery_url"], data=d.body, headers=headers,
                                          timeout=30, allow_redirects=False).status_code
                    break
                except requests.RequestException:
                    status = None  # WooCommerce would not retry; we note it
                    break
            with lock:
                report.sent += 1
                report.copies += d.copy
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if status != 200:
                    report.failures.append((d.topic, d.resource_id, status))
                else:
                    report.delivered.add(d.seq)

        with ThreadPoolExecutor(self.concurrency) as pool:
            for burst in self.bursts(deliveries):
                seqs = [d.seq for d in burst if not d.copy]
                report.reordered += sum(1 for a, b in zip(seqs, seqs[1:]) if a > b)
                list(pool.map(send, burst))
        report.seconds = round(time.monotonic() - began, 3)
        return report

    # ------------------------------------------------------------------ the oracle
    def expected(self) -> dict:
        """What the companion should hold once everything is applied (see the module doc)."""
        people: dict[tuple, dict] = {}
        for woo_id, customer in self.shop.customers.items():
            people[("woo", woo_id)] = {"registered": True, "woo_id": woo_id,
                                       "email": customer["email"].lower(), "orders": []}
        for history in self.orders.values():
            if history.person not in people:
                people[history.person] = {"registered": False, "woo_id": None,
                                          "email": history.person[1], "orders": []}
            people[history.person]["orders"].append(history)
        result: dict[str, Any] = {"customers": {}, "orders_total": len(self.shop.orders),
                                  "registered_total": len(self.shop.customers)}
        for person, info in people.items():
            final = [(h.order_id, h.states[-1]) for h in info["orders"]]
            counted = [(oid, s) for oid, s in final if s["status"] not in NOT_COUNTED]
            spend = sum(_net(s) for _, s in counted)
            max_spend = sum(max(_net(s) for s in h.states) for h in info["orders"])
            dates = sorted(s["date_created_gmt"] for _, s in counted)
            key = f"{person[0]}:{person[1]}"
            result["customers"][key] = {
                "registered": info["registered"], "woo_id": info["woo_id"],
                "email": info["email"],
                "emails": sorted(self.person_emails.get(person, set()) | {info["email"]}),
                "phones": sorted(self.person_phones.get(person, set())),
                # Whether every state of the customer and their orders had a phone: otherwise
                # a first-order SMS may rightly find none.
                "always_phone": person not in self.phone_gaps,
                "consent_email": info["woo_id"] in self.consenting,
                "orders": len(final), "orders_count": len(counted), "total_spent": spend,
                "max_spent": max_spend,
                "first_order_at": dates[0] if dates else None,
                "last_order_at": dates[-1] if dates else None,
                # Loyalty: the earning basis (default programme: total less shipping and tax)
                # and final state of each order; points need the tier rate the ledger used.
                "loyalty_orders": {str(oid): {
                    "basis": max(0, s["total"] - s["shipping"] - s["tax"]), "total": s["total"],
                    "refunded": s["refunded"], "status": s["status"],
                    "ever_earning": any(x["status"] in EARNING for x in h.states)}
                    for (oid, s), h in zip(final, info["orders"])} if info["registered"] else {},
                # order.placed comes the first time an order is seen in a placeable status:
                # certain when every state of an order is, possible when any is.
                "placed_must": any(all(s["status"] in PLACEABLE_STATUSES for s in h.states)
                                   for h in info["orders"]),
                "placed_may": any(any(s["status"] in PLACEABLE_STATUSES for s in h.states)
                                  for h in info["orders"]),
            }
        return result

    def summary(self) -> dict:
        final = [h.states[-1]["status"] for h in self.orders.values()]
        guests = {h.person for h in self.orders.values() if h.person[0] == "guest"}
        return {"customers": len(self.shop.customers), "orders": len(self.orders),
                "guests": len(guests), "customer_deliveries": len(self.customer_deliveries),
                "order_deliveries": len(self.order_deliveries),
                "statuses": {s: final.count(s) for s in sorted(set(final))},
                "refunded_orders": sum(1 for h in self.orders.values()
                                       if h.states[-1]["refunded"] > 0)}


def register_webhooks(shop: FakeWooShop, target: str, secret: str,
                      topics: Iterable[str] = TOPICS) -> None:
    """Webhooks to `target`, pinged as WooCommerce pings on save (needs the receiver up)."""
    for topic in topics:
        hook = shop.add_webhook(topic, target, secret=secret, status="disabled")
        shop._ping(target, hook["id"])
        shop.set_webhook_status(hook["id"], "active")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.traffic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--target", required=True, help="webhook delivery URL")
    parser.add_argument("--secret", required=True, help="the store's webhook secret")
    parser.add_argument("--port", type=int, default=0, help="the shop's REST API port")
    parser.add_argument("--expected", help="write the expected state here (JSON)")
    parser.add_argument("--hold", action="store_true", help="keep serving the REST API")
    args = parser.parse_args(argv)
    shop = FakeWooShop(seed=args.seed, ping_webhooks=True)
    if args.port:
        from http.server import ThreadingHTTPServer

        from demo.shop import _Handler

        shop._server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                           type("H", (_Handler,), {"shop": shop}))
        shop._server.daemon_threads = True
        threading.Thread(target=shop._server.serve_forever, daemon=True).start()
    else:
        shop.start()
    print(json.dumps({"shop_url": shop.base_url, "consumer_key": shop.consumer_key,
                      "consumer_secret": shop.consumer_secret}), flush=True)
    register_webhooks(shop, args.target, args.secret)
    traffic = WooTraffic(shop, args.seed, args.customers, args.orders).build()
    print(json.dumps({"plan": traffic.summary()}), flush=True)
    for name, deliveries in (("customers", traffic.customer_deliveries),
                             ("orders", traffic.order_deliveries)):
        report = traffic.deliver(deliveries)
        print(json.dumps({"delivered": name, "sent": report.sent, "copies": report.copies,
                          "reordered": report.reordered, "seconds": report.seconds,
                          "statuses": {str(k): v for k, v in report.statuses.items()}}),
              flush=True)
    if args.expected:
        with open(args.expected, "w") as out:
            json.dump(traffic.expected(), out, indent=1, sort_keys=True)
    if args.hold:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    shop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
