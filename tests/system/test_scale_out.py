"""Scale-out: two instances of every consumer service share its queues, and nothing is applied
twice.

The system of the scenario (tests/system/conftest.py) with two OS processes of customer_sync,
segmentation, loyalty, notifications and gdpr ("loyalty" and "loyalty@2": the same service name,
queues and database, on the wire-protocol stand-in that both reach), one gateway, and the
shop's webhooks spread over customer_sync's two doors by a round-robin load balancer
(tests/fakes/load_balancer.py), as production puts one before them. The scenario's traffic at a
small size then runs as in tests/system/test_system.py: customers, consent over RPC, orders
with repeats, reorderings and updates racing their creates, now applied by two processes at
once on the same customers.

It shows:

* every event queue and RPC queue of a scaled service has two consumers (the management API),
  and each instance applied events itself (its own /metrics), and both doors answered
  webhooks: no instance sat idle while the other did the work;
* the oracle's checks pass (scenario.check_consistency): each order's points earned exactly
  once, balances = ledger = the orders, segments and tags, each triggered message sent once;
* each customer's timeline holds each fact once: one entry per ledger entry, no order placed
  twice, segment changes that chain from the first to the current segment without a step
  taken twice, one entry per message sent.

Sizes: SYSTEM_CUSTOMERS / SYSTEM_ORDERS, default 60 / 240 here.
"""
from __future__ import annotations

import time
import urllib.parse
from collections import Counter

from bench.system import queue_owner
from ops.topology import handler_queues
from tests.system.conftest import STORE, size
from tests.system.scenario import (check_consistency, configure, opt_in_consenting,
                                   plan_traffic, quiet_recorder)

SYSTEM_MONGO = "wire"  # the instances of a service share its database
SCALED = ("customer_sync", "segmentation", "loyalty", "notifications", "gdpr")
SYSTEM_INSTANCES = {name: 2 for name in SCALED}
CONSUMERS_TIMEOUT = 30.0  # the management API's queue figures are refreshed every 5 s


def consumer_counts(admin, vhost: str) -> dict[str, int]:
    """Each queue's consumers in the vhost, as the broker counts them."""
    answer = admin.session.get(f"{admin.base}/queues/{urllib.parse.quote(vhost, safe='')}",
                               auth=admin.auth, timeout=10, params={"columns": "name,consumers"})
    answer.raise_for_status()
    return {q["name"]: int(q.get("consumers") or 0) for q in answer.json()}


def wait_for_consumers(admin, vhost: str, expected: dict[str, int]) -> dict[str, int]:
    """Until every queue named has its expected consumers (or the timeout); the last counts."""
    deadline = time.monotonic() + CONSUMERS_TIMEOUT
    while True:
        counts = consumer_counts(admin, vhost)
        if all(counts.get(q) == n for q, n in expected.items()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def timeline(rpc, customer_id: str) -> list[dict]:
    cursor, items = None, []
    while True:
        page = rpc.customer_sync.timeline(STORE, customer_id, {"size": 500, "cursor": cursor})
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def ledger(rpc, customer_id: str) -> list[dict]:
    cursor, items = None, []
    while True:
        try:
            page = rpc.loyalty.history(STORE, customer_id, {"size": 500, "cursor": cursor})
        except Exception:  # no account: nothing ever earned
            return []
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if cursor is None:
            return items


def timeline_problems(rpc, customers: dict, rows: dict) -> tuple[dict[str, list], int]:
    """What each customer's timeline holds twice or out of step with the services' state:
    points entries against the loyalty ledger, order placements, the chain of segment changes
    to the current segment (`rows`: segmentation's, by customer id). Answers the problems by
    kind and the number of notification.sent entries."""
    problems: dict[str, list] = {}
    sent_entries = 0
    for key, customer in customers.items():
        customer_id = customer["customer_id"]
        entries = timeline(rpc, customer_id)
        kinds = Counter(e["kind"] for e in entries)
        sent_entries += kinds["notification.sent"]
        points = Counter((e["details"]["kind"], str(e["details"].get("order_id")),
                          e["details"]["delta"]) for e in entries
                         if e["kind"] == "loyalty.points_changed")
        booked = Counter((e["kind"], str(e.get("order_id")), e["delta"])
                         for e in ledger(rpc, customer_id) if e["book"] == "points")
        if points != booked:
            problems.setdefault("points entries", []).append((key, points - booked,
                                                              booked - points))
        placed = Counter(str(e["details"].get("order_id")) for e in entries
                         if e["kind"] == "order.placed")
        twice = [order_id for order_id, n in placed.items() if n > 1]
        if twice:
            problems.setdefault("order placed twice", []).append((key, twice))
        sends = Counter(e["details"].get("send_id") for e in entries
                        if e["kind"] == "notification.sent")
        if any(n > 1 for n in sends.values()):
            problems.setdefault("message entry twice", []).append((key, sends))
        # Segment changes form one path from none to the current segment, whatever the order
        # they were applied in: each segment is entered as often as left, but for the last.
        steps = [(e["details"].get("old_segment"), e["details"]["new_segment"])
                 for e in entries if e["kind"] == "customer.segment_changed"]
        if steps:
            balance: Counter = Counter()
            for old, new in steps:
                balance[new] += 1
                if old is not None:
                    balance[old] -= 1
            current = rows[customer_id]["segment"]
            starts = sum(1 for old, _ in steps if old is None)
            if starts != 1 or {s: n for s, n in balance.items() if n} != {current: 1}:
                problems.setdefault("segment changes", []).append((key, steps, current))
    return problems, sent_entries


def test_two_instances_of_each_consumer_share_its_queues_without_a_double_effect(system):
    rpc, shop, procs = system["rpc"], system["shop"], system["procs"]
    admin, vhost, balancer = system["admin"], system["vhost"], system["balancer"]
    timings: dict[str, float] = {}
    quiet = quiet_recorder(system, timings)

    # Two processes of each scaled service, each consuming every queue of its service.
    for service in SCALED:
        assert procs.instances(service) == [service, f"{service}@2"], procs.instances(service)
    expected = {q.name: 2 for q in handler_queues() if queue_owner(q.name) in SCALED}
    expected.update({f"rpc-{service}": 2 for service in SCALED})
    counts = wait_for_consumers(admin, vhost, expected)
    wrong = {q: counts.get(q) for q, n in expected.items() if counts.get(q) != n}
    assert not wrong, f"queues without one consumer per instance: {wrong}"

    configure(rpc, STORE)
    pinged = dict(balancer.answered)  # the shop's pings when its webhooks were saved
    n_customers, n_orders = size("SYSTEM_CUSTOMERS", 60), size("SYSTEM_ORDERS", 240)
    began = time.monotonic()
    traffic = plan_traffic(shop, size("SYSTEM_SEED", 7), n_customers, n_orders)

    report = traffic.deliver(traffic.customer_deliveries)
    assert not report.failures, report.failures[:10]
    quiet("customers")
    opt_in_consenting(rpc, STORE, traffic)
    quiet("consent")
    report = traffic.deliver(traffic.order_deliveries)
    assert not report.failures, report.failures[:10]
    quiet("orders")
    rpc.segmentation.recompute_store(STORE)
    quiet("recompute")
    timings["total until quiet"] = round(time.monotonic() - began, 1)

    # Both instances of each service did work: events applied, per process.
    handled = {name: procs.metric(name, "companion_events_handled_total")
               for service in SCALED for name in procs.instances(service)}
    duplicates = {name: procs.metric(name, "companion_events_duplicate_total")
                  for name in handled}
    print("events applied per instance:", handled, "duplicates skipped:", duplicates)
    webhooks = {door: n - pinged[door] for door, n in balancer.answered.items()}
    print("webhooks per door:", webhooks)
    idle = [name for name, n in handled.items() if n == 0]
    assert not idle, f"instances that applied no event: {idle} ({handled})"
    assert all(n > 0 for n in webhooks.values()), webhooks

    checked = check_consistency(rpc, STORE, traffic, system["smtp"].messages,
                                system["twilio"].messages)
    problems, sent_entries = timeline_problems(rpc, checked["customers"], checked["rows"])
    assert not problems, {k: (len(v), v[:3]) for k, v in problems.items()}
    assert sent_entries == checked["emails"] + checked["sms"], (
        sent_entries, checked["emails"], checked["sms"])
    print("timings:", timings)
