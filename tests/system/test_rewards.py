"""Rewards through the whole system: redemptions become single-use coupons at the shop, the
traffic spends some of them and cancels some of those orders, and faults strike the coupon
step. After each run, tests/system/rewards_check.py: every ledger adds up, no reward has two
coupons or is spent twice, none is lost, points are never both spent and given back.

The six services run as OS processes (tests/system/fault_stack.py) against one database
process (tests/fakes/mongo_server.py), so a service killed with SIGKILL finds its data again.
Each test drives a store and fake shop of its own (StoreScenario), seeded:

* kill -9 of loyalty inside coupon creation: the shop holds every coupon POST
  (`hold_coupon_creation`), loyalty is killed once customer_sync's POST is waiting there, the
  shop then creates that coupon with nobody left to hear the answer, and loyalty restarts.
  Its step must find that coupon rather than make a second one.
* a shop outage during redemptions (`coupons_down`): the rewards wait as pending with their
  points already taken, and are all issued once the shop is back.
* a shop refusing coupon writes for good (`refuse_coupon_writes`): every reward is returned
  and every point comes back, once.

Sizes: REWARDS_CUSTOMERS / REWARDS_ORDERS (default 20 / 100).
"""
from __future__ import annotations

import time
from typing import Callable

import pytest

from shared.errors import NotFound  # registered: nameko re-raises loyalty's NotFound as it
from tests.system.fault_stack import FaultStack, StoreScenario, log_dir, size
from tests.system.harness import MongoServerProcess
from tests.system.rewards_check import check_rewards
from tests.system.scenario import pages
from tests.system.test_kill import Background

CUSTOMERS, ORDERS = size("REWARDS_CUSTOMERS", 20), size("REWARDS_ORDERS", 100)
ORDERS_AFTER = 60  # orders after the redemptions, some spending the new coupons
SETTLED = {"issued", "used", "returned"}


@pytest.fixture(scope="module")
def rewards_stack(system_vhost):
    """The fault stack on one database process, so a killed loyalty keeps its ledger."""
    admin, vhost, amqp_uri = system_vhost
    logs = log_dir("rewards")
    mongo = MongoServerProcess(logs)
    stack = FaultStack(admin, vhost, amqp_uri, logs, env={
        "MONGO_URI": mongo.uri,
        # A claim the killed worker left blocks its event until the lease ends.
        "EVENT_CLAIM_LEASE_SECONDS": "20", "NOTIFY_LEASE_SECONDS": "20",
        # A reward step a dead worker held, or one the outage failed, is tried again within
        # seconds rather than the default half minute doubling to an hour.
        "LOYALTY_REWARD_STEP_SECONDS": "1", "LOYALTY_REWARD_RETRY_SECONDS": "5",
        "LOYALTY_REWARD_RETRY_MAX_SECONDS": "10"})
    try:
        yield stack.start()
    finally:
        stack.stop()
        mongo.stop()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `condition` until it answers something true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.5)


def customer_ids(stack: FaultStack, store: str) -> list[str]:
    with stack.rpc() as rpc:
        return sorted(c["customer_id"] for c in pages(rpc.customer_sync.list_customers, store, None)
                      if c.get("registered"))


def plan_redemptions(stack: FaultStack, store: str, ids: list[str]) -> list[tuple[str, int, str]]:
    """(customer, points, request id): one redemption for each customer with 200 points or
    more, a second for those with 600 or more; a quarter of the balance, whole hundreds."""
    plan = []
    with stack.rpc() as rpc:
        for customer_id in ids:
            try:
                balance = rpc.loyalty.get_account(store, customer_id)["balance"]
            except NotFound:  # no order earned anything: no account
                continue
            for n in range(1 if balance < 600 else 2):
                if balance >= 200:
                    plan.append((customer_id, max(100, balance // 4 // 100 * 100), f"{store}-{customer_id}-{n}"))
    return plan


def redeem_all(stack: FaultStack, store: str, plan: list[tuple[str, int, str]]) -> list[dict]:
    """Each redemption over RPC, with its request id (a redelivered call is the same request)."""
    with stack.rpc(timeout=120) as rpc:
        return [rpc.loyalty.redeem(store, customer_id, points, request_id, "rewards-test")
                for customer_id, points, request_id in plan]


def rewards_of(stack: FaultStack, store: str, ids: list[str]) -> dict[str, list[dict]]:
    """Every reward of each customer who has a loyalty account."""
    found = {}
    with stack.rpc() as rpc:
        for cid in ids:
            try:
                found[cid] = rpc.loyalty.list_rewards(store, cid)["items"]
            except NotFound:  # no account: nothing to read
                pass
    return found


def balances(stack: FaultStack, store: str, ids: list[str]) -> dict[str, int]:
    found = {}
    with stack.rpc() as rpc:
        for cid in ids:
            try:
                found[cid] = rpc.loyalty.get_account(store, cid)["balance"]
            except NotFound:  # no account: nothing to read
                pass
    return found


def _states(rewards: dict[str, list[dict]]) -> list[str]:
    return [r["state"] for items in rewards.values() for r in items]


def deliver_traffic(scenario: StoreScenario) -> None:
    scenario.sign_up()
    scenario.deliver(scenario.traffic.order_deliveries)
    scenario.stack.quiet()
    scenario.lap("traffic delivered")


def spend_rewards(scenario: StoreScenario) -> None:
    """More orders, of which some spend a customer's new coupon and some of those are cancelled."""
    traffic = scenario.traffic
    traffic.coupon_use_share, traffic.coupon_cancel_share = 0.6, 0.3
    scenario.deliver(traffic.extend(ORDERS_AFTER, span_days=0.5))
    scenario.stack.quiet()
    scenario.lap("rewards spent")
    cancelled = [oid for oid in traffic.coupon_orders if scenario.shop.orders[oid]["status"] == "cancelled"]
    print(f"{scenario.store}: {len(traffic.coupon_orders)} orders spent a code, {len(cancelled)} "
          f"of them cancelled, {len(traffic.coupon_refusals)} refused at checkout")
    assert traffic.coupon_orders and cancelled and len(cancelled) < len(traffic.coupon_orders)


def test_kill_9_of_loyalty_inside_coupon_creation_makes_no_second_coupon_and_loses_no_reward(rewards_stack):
    stack = rewards_stack
    scenario = StoreScenario(stack, "rewardkill", seed=21, customers=CUSTOMERS, orders=ORDERS)
    shop, store = scenario.shop, scenario.store
    try:
        deliver_traffic(scenario)
        ids = customer_ids(stack, store)
        plan = plan_redemptions(stack, store, ids)
        assert len(plan) >= 5, plan
        before = balances(stack, store, ids)

        shop.hold_coupon_creation()
        redemptions = Background(lambda: redeem_all(stack, store, plan))
        assert shop.wait_for_held_creation(1, timeout=90), "no coupon creation reached the shop"
        posts_before = shop.count_requests("coupons")
        stack.procs.kill("loyalty")  # customer_sync's POST for it is waiting at the shop
        assert shop.coupons == {}  # every creation is held: nothing made yet
        shop.release_coupon_creation()  # the shop now creates it, for nobody to hear
        wait_for(lambda: shop.count_requests("coupons") > posts_before, 30, "the held POST answered")
        made_while_dead = {c["code"] for c in shop.coupons.values()}
        assert made_while_dead, "the held creation made no coupon: the kill proved nothing"
        stack.procs.start("loyalty")
        scenario.lap("loyalty killed and back")
        redemptions.result(timeout=180)
        wait_for(lambda: "pending" not in _states(rewards_of(stack, store, ids)), 120,
                 "every reward out of pending after the restart")
        stack.quiet()

        rewards = rewards_of(stack, store, ids)
        made = {cid: len(items) for cid, items in rewards.items() if items}
        planned: dict[str, int] = {}
        for cid, _, _ in plan:
            planned[cid] = planned.get(cid, 0) + 1
        assert made == planned, "a redemption made no reward, or two"
        after = balances(stack, store, ids)
        for cid, points, _ in plan:  # the points left at the request (none given back here)
            before[cid] -= points
        assert {cid: after[cid] for cid in planned} == {cid: before[cid] for cid in planned}

        spend_rewards(scenario)
        with stack.rpc() as rpc:
            summary = check_rewards(rpc, store, shop, ids, final_states=SETTLED)
        assert summary["rewards"] == len(plan) == summary["coupons"]
        assert summary["states"].get("used"), summary
        # The coupons made for a dead loyalty are its rewards' coupons, not orphans beside them.
        codes = {r["code"] for items in rewards_of(stack, store, ids).values() for r in items}
        assert made_while_dead <= codes
        scenario.lap("checked")
        print(f"{store} timings:", scenario.timings)
    finally:
        shop.reset_faults()
        scenario.close()


def test_a_shop_outage_during_redemptions_leaves_rewards_pending_then_issues_them_all(rewards_stack):
    stack = rewards_stack
    scenario = StoreScenario(stack, "rewardoutage", seed=22, customers=CUSTOMERS, orders=ORDERS)
    shop, store = scenario.shop, scenario.store
    try:
        deliver_traffic(scenario)
        ids = customer_ids(stack, store)
        plan = plan_redemptions(stack, store, ids)
        assert len(plan) >= 5, plan
        before = balances(stack, store, ids)

        shop.coupons_down(503, retry_after="1")
        answers = redeem_all(stack, store, plan)
        assert {a["reward"]["state"] for a in answers} == {"pending"}, answers[:3]
        # Every redemption has met the outage at least once: the rewards wait, points taken.
        wait_for(lambda: shop.count_requests("coupons", status=503) >= len(plan), 60,
                 "loyalty trying the shop for each reward")
        assert set(_states(rewards_of(stack, store, ids))) == {"pending"}
        assert shop.coupons == {}
        after = balances(stack, store, ids)
        for cid, points, _ in plan:
            before[cid] -= points
        assert {cid: after[cid] for cid in after} == {cid: before[cid] for cid in after}
        scenario.lap("rewards pending through the outage")

        shop.reset_faults()
        wait_for(lambda: set(_states(rewards_of(stack, store, ids))) == {"issued"}, 150,
                 "every reward issued once the shop is back")
        stack.quiet()
        scenario.lap("all issued")
        with stack.rpc() as rpc:
            summary = check_rewards(rpc, store, shop, ids, final_states={"issued"})
        assert summary["rewards"] == len(plan) == summary["coupons"]
        print(f"{store} timings:", scenario.timings)
    finally:
        shop.reset_faults()
        scenario.close()


def test_a_shop_refusing_coupons_for_good_gives_each_redemptions_points_back_once(rewards_stack):
    stack = rewards_stack
    scenario = StoreScenario(stack, "rewardrefused", seed=23, customers=CUSTOMERS, orders=ORDERS)
    shop, store = scenario.shop, scenario.store
    try:
        deliver_traffic(scenario)
        ids = customer_ids(stack, store)
        plan = plan_redemptions(stack, store, ids)
        assert len(plan) >= 5, plan
        before = balances(stack, store, ids)

        shop.refuse_coupon_writes()  # 400 woocommerce_rest_shop_coupon_not_created: for good
        answers = redeem_all(stack, store, plan)
        # Mostly refused within the request; a reward the timer's step claimed first is
        # answered pending and refused by that step.
        assert {a["reward"]["state"] for a in answers} <= {"pending", "returned"}, answers[:3]
        wait_for(lambda: set(_states(rewards_of(stack, store, ids))) == {"returned"}, 60,
                 "every refused reward returned")
        assert shop.coupons == {}
        stack.quiet()
        assert balances(stack, store, ids) == before  # every point back, none twice
        scenario.lap("refused and returned")
        with stack.rpc() as rpc:
            summary = check_rewards(rpc, store, shop, ids, final_states={"returned"})
        assert summary["rewards"] == len(plan) == summary["returns"] and summary["coupons"] == 0
        print(f"{store} timings:", scenario.timings)
    finally:
        shop.reset_faults()
        scenario.close()
