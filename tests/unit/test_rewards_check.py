"""The rewards' proof (tests/system/rewards_check.py) finds each way rewards can go wrong, and
passes a store where nothing did: a check that cannot fail proves nothing."""
from __future__ import annotations

import copy

from tests.system.rewards_check import ledger_problems, reward_problems


def _entry(seq: int, kind: str, delta: int, balance: int, key: str, **details) -> dict:
    return {"seq": seq, "book": "points", "kind": kind, "delta": delta, "balance": balance,
            "key": key, "details": details}


LEDGER = [
    _entry(1, "earn", 900, 900, "earn:1001"),
    _entry(2, "redeem", -300, 600, "redeem:r-used"),
    _entry(3, "redeem", -200, 400, "redeem:r-back"),
    _entry(4, "return", 200, 600, "return:r-back", reward_id="r-back"),
    _entry(5, "reverse", -100, 500, "reverse:1001"),
    _entry(6, "adjust", 50, 550, "adjust:a-1"),
    _entry(7, "expire", -50, 500, "expire:lot-1"),
    {"seq": 8, "book": "credit", "kind": "issue", "delta": 700, "balance": 700, "key": "credit:c-1", "details": {}},
]
ACCOUNT = {"balance": 500}
REWARDS = {"c-1": [
    {"reward_id": "r-used", "kind": "points", "state": "used", "code": "rw-used", "amount": {"amount": 300, "currency": "EUR"}, "points": 300, "order_id": "2001"},
    {"reward_id": "r-back", "kind": "points", "state": "returned", "code": "rw-back", "amount": {"amount": 200, "currency": "EUR"}, "points": 200, "order_id": None},
    {"reward_id": "r-open", "kind": "credit", "state": "issued", "code": "rw-open", "amount": {"amount": 700, "currency": "EUR"}, "points": None, "order_id": None},
]}


def _coupon(coupon_id: int, code: str, amount: str, usage: int, reward_id: str) -> dict:
    return {"id": coupon_id, "code": code, "status": "publish", "discount_type": "fixed_cart",
            "amount": amount, "usage_count": usage,
            "meta_data": [{"id": coupon_id, "key": "reward_id", "value": reward_id}]}


COUPONS = [_coupon(1, "rw-used", "3.00", 1, "r-used"), _coupon(2, "rw-open", "7.00", 0, "r-open")]
ORDERS = [
    {"id": 2001, "status": "completed", "coupon_lines": [{"code": "rw-used"}]},
    {"id": 2002, "status": "cancelled", "coupon_lines": [{"code": "rw-back"}]},  # gave its use back
    {"id": 2003, "status": "processing", "coupon_lines": []},
]


def _problems(rewards=REWARDS, coupons=COUPONS, orders=ORDERS, ledger=LEDGER, **options) -> list:
    return reward_problems(rewards, {"c-1": ledger}, coupons, orders, **options)


def _kinds(problems: list) -> set:
    return {p[0] for p in problems}


def test_a_store_where_nothing_went_wrong_passes():
    assert ledger_problems(LEDGER, ACCOUNT) == []
    assert _problems(final_states={"issued", "used", "returned"}) == []


def test_a_ledger_that_does_not_add_up_is_found():
    assert _kinds(ledger_problems(LEDGER, {"balance": 700})) == {"balance"}
    positive_redeem = copy.deepcopy(LEDGER)
    positive_redeem[1].update(delta=300, balance=1200)
    found = _kinds(ledger_problems(positive_redeem, ACCOUNT))
    assert "delta against its kind" in found
    skipped = [e for e in LEDGER if e["seq"] != 5]  # an entry lost: the running balance jumps
    assert "running balance" in _kinds(ledger_problems(skipped, ACCOUNT))
    odd = LEDGER + [_entry(9, "bonus", 10, 510, "bonus:1")]
    assert "unknown kind" in _kinds(ledger_problems(odd, {"balance": 510}))


def test_a_reward_spent_twice_is_found():
    twice = copy.deepcopy(COUPONS)
    twice[0]["usage_count"] = 2
    orders = ORDERS + [{"id": 2004, "status": "on-hold", "coupon_lines": [{"code": "RW-USED"}]}]
    assert _kinds(_problems(coupons=twice, orders=orders)) >= {"coupon used twice", "code on two orders"}


def test_points_both_spent_and_given_back_are_found():
    spent = [o if o["id"] != 2002 else {**o, "status": "processing"} for o in ORDERS]
    assert "spent and given back" in _kinds(_problems(orders=spent))
    ledger = LEDGER + [_entry(9, "return", 300, 800, "return:r-used", reward_id="r-used")]
    found = _kinds(reward_problems(REWARDS, {"c-1": ledger}, COUPONS, ORDERS))
    assert "used and returned" in found
    no_return = [e for e in LEDGER if e["kind"] != "return"]
    assert "returned without its points" in _kinds(_problems(ledger=no_return))


def test_a_second_coupon_for_one_reward_and_a_lost_reward_are_found():
    retried = COUPONS + [_coupon(3, "rw-again", "3.00", 0, "r-used")]
    assert _kinds(_problems(coupons=retried)) == {"coupon without its reward", "second coupon for a reward"}
    pending = copy.deepcopy(REWARDS)
    pending["c-1"][2].update(state="pending", code=None)
    assert _kinds(_problems(rewards=pending, coupons=COUPONS[:1], final_states={"issued", "used", "returned"})) \
        == {"reward not settled"}
    missing = COUPONS[:1]  # issued, but its coupon is not at the shop
    assert _kinds(_problems(coupons=missing)) == {"coupon missing at the shop"}
    wrong_amount = [COUPONS[0], {**COUPONS[1], "amount": "70.00"}]
    assert _kinds(_problems(coupons=wrong_amount)) == {"coupon amount"}


def test_loyalty_out_of_step_with_the_shops_orders_is_found_when_asked():
    unspent = [o for o in ORDERS if o["id"] != 2001]
    assert _kinds(_problems(orders=unspent)) == {"used here, not at the shop"}
    assert _problems(orders=unspent, follows_shop=False) == []
    spent_open = ORDERS + [{"id": 2005, "status": "processing", "coupon_lines": [{"code": "rw-open"}]}]
    assert _kinds(_problems(orders=spent_open)) == {"spent at the shop, not here"}
    other = copy.deepcopy(REWARDS)
    other["c-1"][0]["order_id"] = "1999"
    assert _kinds(_problems(rewards=other)) == {"used by another order"}
