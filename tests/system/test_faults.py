"""Faults injected into the whole system (every service its own OS process) while a seeded
WooCommerce scenario runs; after each, the oracle's consistency checks (tests/system/
scenario.py): nothing lost, nothing applied twice.

1. RabbitMQ stopped (`rabbitmqctl stop_app`) mid-stream and started again: on a private node
   of our own (tests/private_broker.py), never the machine's shared broker.
2. Two event handlers failing for a while (tests/system/fault_launcher.py): retried, parked,
   replayed with `companion dlq replay` once the fault is cleared.
3. The shop's API failing on one page during a backfill: the run stops with its progress
   kept and resumes from there, not from the start.
4. The same signed order webhook posted ten times at once.
5. The shop's `order.updated` webhook disabled while orders keep changing: reconciliation
   brings every order right within one interval, and `companion store-health` reports it.

Sizes: FAULT_CUSTOMERS and FAULT_ORDERS per store (default 25 and 100), FAULT_BACKFILL_ORDERS
(default 350, four pages of the shop's API), FAULT_SEED. Service logs go to SYSTEM_LOG_DIR.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
import requests

from tests import private_broker
from tests.private_broker import PrivateBroker
from tests.support import BrokerAdmin
from tests.system.fault_stack import FaultStack, StoreScenario, cli_json, log_dir, size
from tests.system.scenario import pages

CUSTOMERS, ORDERS = size("FAULT_CUSTOMERS", 25), size("FAULT_ORDERS", 100)
SEED = size("FAULT_SEED", 11)


# -- 1. the broker restarted mid-stream (its own node: first, before the shared stack starts) --
def test_broker_restarted_mid_stream_loses_nothing():
    reason = private_broker.available()
    if reason:
        pytest.fail(f"a private RabbitMQ node is needed for this test: {reason}")
    with PrivateBroker.start() as broker:
        admin = BrokerAdmin(f"http://guest:guest@127.0.0.1:{broker.management_port}")
        admin.create_vhost("faults")
        stack = FaultStack(admin, "faults", broker.amqp_uri("faults"), log_dir("fault-broker"))
        scenario = None
        try:
            stack.start()
            scenario = StoreScenario(stack, "rabbitshop", SEED, CUSTOMERS, ORDERS)
            scenario.sign_up()
            before, during, after = scenario.order_slices(3)
            scenario.deliver(before)
            stack.quiet()
            published = stack.metric("customer_sync", "companion_outbox_published_total")
            failed = stack.metric("customer_sync", "companion_outbox_publish_failures_total")

            broker.stop_app()
            down = time.monotonic()
            scenario.lap("broker stopped")
            # The webhook door needs only the database: every delivery is still taken (200),
            # recorded and applied, and the events it owes wait in the outbox.
            ready = requests.get(f"{stack.procs.web_url('customer_sync')}/health/ready", timeout=10)
            sent = scenario.deliver(during)
            assert set(sent["statuses"]) == {200} and sent["sent"] >= len(during), sent
            time.sleep(max(0.0, 5.0 - (time.monotonic() - down)))  # down at least 5 s
            assert stack.metric("customer_sync", "companion_outbox_published_total") == published
            # The relay tried and kept them (each failed publish counted, the events stay).
            assert stack.metric("customer_sync", "companion_outbox_publish_failures_total") > failed
            assert ready.status_code == 503, ready.text  # and readiness says why
            broker.start_app()
            scenario.lap("broker back")
            print(f"broker down {time.monotonic() - down:.1f}s while {len(during)} webhooks came")

            scenario.deliver(after)
            for name in stack.procs.children:
                stack.procs.wait_ready(name, timeout=120)
            scenario.settle_and_check()
            # What waited in the outbox went out once the broker was back.
            assert stack.metric("customer_sync", "companion_outbox_published_total") > published
        finally:
            if scenario is not None:
                scenario.close()
            if not broker.app_running():  # a failure while it was down: services stop faster
                broker.start_app()
            stack.stop()


# -- faults 2-5 share the shared broker's stack (conftest.py): one set of processes, a store per
# fault ------------------------------------------------------------------------------------------
# -- 2. handlers failing for a while: retried, parked, replayed --------------------------------
FAILING = ("loyalty.on_order_placed", "notifications.on_order_placed")


def _handler_counts(stack: FaultStack) -> dict[str, dict[str, float]]:
    counts = {}
    for key in FAILING:
        service = key.split(".")[0]
        counts[key] = {kind: stack.metric(service, f"companion_events_{kind}_total",
                                          service=service, event_type="order.placed")
                       for kind in ("handled", "failed", "retried", "parked")}
    counts["published"] = {"order.placed": stack.metric(
        "customer_sync", "companion_outbox_published_total", event_type="order.placed")}
    return counts


def test_failing_handlers_are_retried_parked_and_replayed_once(stack):
    scenario = StoreScenario(stack, "parkshop", SEED + 1, CUSTOMERS, ORDERS)
    try:
        scenario.sign_up()
        first, rest = scenario.order_slices(2)
        scenario.deliver(first)
        stack.quiet()
        before = _handler_counts(stack)

        stack.fail_handlers(*FAILING)
        scenario.deliver(rest)
        stack.quiet(parked_ok=True)  # every try spent: 5 attempts, then parked
        scenario.lap("parked")
        during = _handler_counts(stack)
        placed = during["published"]["order.placed"] - before["published"]["order.placed"]
        assert placed > 0
        for key in FAILING:
            service = key.split(".")[0]
            delta = {k: during[key][k] - before[key][k] for k in during[key]}
            listed = cli_json(stack.companion("--json", "dlq", "list", "--service", service))
            mine = [m for m in listed if m["handler"] == key]
            assert len(mine) == len(listed) == placed, (key, len(listed), placed)
            assert all(m["attempts"] == 5 and "InjectedFault" in m["error"]
                       and m["store_id"] == "parkshop" for m in mine), mine[:3]
            # Each order.placed: tried 5 times (4 retries), then parked; none applied.
            assert delta == {"handled": 0, "failed": 5 * placed, "retried": 4 * placed,
                             "parked": placed}, (key, delta, placed)
        health = stack.companion("--json", "health")  # what an operator on call sees
        assert health.returncode == 1, health.stdout + health.stderr
        parked = {name: n for name, n in cli_json(health)["parked"].items() if n}
        assert parked == {"loyalty": placed, "notifications": placed}, parked

        # The fault clears; the operator replays, as the runbook says.
        stack.clear_handler_faults()
        for key in FAILING:
            replayed = stack.companion("dlq", "replay", "--service", key.split(".")[0], "--all")
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        scenario.settle_and_check()  # parked queues must be empty now, and all applied once
        after = _handler_counts(stack)
        for key in FAILING:
            assert after[key]["handled"] - during[key]["handled"] >= placed
            assert after[key]["parked"] == during[key]["parked"]
            assert cli_json(stack.companion("--json", "dlq", "list", "--service",
                                         key.split(".")[0])) == []
    finally:
        stack.clear_handler_faults()
        for key in FAILING:  # a failure above must not leave parked messages to later tests
            stack.companion("dlq", "purge", "--service", key.split(".")[0], "--all")
        scenario.close()


# -- 3. the shop's API failing during a backfill: resumed, not restarted ------------------------
def test_backfill_interrupted_by_the_shop_resumes_where_it_stopped(stack):
    # No webhooks: this shop's data reaches the companion through the backfill alone. Nobody
    # opts in to email (consent would come after the backfill, too late for its tags).
    scenario = StoreScenario(stack, "backfillshop", SEED + 2, CUSTOMERS,
                             size("FAULT_BACKFILL_ORDERS", 350), consent_ratio=0.0)
    shop = scenario.shop
    try:
        listed = [o for o in shop.orders.values() if o["status"] != "trash"]
        total_pages = -(-len(listed) // 100)
        assert total_pages >= 3, "the backfill needs a few pages to fail midway"
        broken = total_pages // 2 + 1
        shop.fail_page("orders", broken)  # every try of that page answers 500 until cleared
        mark = len(shop.requests_log)

        failed = stack.companion("--json", "backfill", "--store", "backfillshop")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        run = cli_json(failed)
        assert run["status"] == "interrupted" and "500" in run["error"], run
        assert (run["phase"], run["next_page"]) == ("orders", broken), run
        assert run["items"]["orders"] == (broken - 1) * 100, run  # the progress kept
        assert run["items"]["customers"] == len(shop.customers), run
        first_orders = shop.page_requests("orders", since=mark, query={"status": None})
        assert first_orders == {**{p: 1 for p in range(1, broken)}, broken: 3}, first_orders
        scenario.lap("backfill interrupted")

        shop.reset_faults()
        mark = len(shop.requests_log)
        resumed = stack.companion("--json", "backfill", "--store", "backfillshop")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        done = cli_json(resumed)
        assert done["run_id"] == run["run_id"] and done["status"] == "completed", done
        # Resumed: no customer page again, and of the orders only the page it stopped at and
        # those after it, plus the last page done once more (backfill.py re-reads it, in case
        # deletions shifted records back a page).
        assert shop.page_requests("customers", since=mark) == {}
        assert shop.page_requests("orders", since=mark, query={"status": None}) == {
            p: 1 for p in range(broken - 1, total_pages + 1)}
        assert shop.page_requests("orders", since=mark, query={"status": "trash"}) == {1: 1}
        assert done["items"]["orders"] == len(listed) + 100, done  # that page, counted twice
        scenario.lap("backfill resumed")
        checked = scenario.settle_and_check()
        assert len(checked["customers"]) == len(checked["expected"]["customers"])
    finally:
        scenario.close()


# -- 4. the same order webhook ten times at once ------------------------------------------------
def test_one_order_webhook_ten_times_at_once_is_applied_once(stack):
    scenario = StoreScenario(stack, "dupshop", SEED + 3, CUSTOMERS // 2, ORDERS // 2)
    traffic = scenario.traffic
    try:
        # One more customer, who opts in to email; later a first order over 300.00: a loyalty
        # earn, the big-spender tag and its email, the first-order SMS.
        signed_up = traffic.sign_up_now(consent=True, billing={"phone": "+49 151 7770001"})
        traffic.customer_deliveries.append(signed_up)
        scenario.sign_up()
        scenario.deliver(traffic.order_deliveries)
        order = traffic.place_now(signed_up.resource_id, status="processing", total="412.50")
        door = {o: stack.metric("customer_sync", "companion_webhook_duration_seconds_count",
                                store="dupshop", outcome=o) for o in ("accepted", "duplicate")}

        start = threading.Barrier(10)
        answers: list[int] = []

        def post() -> None:
            session = requests.Session()
            start.wait()
            answers.append(traffic.send_once(order, session))

        threads = [threading.Thread(target=post) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert answers == [200] * 10
        # customer_sync: one delivery recorded and applied, nine answered as duplicates.
        assert {o: stack.metric("customer_sync", "companion_webhook_duration_seconds_count",
                                store="dupshop", outcome=o) - door[o]
                for o in door} == {"accepted": 1, "duplicate": 9}
        checked = scenario.settle_and_check()

        person = checked["customers"][f"woo:{signed_up.resource_id}"]
        with stack.rpc() as rpc:
            held = pages(rpc.customer_sync.list_orders, "dupshop", person["customer_id"])
            assert [o["order_id"] for o in held] == [str(order.resource_id)]
            ledger = rpc.loyalty.history("dupshop", person["customer_id"],
                                         {"size": 100, "cursor": None})["items"]
            timeline = pages(rpc.customer_sync.timeline, "dupshop", person["customer_id"])
        assert [(e["kind"], str(e["order_id"])) for e in ledger if e["book"] == "points"] == [
            ("earn", str(order.resource_id))], ledger
        kinds = [e["kind"] for e in timeline]
        assert kinds.count("order.placed") == 1, kinds
        assert kinds.count("loyalty.points_changed") == 1, kinds
        assert kinds.count("notification.sent") == 2, kinds  # the email and the SMS
        email = traffic.shop.customers[signed_up.resource_id]["email"].lower()
        assert sum(email in str(m["To"]).lower() for m in stack.smtp.messages) == 1
        assert sum(m.to == "+491517770001" for m in stack.twilio.messages) == 1
    finally:
        scenario.close()


# -- 5. a webhook disabled at the shop while orders keep coming ---------------------------------
def test_disabled_webhook_is_made_up_by_reconciliation_and_reported(stack):
    # Reconciliation asks for orders modified since its last run: the shop's clock must run
    # from now on, as a real shop's does. One minute is the shortest interval a store takes.
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    scenario = StoreScenario(stack, "hookshop", SEED + 4, CUSTOMERS, ORDERS, reconcile_minutes=1,
                             start=now, span_days=2)
    shop = scenario.shop
    try:
        scenario.sign_up()
        first, *later = scenario.order_slices(3)
        rest = [d for part in later for d in part]
        scenario.deliver(first)
        hook = next(w for w in shop.webhooks.values() if w["topic"] == "order.updated")
        shop.set_webhook_status(hook["id"], "disabled")  # as WooCommerce does after failures
        sent = scenario.deliver(rest, skip_inactive=True)
        assert sent["skipped"] > 0, sent
        ended = datetime.now(timezone.utc)
        waited = time.monotonic()
        scenario.lap("orders delivered")
        print("hookshop deliveries:", sent)

        # Within one interval (60 s, plus the 2 s poll and the run itself) a reconciliation
        # that started after the last delivery has run.
        with stack.rpc() as rpc:
            while True:
                health = rpc.customer_sync.store_health("hookshop")
                last = health["last_reconciled_at"]
                if last and datetime.fromisoformat(last) > ended:
                    break
                assert time.monotonic() - waited < 60 + 2 + 30, health
                time.sleep(1)
        print(f"reconciled {time.monotonic() - waited:.1f}s after the last delivery")
        scenario.settle_and_check()

        reported = stack.companion("--json", "store-health", "--store", "hookshop")
        assert reported.returncode == 1, reported.stdout + reported.stderr
        problems = cli_json(reported)["problems"]
        assert any(p.startswith("order.updated:") and f"#{hook['id']} is disabled" in p
                   for p in problems), problems

        # The operator's fix: register again (re-activates it), reconcile now: healthy.
        again = stack.companion("--json", "webhooks", "register", "--store", "hookshop",
                                "--delivery-url", stack.procs.web_url("customer_sync"))
        assert again.returncode == 0, again.stdout + again.stderr
        outcomes = {w["topic"]: w["outcome"] for w in cli_json(again)["webhooks"]}
        assert outcomes["order.updated"] == "reactivated", outcomes
        with stack.rpc() as rpc:
            assert rpc.customer_sync.reconcile("hookshop")["webhook_problems"] == []
        assert stack.companion("store-health", "--store", "hookshop").returncode == 0
    finally:
        scenario.close()
