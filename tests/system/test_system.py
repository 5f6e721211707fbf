"""The whole system, each service its own OS process, driven like a WooCommerce shop drives it.

Customers sign up (webhooks in bursts, repeated, reordered), some opt in to marketing email,
then orders arrive with refunds, cancellations, guests, repeats and updates racing their
creates. Once the system is quiet, every service's state is compared with the traffic
driver's oracle (demo/traffic.py), which is computed from the shop, not from the
services: customer and order counts, each order's state, each customer's spend, order count
and segment, each loyalty balance against its ledger and against what the orders imply, each
triggered message sent exactly once, and consent respected. A backfill afterwards must find
nothing missing and change no order; it may update customers on the fields the shop changes
without a webhook (is_paying_customer, the address saved at checkout), and a second backfill
must change nothing at all (scenario.backfill_changes_nothing).
"""
from __future__ import annotations

import time

from tests.system.conftest import STORE, size
from tests.system.scenario import (backfill_changes_nothing, check_consistency, configure,
                                   messages_sent, opt_in_consenting, plan_traffic,
                                   quiet_recorder)


def test_whole_system_matches_the_shop(system):
    rpc, shop, smtp, twilio = system["rpc"], system["shop"], system["smtp"], system["twilio"]
    timings: dict[str, float] = {}
    quiet = quiet_recorder(system, timings)

    # WooCommerce pinged every webhook on registration, and each answered 200.
    assert len(shop.webhooks) == 7 and all(w["status"] == "active" for w in shop.webhooks.values())
    assert shop.pings and all(p["status"] == 200 for p in shop.pings), shop.pings
    configure(rpc, STORE)

    n_customers, n_orders = size("SYSTEM_CUSTOMERS", 150), size("SYSTEM_ORDERS", 600)
    began = time.monotonic()
    traffic = plan_traffic(shop, size("SYSTEM_SEED", 7), n_customers, n_orders)
    timings["plan"] = round(time.monotonic() - began, 1)

    # 1. Customers sign up.
    report = traffic.deliver(traffic.customer_deliveries)
    assert not report.failures, report.failures[:10]
    timings["deliver customers"] = report.seconds
    quiet("customers")

    # 2. Some opt in to marketing email (the shop's consent plugin would; here the operator).
    opt_in_consenting(rpc, STORE, traffic)
    quiet("consent")

    # 3. Orders.
    report = traffic.deliver(traffic.order_deliveries)
    assert not report.failures, report.failures[:10]
    timings["deliver orders"] = report.seconds
    print("order deliveries:", report)
    quiet("orders")
    rpc.segmentation.recompute_store(STORE)
    quiet("recompute")
    timings["total until quiet"] = round(time.monotonic() - began, 1)

    checked = check_consistency(rpc, STORE, traffic, smtp.messages, twilio.messages)
    print("timings:", timings)

    # -- a backfill after all of it finds nothing missing ---------------------------------------
    by_phase = backfill_changes_nothing(rpc, STORE, checked, lambda: quiet("backfill"),
                                        messages_sent(system))
    timings["total"] = round(time.monotonic() - began, 1)
    print("timings:", timings, "backfill:", by_phase)
