"""The rewards' proof, computed from loyalty's answers and the shop's own state, never from
loyalty's code: every ledger adds up to its balance, every reward is spent at most once, and
points are never both spent and given back.

`check_rewards` reads, for each customer, loyalty's `history` (every page), `get_account` and
`list_rewards`, and the stand-in shop's coupons and orders, then applies the pure checks below
(`ledger_problems`, `reward_problems`, unit-tested in tests/unit/test_rewards_check.py):

* ledger: earned - reversed - redeemed + returned - expired + adjusted == the balance, each
  kind moving the way it should (a redemption never adds points), and every entry's running
  balance equal to the one before it plus its delta, in each book;
* shop: a reward's coupon has a usage count of at most one, its code is on at most one order
  that counts a use (pending, processing, on-hold, completed, and refunded, which keeps the
  use), and no coupon the companion made is left without its reward or doubles one (a retried
  creation that made a second coupon);
* spent or given back: a reward returned or expired has no order spending its code, and a
  used one has no "return" entry in the ledger; with `follows_shop`, loyalty's state agrees
  with the shop's orders (used exactly when an order spends the code, and that order named);
* with `final_states`, every reward ended in one of them (none lost, none still pending).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from shared.errors import NotFound  # registered: nameko re-raises loyalty's NotFound as it
from tests.system.scenario import history

# How each kind moves the points book: +1 adds, -1 takes, 0 either way (an adjustment).
POINTS_KINDS = {"earn": 1, "reverse": -1, "redeem": -1, "return": 1, "expire": -1, "adjust": 0}
# Order statuses in which WooCommerce counts the order's coupons as used (refunds keep the
# use: docs/woocommerce-coupons.md, "Usage is counted by order status").
SPENDING_STATUSES = frozenset({"pending", "processing", "on-hold", "completed", "refunded"})
GIVEN_BACK_STATES = frozenset({"returned", "expired"})


def _minor(amount) -> int:
    """A money amount as minor units, from a shop string ("5.00"), a Money dict or an int."""
    if isinstance(amount, dict):
        amount = amount.get("amount")
    if isinstance(amount, str):
        whole, _, frac = amount.partition(".")
        return int(whole) * 100 + int((frac + "00")[:2])
    return int(amount)


def ledger_problems(entries: list[dict], account: dict) -> list[tuple]:
    """What is wrong with one customer's ledger (`history`, every page) against their account
    (`get_account`): [] when it adds up."""
    problems: list[tuple] = []
    ordered = sorted(entries, key=lambda e: e.get("seq", 0))
    running: Counter = Counter()
    moved: Counter = Counter()
    for e in ordered:
        book = e.get("book", "points")
        if "balance" in e and e["balance"] != running[book] + e["delta"]:
            problems.append(("running balance", book, e.get("key"), running[book], e["delta"], e["balance"]))
        running[book] = e.get("balance", running[book] + e["delta"])
        if book != "points":
            continue
        direction = POINTS_KINDS.get(e["kind"])
        if direction is None:
            problems.append(("unknown kind", e["kind"], e.get("key")))
            continue
        if direction * e["delta"] < 0:
            problems.append(("delta against its kind", e["kind"], e["delta"], e.get("key")))
        moved[e["kind"]] += abs(e["delta"]) if direction else e["delta"]
    total = (moved["earn"] - moved["reverse"] - moved["redeem"] + moved["return"]
             - moved["expire"] + moved["adjust"])
    if total != account["balance"]:
        problems.append(("balance", account["balance"], total, dict(moved)))
    return problems


def _names_reward(entry: dict, reward: dict) -> bool:
    """Whether a ledger entry belongs to this reward (its id in the entry's key or details)."""
    reward_id = str(reward["reward_id"])
    details = entry.get("details") or {}
    return (reward_id in str(entry.get("key", "")) or str(details.get("reward_id")) == reward_id
            or (reward.get("code") is not None and details.get("code") == reward["code"]))


def reward_problems(rewards: dict[str, list[dict]], ledgers: dict[str, list[dict]],
                    coupons: Iterable[dict], orders: Iterable[dict], *,
                    final_states: Iterable[str] | None = None,
                    follows_shop: bool = True) -> list[tuple]:
    """What is wrong with the rewards of a store: `rewards` and `ledgers` by customer (from
    `list_rewards` and `history`), the shop's `coupons` (published ones: every one of them the
    companion's) and `orders`. [] when every rule of the module doc holds."""
    problems: list[tuple] = []
    published = [c for c in coupons if c["status"] == "publish"]
    by_code = {c["code"].lower(): c for c in published}
    spending: dict[str, list[dict]] = {}
    for order in orders:
        if order["status"] in SPENDING_STATUSES:
            for line in order["coupon_lines"]:
                spending.setdefault(line["code"].lower(), []).append(order)
    wanted = set(final_states) if final_states is not None else None
    codes: Counter = Counter()
    reward_ids = {}
    for customer_id, items in rewards.items():
        returns = [e for e in ledgers.get(customer_id, []) if e["kind"] == "return"]
        for reward in items:
            rid, state, code = reward["reward_id"], reward["state"], reward.get("code")
            reward_ids[str(rid)] = code
            if wanted is not None and state not in wanted:
                problems.append(("reward not settled", customer_id, rid, state))
            if code is None:
                if state not in ("pending", "returned", "expired"):
                    problems.append(("reward without a code", customer_id, rid, state))
                continue
            code = code.lower()
            codes[code] += 1
            coupon = by_code.get(code)
            used_by = spending.get(code, [])
            if coupon is None and state in ("issued", "used"):
                problems.append(("coupon missing at the shop", customer_id, rid, state, code))
            if coupon is not None and coupon["usage_count"] > 1:
                problems.append(("coupon used twice", customer_id, rid, code, coupon["usage_count"]))
            if coupon is not None and coupon["discount_type"] == "fixed_cart" \
                    and reward.get("amount") is not None \
                    and _minor(coupon["amount"]) != _minor(reward["amount"]):
                problems.append(("coupon amount", customer_id, rid, coupon["amount"], reward["amount"]))
            if len(used_by) > 1:
                problems.append(("code on two orders", customer_id, rid, code, [o["id"] for o in used_by]))
            given_back = [e for e in returns if _names_reward(e, reward)]
            if state in GIVEN_BACK_STATES and used_by:
                problems.append(("spent and given back", customer_id, rid, state, [o["id"] for o in used_by]))
            if state == "used" and given_back:
                problems.append(("used and returned", customer_id, rid, [e.get("key") for e in given_back]))
            if len(given_back) > 1:
                problems.append(("returned twice", customer_id, rid, [e.get("key") for e in given_back]))
            if state == "returned" and reward.get("points") and not given_back:
                problems.append(("returned without its points", customer_id, rid))
            if follows_shop:
                if state == "used" and not used_by:
                    problems.append(("used here, not at the shop", customer_id, rid, code))
                elif state == "used" and str(reward.get("order_id")) != str(used_by[0]["id"]):
                    problems.append(("used by another order", customer_id, rid, reward.get("order_id"), used_by[0]["id"]))
                if state in ("issued", "pending") and used_by:
                    problems.append(("spent at the shop, not here", customer_id, rid, state, code))
    problems.extend(("code of two rewards", code, n) for code, n in codes.items() if n > 1)
    for coupon in published:
        if coupon["code"] not in codes:
            problems.append(("coupon without its reward", coupon["code"], coupon["id"]))
        named = {str(m.get("value")) for m in coupon.get("meta_data") or []} & set(reward_ids)
        for rid in named:
            if (reward_ids[rid] or "").lower() != coupon["code"]:
                problems.append(("second coupon for a reward", rid, coupon["code"], reward_ids[rid]))
    return problems


def check_rewards(rpc, store: str, shop, customer_ids: Iterable[str], *,
                  final_states: Iterable[str] | None = None, follows_shop: bool = True) -> dict:
    """Read loyalty and the shop and apply every check; AssertionError listing each problem.
    Answers what was read, summed up (rewards by state and kind, coupons, spending orders)."""
    rewards: dict[str, list[dict]] = {}
    ledgers: dict[str, list[dict]] = {}
    problems: list[tuple] = []
    for customer_id in customer_ids:
        try:
            account = rpc.loyalty.get_account(store, customer_id)
        except NotFound:  # no account: then no reward and no ledger either
            continue
        ledgers[customer_id] = history(rpc, store, customer_id)
        rewards[customer_id] = rpc.loyalty.list_rewards(store, customer_id)["items"]
        problems.extend((customer_id,) + p for p in ledger_problems(ledgers[customer_id], account))
    with shop._lock:
        coupons = [dict(c) for c in shop.coupons.values()]
        orders = [dict(o) for o in shop.orders.values()]
    problems.extend(reward_problems(rewards, ledgers, coupons, orders,
                                    final_states=final_states, follows_shop=follows_shop))
    every = [r for items in rewards.values() for r in items]
    reward_codes = {r["code"].lower() for r in every if r.get("code")}
    summary = {
        "accounts": len(ledgers), "rewards": len(every),
        "states": dict(Counter(r["state"] for r in every)),
        "kinds": dict(Counter(r.get("kind") for r in every)),
        "coupons": sum(1 for c in coupons if c["status"] == "publish"),
        "orders_spending_a_reward": sum(
            1 for o in orders if o["status"] in SPENDING_STATUSES
            and any(line["code"].lower() in reward_codes for line in o["coupon_lines"])),
        "returns": sum(1 for entries in ledgers.values() for e in entries if e["kind"] == "return"),
    }
    print(f"{store} rewards:", summary)
    kinds = Counter(p[1] if isinstance(p[0], str) and p[0] in ledgers else p[0] for p in problems)
    assert not problems, f"reward inconsistencies {dict(kinds)}: {problems[:20]}"
    return summary
