"""One customer's loyalty account: points in lots, store credit, tier, and the ledger entries
every change makes. Pure: it works on the account document's plain values, so every rule
(earning, reversal, FIFO expiry, debt, tiers, credit) is unit-tested without a database.

Points live in lots, one per earn or positive adjustment, spent oldest first (FIFO). The
balance is the sum of what the lots hold, minus `debt`: a reversal that finds the points
already redeemed takes what it can and records the rest as debt (a negative balance), which
the next points earned pay back first. Every change appends an entry with a natural key;
a key already applied is never applied again.

Points and store credit are spent at the shop as rewards: single-use coupons recorded on the
account (`rewards`, one record each) and made or deleted at the shop by a retried step. This
module decides each reward's state; what the shop answered is passed in.

A merge hands one account's slice to another as a parcel (lots with their dates, unused
rewards, legacy credit, order states), with a ledger entry pair keyed by the merge; an unmerge
hands back what of it remains, and the restored record's own orders since with their points
(`give_for_merge`, `give_back`, `receive`).
"""
from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Collection

from services.loyalty.programme import VOID_STATUSES, Programme, Tier

POINTS, CREDIT = "points", "credit"
CREDIT_REASONS = ("goodwill", "refund_alternative")
# A reward's life: pending (its coupon is being made), issued (at the shop, unused), used (by an
# order), closing (its coupon is to be deleted: cancelled or expired), then returned or expired.
PENDING, ISSUED, USED, CLOSING, RETURNED, EXPIRED = (
    "pending", "issued", "used", "closing", "returned", "expired")
# A reward handed to another account by a merge or an unmerge: it lives on there.
MOVED = "moved"
UNUSED_REWARD_STATES = (PENDING, ISSUED)  # what a merge or an unmerge hands over
OPEN_REWARD_STATES = (PENDING, CLOSING)  # a step at the shop is due
# An order in one of these does not count its coupons' use (WooCommerce gives the use back).
COUPON_VOID_STATUSES = frozenset({"cancelled", "failed", "trash"})
# An order still being made at checkout has not counted a use yet.
COUPON_UNCOUNTED_STATUSES = COUPON_VOID_STATUSES | {"checkout-draft"}
# Orders remembered per reward code: WooCommerce's usage limit of 1 lets only one count at a
# time, so a few suffice to follow a code given back and spent again.
MAX_ORDERS_PER_CODE = 20


class InsufficientBalance(Exception):
    """A debit the balance does not cover (a redemption, a negative adjustment, a credit use)."""


class InvalidRequest(Exception):
    """A request the programme refuses (below the minimum, not a multiple of the step, ...)."""


class RewardStateConflict(Exception):
    """A reward cannot do that in its state (cancel a used one, for instance)."""


class UnknownReward(Exception):
    """No reward with that id on the account."""


def add_months(moment: datetime, months: int) -> datetime:
    """The same day `months` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass
class Entry:
    """One ledger line. `delta` is points (book "points") or minor units (book "credit")."""

    key: str
    book: str
    kind: str
    delta: int
    balance: int  # of its book, after the entry
    reason: str
    at: datetime
    order_id: str | None = None
    actor: str | None = None
    expires_at: datetime | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"key": self.key, "book": self.book, "kind": self.kind, "delta": self.delta,
                "balance": self.balance, "reason": self.reason, "at": self.at,
                "order_id": self.order_id, "actor": self.actor, "expires_at": self.expires_at,
                "details": self.details}


@dataclass(frozen=True)
class OrderSnapshot:
    """An order as loyalty needs it, from any order event (each carries the whole order)."""

    order_id: str
    status: str
    currency: str
    total: int
    shipping: int
    tax: int
    refunded: int
    created_at: datetime | None
    paid_at: datetime | None
    is_guest: bool
    as_of: datetime  # the event's occurred_at: newer states win


@dataclass
class TierChange:
    old: str | None
    new: str
    direction: str
    points_in_window: int


class Account:
    """A working copy of an account document; methods change it and collect entries."""

    def __init__(self, doc: dict, programme: Programme, now: datetime) -> None:
        self.doc = doc
        self.programme = programme
        self.now = now
        self.entries: list[Entry] = []
        self.tier_change: TierChange | None = None
        self.touched_orders: set[str] = set()  # order states to write back
        self.new_request_keys: list[str] = []
        self.touched_rewards: set[str] = set()  # reward records to write back
        self.touched_transfers: set[str] = set()  # parcels handed over, to write back
        # Events owed beyond the entries' points_changed: (event type, data, natural key).
        self.notices: list[tuple[str, dict, str]] = []
        doc.setdefault("lots", [])
        doc.setdefault("debt", 0)
        doc.setdefault("orders", {})
        doc.setdefault("credit_lots", [])
        doc.setdefault("request_keys", [])
        doc.setdefault("balance", 0)
        doc.setdefault("credit_balance", 0)
        doc.setdefault("rewards", {})
        doc.setdefault("reward_codes", [])
        doc.setdefault("transfers", {})

    # -- reading ---------------------------------------------------------------------------
    @property
    def balance(self) -> int:
        return sum(lot["remaining"] for lot in self.doc["lots"]) - self.doc["debt"]

    @property
    def credit_balance(self) -> int:
        return sum(lot["remaining"] for lot in self.doc["credit_lots"])

    @property
    def currency(self) -> str | None:
        return self.doc.get("currency") or self.programme.currency

    def has_request(self, key: str) -> bool:
        return key in self.doc["request_keys"]

    def _remember(self, key: str) -> None:
        self.doc["request_keys"].append(key)
        self.new_request_keys.append(key)

    def points_in_window(self) -> int:
        """Points earned from orders in the tier window, net of what reversals took back."""
        since = self.now - timedelta(days=self.programme.tier_window_days)
        return sum(lot["points"] - lot.get("reversed", 0) for lot in self.doc["lots"]
                   if lot["source"] == "earn" and lot["earned_at"] > since)

    def next_expiry(self) -> dict | None:
        due = [lot for lot in self.doc["lots"] if lot["remaining"] > 0 and lot.get("expires_at")]
        if not due:
            return None
        first = min(lot["expires_at"] for lot in due)
        points = sum(lot["remaining"] for lot in due if lot["expires_at"] == first)
        return {"at": first, "points": points}

    # -- the one way points move ---------------------------------------------------------------
    def _record(self, key: str, book: str, kind: str, delta: int, reason: str, **extra: Any) -> Entry:
        balance = self.balance if book == POINTS else self.credit_balance
        self.doc["balance"], self.doc["credit_balance"] = self.balance, self.credit_balance
        entry = Entry(key=key, book=book, kind=kind, delta=delta, balance=balance, reason=reason,
                      at=self.now, **extra)
        self.entries.append(entry)
        self.doc.setdefault("member_since", self.now)
        return entry

    def _add_lot(self, key: str, source: str, points: int, earned_at: datetime,
                 order_id: str | None, rate: int | None, **expiry: datetime | None) -> None:
        """A new lot; it expires `expiry_months` after `earned_at`, or at `expires_at` if given
        (points coming back keep the expiry of the points they were)."""
        paid_back = min(self.doc["debt"], points)
        self.doc["debt"] -= paid_back
        if "expires_at" in expiry:
            expires = expiry["expires_at"]
        else:
            expires = (add_months(earned_at, self.programme.expiry_months)
                       if self.programme.expiry_months else None)
        self.doc["lots"].append({
            "lot_id": key, "source": source, "order_id": order_id, "earned_at": earned_at,
            "expires_at": expires, "points": points, "remaining": points - paid_back,
            "paid_debt": paid_back, "reversed": 0, "expired": 0, "rate": rate})
        self.doc["lots"].sort(key=lambda lot: (lot["earned_at"], lot["lot_id"]))

    def _take(self, points: int, first_lot: str | None = None, allow_debt: bool = False,
              only_lot: str | None = None) -> dict[str, int]:
        """Take points from the lots, `first_lot` first, then oldest first. Answers what each
        lot gave; what the lots cannot cover becomes debt, or is refused."""
        lots = self.doc["lots"]
        if only_lot is not None:
            order = [lot for lot in lots if lot["lot_id"] == only_lot]
        else:
            order = sorted(lots, key=lambda lot: (lot["lot_id"] != first_lot,
                                                  lot["earned_at"], lot["lot_id"]))
        available = sum(lot["remaining"] for lot in order)
        if points > available and not allow_debt:
            raise InsufficientBalance(f"{points} points asked, {max(0, self.balance)} available")
        taken: dict[str, int] = {}
        left = points
        for lot in order:
            if left == 0:
                break
            part = min(lot["remaining"], left)
            if part:
                lot["remaining"] -= part
                taken[lot["lot_id"]] = part
                left -= part
        if left:
            self.doc["debt"] += left
            taken["debt"] = left
        return taken

    # -- orders --------------------------------------------------------------------------------
    def apply_order(self, order: OrderSnapshot) -> bool:
        """Bring the account in line with an order's latest state: earn once when it reaches an
        earning status, take back in proportion to refunds, all of it when voided. An older
        state than the one held changes nothing. Answers whether anything changed."""
        held = self.doc["orders"].get(order.order_id)
        if held is not None and held["as_of"] > order.as_of:
            return False
        state = dict(held) if held else {"earned": 0, "reversed": 0, "expired": 0, "rate": None,
                                         "basis": None, "earned_at": None}
        state.update(status=order.status, total=order.total, refunded=order.refunded,
                     as_of=order.as_of)
        self.doc["orders"][order.order_id] = state
        self.touched_orders.add(order.order_id)
        if order.currency and not self.doc.get("currency"):
            self.doc["currency"] = order.currency
        before = len(self.entries)
        if not state["earned"] and state["basis"] is None and self._earns(order):
            self._earn(order, state)
        if state["earned"]:
            self._reverse(order, state)
        self.evaluate_tier()
        return held is None or len(self.entries) > before or held != state

    def _earns(self, order: OrderSnapshot) -> bool:
        p = self.programme
        if order.status not in p.earning_statuses or (order.is_guest and not p.guests_earn):
            return False
        created = order.created_at
        return p.starts_at is None or (created is not None and created >= p.starts_at)

    def _earn(self, order: OrderSnapshot, state: dict) -> None:
        tier = self.current_tier()
        basis = self.programme.earning_basis(order.total, order.shipping, order.tax)
        points = self.programme.points_for(basis, tier.rate, order.currency)
        earned_at = order.paid_at or order.created_at or order.as_of
        state.update(basis=basis, rate=tier.rate, earned_at=earned_at)
        if points <= 0:
            return
        key = f"earn:{order.order_id}"
        state["earned"] = points
        self._add_lot(key, "earn", points, earned_at, order.order_id, tier.rate)
        self._record(key, POINTS, "earn", points, f"order {order.order_id}",
                     order_id=order.order_id,
                     details={"basis": basis, "rate": tier.rate, "tier": tier.name})

    def _reverse(self, order: OrderSnapshot, state: dict) -> None:
        earned = state["earned"]
        if order.status in VOID_STATUSES:
            target = earned
        elif order.total <= 0:
            target = 0
        else:
            target = earned * min(order.refunded, order.total) // order.total
        lot = next((l for l in self.doc["lots"] if l["lot_id"] == f"earn:{order.order_id}"), None)
        # Points of this order that already expired are gone; they are not taken back twice.
        delta = min(target, earned - state.get("expired", 0)) - state["reversed"]
        if delta <= 0:
            return
        state["reversed"] += delta
        if lot is not None:
            lot["reversed"] = lot.get("reversed", 0) + delta
        taken = self._take(delta, first_lot=f"earn:{order.order_id}", allow_debt=True)
        why = "cancelled" if order.status in VOID_STATUSES and order.status != "refunded" else "refund"
        self._record(f"reverse:{order.order_id}:{state['reversed']}", POINTS, "reverse", -delta,
                     f"order {order.order_id} {why}", order_id=order.order_id,
                     details={"taken": taken, "refunded": order.refunded, "total": order.total})

    # -- tiers ---------------------------------------------------------------------------------
    def current_tier(self) -> Tier:
        name = self.doc.get("tier")
        for tier in self.programme.tiers:
            if tier.name == name:
                return tier
        return self.programme.tier_for(self.points_in_window())

    def evaluate_tier(self) -> TierChange | None:
        points = self.points_in_window()
        new = self.programme.tier_for(points).name
        old = self.doc.get("tier")
        if new == old:
            return None
        self.doc["tier"], self.doc["tier_since"] = new, self.now
        if old is None and not self.entries:
            return None
        direction = "up" if self.programme.rank(new) > self.programme.rank(old) else "down"
        self.tier_change = TierChange(old, new, direction, points)
        return self.tier_change

    # -- expiry --------------------------------------------------------------------------------
    def expire_due(self) -> int:
        """Expire what lots still hold past their expiry, oldest first; credit too."""
        expired = 0
        for lot in sorted(self.doc["lots"], key=lambda l: (l["earned_at"], l["lot_id"])):
            expires = lot.get("expires_at")
            if expires is None or expires > self.now or lot["remaining"] <= 0:
                continue
            points = lot["remaining"]
            self._take(points, only_lot=lot["lot_id"])
            lot["expired"] = lot.get("expired", 0) + points
            if lot.get("order_id") in self.doc["orders"]:
                order = self.doc["orders"][lot["order_id"]]
                order["expired"] = order.get("expired", 0) + points
                self.touched_orders.add(lot["order_id"])
            expired += points
            self._record(f"expire:{lot['lot_id']}", POINTS, "expire", -points,
                         f"points earned {lot['earned_at'].date().isoformat()} expired",
                         order_id=lot.get("order_id"))
        for lot in self.doc["credit_lots"]:
            expires = lot.get("expires_at")
            if expires is None or expires > self.now or lot["remaining"] <= 0:
                continue
            amount = lot["remaining"]
            lot["remaining"] = 0
            self._record(f"credit-expire:{lot['credit_id']}", CREDIT, "credit_expire", -amount,
                         f"store credit {lot['credit_id']} expired")
        self._prune()
        return expired

    def _prune(self) -> None:
        """Lots that hold nothing and no longer count for the tier window are history (the
        ledger keeps them; an order's own state remembers what expired of it)."""
        since = self.now - timedelta(days=self.programme.tier_window_days)
        self.doc["lots"] = [lot for lot in self.doc["lots"]
                            if lot["remaining"] > 0 or lot["earned_at"] > since]

    # -- people and systems ------------------------------------------------------------------
    def adjust(self, key: str, points: int, reason: str, actor: str) -> Entry:
        """A manual adjustment: positive adds a lot (expiring like earned points, not counted
        for tiers), negative takes points oldest first and never below zero."""
        if points > 0:
            self._add_lot(key, "adjust", points, self.now, None, None)
        else:
            self._take(-points)
        self._remember(key)
        return self._record(key, POINTS, "adjust", points, reason, actor=actor)

    # -- rewards: coupons at the shop ----------------------------------------------------------
    def redemption_value(self, points: int) -> int:
        """What redeeming `points` is worth at the shop, in minor units; refused below the
        minimum, above the maximum, off the step that keeps the amount in whole minor units,
        or beyond the balance."""
        p = self.programme
        currency = self.currency
        if currency is None:
            raise InvalidRequest("the account has no currency yet (no order); set the "
                                 "programme's currency")
        if points < p.min_redeem_points:
            raise InvalidRequest(f"at least {p.min_redeem_points} points per redemption")
        if p.max_redeem_points is not None and points > p.max_redeem_points:
            raise InvalidRequest(f"at most {p.max_redeem_points} points per redemption")
        step = p.redeem_step(currency)
        if points % step:
            raise InvalidRequest(f"points must be a multiple of {step}")
        if points > max(0, self.balance):
            raise InsufficientBalance(f"{points} points asked, {max(0, self.balance)} available")
        return p.credit_for(points, currency)

    def redeem(self, key: str, points: int, actor: str | None, reward_id: str, code: str) -> dict:
        """Points leave the balance now, and a pending reward records the coupon to make (its
        code fixed here, in the same write, so no retry can make a second coupon)."""
        amount = self.redemption_value(points)
        taken = self._take(points)
        expiries = [lot.get("expires_at") for lot in self.doc["lots"]
                    if lot["lot_id"] in taken and lot.get("expires_at")]
        self._remember(key)
        self._record(key, POINTS, "redeem", -points, "redeemed for a reward coupon", actor=actor,
                     details={"taken": taken, "reward_id": reward_id, "code": code})
        return self._new_reward(
            reward_id, POINTS, code, amount, points, key,
            self.now + timedelta(days=self.programme.reward_expiry_days), "redemption",
            f"{points} points redeemed", actor, points_expire_at=min(expiries, default=None))

    def issue_credit(self, key: str, amount: int, reason: str, note: str, actor: str | None,
                     expires_at: datetime | None, reward_id: str, code: str) -> dict:
        """Store credit from staff: a pending credit reward (a coupon of `amount` minor units),
        no points."""
        if reason not in CREDIT_REASONS:
            raise InvalidRequest(f"reason must be one of {', '.join(CREDIT_REASONS)}")
        if amount <= 0 or amount > MAX_COUPON_MINOR:
            raise InvalidRequest(f"amount must be from 1 to {MAX_COUPON_MINOR} (minor units)")
        if self.currency is None:
            raise InvalidRequest("the account has no currency yet (no order); set the "
                                 "programme's currency")
        if expires_at is None:
            expires_at = self.now + timedelta(days=self.programme.credit_expiry_days)
        elif expires_at <= self.now:
            raise InvalidRequest("expires_at must be in the future")
        self._remember(key)
        return self._new_reward(reward_id, CREDIT, code, amount, None, key, expires_at,
                                reason, note, actor)

    def _new_reward(self, reward_id: str, kind: str, code: str, amount: int, points: int | None,
                    key: str, expires_at: datetime, reason: str, note: str, actor: str | None,
                    points_expire_at: datetime | None = None) -> dict:
        reward = {
            "reward_id": reward_id, "kind": kind, "state": PENDING, "code": code,
            "amount": amount, "currency": self.currency, "points": points, "request_key": key,
            "created_at": self.now, "expires_at": expires_at, "issued_at": None,
            "order_id": None, "orders_using": [], "uses": 0, "attempts": 0,
            "next_attempt_at": self.now, "leased_until": None, "last_error": None,
            "reason": reason, "note": note, "actor": actor, "coupon_id": None,
            "points_expire_at": points_expire_at, "closing_reason": None,
            "points_returned": 0, "ended_at": None}
        self.doc["rewards"][reward_id] = reward
        self.doc["reward_codes"].append(code)
        self._touch(reward_id)
        return reward

    def reward(self, reward_id: str) -> dict:
        reward = self.doc["rewards"].get(reward_id)
        if reward is None:
            raise UnknownReward(f"no reward {reward_id} on this account")
        return reward

    def reward_by_request(self, key: str) -> dict | None:
        return next((r for r in self.doc["rewards"].values() if r["request_key"] == key), None)

    @property
    def rewards_credit(self) -> int:
        """Store credit the customer can still spend: credit coupons issued and unused."""
        return sum(r["amount"] for r in self.doc["rewards"].values()
                   if r["kind"] == CREDIT and r["state"] == ISSUED)

    def _touch(self, reward_id: str) -> None:
        self.touched_rewards.add(reward_id)
        due = [d for d in map(reward_due_at, self.doc["rewards"].values()) if d is not None]
        self.doc["rewards_due_at"] = min(due) if due else None

    def claim_step(self, reward_id: str, retry_seconds: float, retry_max_seconds: float,
                   lease_seconds: float) -> dict | None:
        """Take a reward's due shop step (make or delete its coupon): an issued reward past its
        expiry becomes closing first. The next try is scheduled now, doubling from
        `retry_seconds` up to `retry_max_seconds`, so a worker that dies mid-call is retried;
        the lease says how long the call is the worker's. None when nothing is due."""
        reward = self.doc["rewards"].get(reward_id)
        if reward is None:
            return None
        if reward["state"] == ISSUED and reward["expires_at"] <= self.now:
            reward.update(state=CLOSING, closing_reason="expired", attempts=0,
                          next_attempt_at=self.now, last_error=None)
        if reward["state"] not in OPEN_REWARD_STATES or reward["next_attempt_at"] > self.now:
            return None
        reward["attempts"] += 1
        wait = min(retry_seconds * 2 ** min(reward["attempts"] - 1, 30), retry_max_seconds)
        reward["next_attempt_at"] = self.now + timedelta(seconds=wait)
        reward["leased_until"] = self.now + timedelta(seconds=lease_seconds)
        self._touch(reward_id)
        return dict(reward)

    def coupon_made(self, reward_id: str, answer: dict) -> bool:
        """The shop has the coupon: the reward is issued (unless it moved on meanwhile)."""
        reward = self.reward(reward_id)
        if reward["state"] != PENDING:
            return False
        reward.update(state=ISSUED, issued_at=self.now, coupon_id=answer.get("coupon_id"),
                      next_attempt_at=None, leased_until=None, last_error=None)
        self._touch(reward_id)
        self._notify("loyalty.reward_issued", self._reward_data(reward), f"{reward_id}:issued")
        return True

    def step_failed(self, reward_id: str, error: str, permanent: bool) -> bool:
        """The shop step failed. A coupon the shop refuses for good gives the points back; a
        delete is retried whatever the failure (points go back only once the shop confirmed
        the coupon is gone); anything else waits for its next attempt."""
        reward = self.reward(reward_id)
        if reward["state"] == PENDING and permanent:
            self._end(reward, RETURNED, "refused", error)
            return True
        if reward["state"] not in OPEN_REWARD_STATES:
            return False
        reward.update(last_error=error[:500], leased_until=None)
        self._touch(reward_id)
        return True

    def coupon_deleted(self, reward_id: str, answer: dict) -> bool:
        """The shop answered a delete: a coupon that had been used stays spent (the order's
        webhook will name the order); otherwise the reward ends and its points come back."""
        reward = self.reward(reward_id)
        if reward["state"] != CLOSING:
            return False
        if int(answer.get("usage_count") or 0) > 0:
            reward.update(state=USED, order_id=None, next_attempt_at=None, leased_until=None,
                          last_error=None)
            self._touch(reward_id)
            return True
        reason = reward["closing_reason"]
        self._end(reward, RETURNED if reason == "cancelled" else EXPIRED, reason)
        return True

    def cancel_reward(self, reward_id: str, actor: str) -> dict:
        """An operator withdraws an unused reward: its coupon is to be deleted, then the points
        come back. A pending reward whose coupon call may still be in flight is deleted only
        after that call's lease, so the delete cannot run before a late create."""
        reward = self.reward(reward_id)
        if reward["state"] not in (PENDING, ISSUED):
            raise RewardStateConflict(f"reward {reward_id} is {reward['state']}: only a pending "
                                      "or issued reward can be cancelled")
        lease = reward.get("leased_until")
        start = max(self.now, lease) if lease is not None else self.now
        reward.update(state=CLOSING, closing_reason="cancelled", cancelled_by=actor, attempts=0,
                      next_attempt_at=start, last_error=None)
        self._touch(reward_id)
        return reward

    def apply_coupon_use(self, code: str, order_id: str, status: str, as_of: datetime) -> bool:
        """An order carrying a reward's code. Every order seen with the code is kept with its
        latest state, and the reward's use follows from all of them: while any counts (any
        active status, refunded too) the reward is used by the first of those; when none does
        (cancelled, failed or trashed, as WooCommerce gives the use back) it is unused again.
        So a code given back by one order and spent by the next is spent whichever webhook
        arrives first, and an older state of an order than the one seen changes nothing."""
        code = code.lower()
        reward = next((r for r in self.doc["rewards"].values() if r["code"] == code), None)
        if reward is None:
            return False
        orders = _orders_using(reward)
        seen = next((o for o in orders if o["id"] == order_id), None)
        if seen is not None and seen["as_of"] > as_of:
            return False
        counts = status not in COUPON_UNCOUNTED_STATUSES
        if seen is None:
            seen = {"id": order_id, "first_counted_at": None}
            orders.append(seen)
        seen.update(status=status, as_of=as_of, counts=counts)
        if counts and seen["first_counted_at"] is None:
            seen["first_counted_at"] = as_of
        del orders[:-MAX_ORDERS_PER_CODE]
        reward["orders_using"] = orders
        self._settle_use(reward)
        self._touch(reward["reward_id"])
        return True

    def _settle_use(self, reward: dict) -> None:
        """The reward's state from the orders using its code (see apply_coupon_use). An ended
        reward stays ended; a use the shop reported without an order stays until an order
        names it, or an order is seen giving the use back."""
        reward_id, state = reward["reward_id"], reward["state"]
        if state not in (PENDING, ISSUED, CLOSING, USED):
            return
        counting = [o for o in reward["orders_using"] if o["counts"]]
        if not counting:
            if state == USED:
                back = CLOSING if reward.get("closing_reason") else ISSUED
                reward.update(state=back, order_id=None, used_at=None,
                              next_attempt_at=self.now if back == CLOSING else None)
            return
        user = next((o for o in counting if o["id"] == reward.get("order_id")), None)
        if state == USED and user is not None:
            return
        user = min(counting, key=lambda o: (o["first_counted_at"], o["id"]))
        reward["uses"] = reward.get("uses", 0) + 1
        reward.update(state=USED, order_id=user["id"], used_at=self.now, next_attempt_at=None,
                      leased_until=None, last_error=None)
        self._notify("loyalty.reward_used", {**self._reward_data(reward), "order_id": user["id"]},
                     f"{reward_id}:used:{user['id']}:{reward['uses']}")

    def _end(self, reward: dict, state: str, reason: str, error: str | None = None) -> None:
        """A reward that will not be spent: its points come back (unless it expired and the
        programme keeps expired rewards' points), once."""
        give_back = (reward["kind"] == POINTS and bool(reward["points"])
                     and not reward.get("points_returned")
                     and (reason != "expired" or self.programme.expired_rewards_return_points))
        returned = reward["points"] if give_back else 0
        if returned:
            key = f"return:{reward['reward_id']}"
            self._add_lot(key, "return", returned, self.now, None, None,
                          expires_at=reward.get("points_expire_at"))
            self._record(key, POINTS, "return", returned, f"reward {reward['code']} {reason}",
                         details={"reward_id": reward["reward_id"], "reason": reason})
        reward.update(state=state, ended_at=self.now, next_attempt_at=None, leased_until=None,
                      last_error=error[:500] if error else None, points_returned=returned,
                      end_reason=reason)
        self._touch(reward["reward_id"])
        event = "loyalty.reward_expired" if state == EXPIRED else "loyalty.reward_returned"
        self._notify(event, {**self._reward_data(reward), "reason": reason,
                             "points_returned": returned}, f"{reward['reward_id']}:{state}")

    def _reward_data(self, reward: dict) -> dict:
        expires = reward.get("expires_at")
        return {"customer_id": self.doc["customer_id"], "reward_id": reward["reward_id"],
                "kind": reward["kind"], "code": reward["code"],
                "amount": {"amount": reward["amount"], "currency": reward["currency"]},
                "points": reward["points"], "expires_at": expires.isoformat() if expires else None}

    def _notify(self, event_type: str, data: dict, key: str) -> None:
        self.notices.append((event_type, data, key))

    def convert_legacy_credit(self, name: Callable[[str], tuple[str, str]]) -> int:
        """Credit lots from before credit became coupons: what each still holds becomes one
        pending credit reward (a coupon the reward step makes), once; the lot is emptied by a
        credit-book entry. `name` gives the reward's id and code for a lot's id."""
        converted = 0
        for lot in self.doc["credit_lots"]:
            expires = lot.get("expires_at")
            if lot["remaining"] <= 0 or (expires is not None and expires <= self.now):
                continue
            amount, key = lot["remaining"], f"legacy:{lot['credit_id']}"
            if self.currency is None or amount > MAX_COUPON_MINOR:
                continue
            reward_id, code = name(lot["credit_id"])
            lot["remaining"] = 0
            lot["converted_to"] = reward_id
            self._record(f"credit-convert:{lot['credit_id']}", CREDIT, "credit_convert", -amount,
                         "store credit moved to a coupon", details={"reward_id": reward_id})
            self._new_reward(reward_id, CREDIT, code, amount, None, key,
                             expires or self.now + timedelta(days=self.programme.credit_expiry_days),
                             lot.get("reason") or "goodwill", "store credit held before coupons",
                             None)
            converted += 1
        return converted

    def warn_expiring(self) -> int:
        """Say once per lot, `expiry_warning_days` ahead, that its points will expire."""
        days = self.programme.expiry_warning_days
        if not days:
            return 0
        horizon, warned = self.now + timedelta(days=days), 0
        for lot in self.doc["lots"]:
            expires = lot.get("expires_at")
            if (expires is None or lot["remaining"] <= 0 or lot.get("warned")
                    or not self.now < expires <= horizon):
                continue
            lot["warned"] = True
            warned += 1
            self._notify("loyalty.points_expiring", {
                "customer_id": self.doc["customer_id"], "lot_id": lot["lot_id"],
                "points": lot["remaining"], "expires_at": expires.isoformat(),
                "balance": self.balance}, f"{lot['lot_id']}:expiring")
        return warned

    # -- merges: one account's slice handed to another ---------------------------------------
    def give_for_merge(self, merge_key: str, to_customer: str) -> dict:
        """This account's record was merged into `to_customer`'s: everything it holds moves
        there (its lots, each with its own earned date and expiry, including spent ones still
        counting for the tier; unused rewards, and those whose coupon is being withdrawn, so
        their points come back where the person's points now are; legacy store credit; every
        order's earning state, so a late refund reverses there and nothing earns twice). What
        expired is expired first. A debt stays: it is this record's, and its points coming
        back repay it."""
        self.expire_due()
        return self._give("merge", merge_key, to_customer, list(self.doc["lots"]),
                          [r for r in self.doc["rewards"].values()
                           if r["state"] in UNUSED_REWARD_STATES + (CLOSING,)],
                          [c for c in self.doc["credit_lots"] if c["remaining"] > 0],
                          list(self.doc["orders"]))

    def give_back(self, merge_key: str, to_customer: str,
                  orders_since: Collection[str] = ()) -> dict:
        """Merge `merge_key` was undone: what it brought here goes back to `to_customer`. Of
        the lots, what remains of them now (spending since took the oldest first, so it may be
        less or nothing); rewards and credit only while unused; the moved orders' states as
        they are now. The orders since the merge that were the restored record's own
        (`orders_since`) go too, with what remains of the points they earned here, so their
        later events find their state there and nothing earns twice. Anything else earned or
        spent since stays here."""
        self.expire_due()
        since = set(orders_since)
        mine = [lot for lot in self.doc["lots"] if lot.get("merged_in") == merge_key
                or (lot.get("source") == "earn" and lot.get("order_id") in since
                    and lot.get("merged_in") is None)]
        rewards = [r for r in self.doc["rewards"].values()
                   if r.get("merged_in") == merge_key and r["state"] in UNUSED_REWARD_STATES]
        credit = [c for c in self.doc["credit_lots"]
                  if c.get("merged_in") == merge_key and c["remaining"] > 0]
        orders = [order_id for order_id, state in self.doc["orders"].items()
                  if state.get("merged_in") == merge_key
                  or (order_id in since and state.get("merged_in") is None)]
        return self._give("unmerge", merge_key, to_customer, mine, rewards, credit, orders)

    def _give(self, direction: str, merge_key: str, to_customer: str, lots: list[dict],
              rewards: list[dict], credit_lots: list[dict], order_ids: list[str]) -> dict:
        """Take the named things out of this account into a parcel for `to_customer`, kept on
        the account (under the transfer's id) so the receiving step can be repeated after a
        crash; one ledger entry per book leaves with them."""
        gone = {id(lot) for lot in lots}
        self.doc["lots"] = [lot for lot in self.doc["lots"] if id(lot) not in gone]
        moved_credit = {id(c) for c in credit_lots}
        self.doc["credit_lots"] = [c for c in self.doc["credit_lots"] if id(c) not in moved_credit]
        customer_id = self.doc.get("customer_id")
        parcel_rewards = []
        for reward in rewards:
            parcel_rewards.append({**reward, "coupon_customer_id":
                                   reward.get("coupon_customer_id") or customer_id})
            reward.update(state=MOVED, moved_to=to_customer, moved_at=self.now,
                          next_attempt_at=None, leased_until=None)
            if reward["code"] in self.doc["reward_codes"]:
                self.doc["reward_codes"].remove(reward["code"])
            self._touch(reward["reward_id"])
        parcel = {
            "transfer_id": transfer_id(direction, merge_key), "direction": direction,
            "merge_key": merge_key, "from": customer_id, "to": to_customer, "at": self.now,
            "currency": self.doc.get("currency"),
            "points": sum(lot["remaining"] for lot in lots),
            "credit": sum(c["remaining"] for c in credit_lots),
            "lots": [dict(lot) for lot in lots], "credit_lots": [dict(c) for c in credit_lots],
            "rewards": parcel_rewards,
            "orders": [[order_id, dict(self.doc["orders"][order_id])] for order_id in order_ids]}
        self._move_entries(parcel, "out")
        self.doc["transfers"][parcel["transfer_id"]] = parcel
        self.touched_transfers.add(parcel["transfer_id"])
        self.evaluate_tier()
        return parcel

    def receive(self, parcel: dict) -> None:
        """Take in a parcel another account gave (`_give`): its lots keep their dates and
        expiries (and repay any debt here first, like any points coming in), its rewards stay
        marked as the original holder's coupons, its orders' states replace older ones here.
        Things a merge brings are marked with its key, so an unmerge can find them."""
        key, merging = parcel["merge_key"], parcel["direction"] == "merge"

        def mark(thing: dict) -> dict:
            if merging:
                thing["merged_in"] = key
            else:
                thing.pop("merged_in", None)
            return thing

        held_lots = {lot["lot_id"] for lot in self.doc["lots"]}
        for given in parcel["lots"]:
            lot = mark(dict(given))
            original = lot.pop("from_lot", None) if not merging else lot["lot_id"]
            lot_id = original or lot["lot_id"]
            if lot_id in held_lots:
                lot_id = f"{lot_id}@{parcel['transfer_id'][:12]}"
            if merging:
                lot["from_lot"] = original
            paid_back = min(self.doc["debt"], lot["remaining"])
            self.doc["debt"] -= paid_back
            lot.update(lot_id=lot_id, remaining=lot["remaining"] - paid_back,
                       paid_debt=lot.get("paid_debt", 0) + paid_back)
            self.doc["lots"].append(lot)
            held_lots.add(lot_id)
        self.doc["lots"].sort(key=lambda lot: (lot["earned_at"], lot["lot_id"]))
        held_credit = {c["credit_id"] for c in self.doc["credit_lots"]}
        for given in parcel["credit_lots"]:
            credit = mark(dict(given))
            if credit["credit_id"] in held_credit:
                credit["credit_id"] = f"{credit['credit_id']}@{parcel['transfer_id'][:12]}"
            self.doc["credit_lots"].append(credit)
        for given in parcel["rewards"]:
            reward = mark({**given, "moved_from": parcel["from"]})
            reward.pop("moved_to", None)
            self.doc["rewards"][reward["reward_id"]] = reward
            if reward["code"] not in self.doc["reward_codes"]:
                self.doc["reward_codes"].append(reward["code"])
            self._touch(reward["reward_id"])
        for order_id, state in parcel["orders"]:
            held = self.doc["orders"].get(order_id)
            if held is None or held["as_of"] <= state["as_of"]:
                self.doc["orders"][order_id] = mark(dict(state))
                self.touched_orders.add(order_id)
        if parcel.get("currency") and not self.doc.get("currency"):
            self.doc["currency"] = parcel["currency"]
        self._move_entries(parcel, "in")
        self.evaluate_tier()

    def _move_entries(self, parcel: dict, side: str) -> None:
        """The ledger entry of each book a parcel moves (none for a book it moves nothing of):
        keyed by the direction, the side and the merge, so the pair sums to nothing."""
        sign = -1 if side == "out" else 1
        other = parcel["to"] if side == "out" else parcel["from"]
        key = f"{parcel['direction']}-{side}:{parcel['merge_key']}"
        kind = f"{parcel['direction']}_{side}"
        why = {"merge": "merged", "unmerge": "merge undone"}[parcel["direction"]]
        reason = f"{why}: to customer {other}" if side == "out" else f"{why}: from customer {other}"
        details = {"merge_key": parcel["merge_key"], "customer": other,
                   "lots": [{"lot_id": lot["lot_id"], "points": lot["remaining"],
                             "earned_at": _text_time(lot["earned_at"]),
                             "expires_at": _text_time(lot.get("expires_at"))}
                            for lot in parcel["lots"] if lot["remaining"]],
                   "rewards": [r["reward_id"] for r in parcel["rewards"]]}
        if parcel["points"]:
            self._record(key, POINTS, kind, sign * parcel["points"], reason, details=details)
        if parcel["credit"]:
            self._record(f"{key}:credit", CREDIT, kind, sign * parcel["credit"], reason,
                         details={"merge_key": parcel["merge_key"], "customer": other})
        self._remember(key)


MAX_COUPON_MINOR = 10 ** 12  # CouponSpec's bound on a fixed amount


def transfer_id(direction: str, merge_key: str) -> str:
    """A parcel's id: a field name derived from what it names (merge keys hold any text)."""
    return hashlib.sha256(f"{direction}:{merge_key}".encode()).hexdigest()[:32]


def _text_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def coupon_meta(customer_id: str, reward: dict) -> dict[str, str]:
    """What marks the coupon as this reward's: the shop is asked for a coupon with the code
    *and* this meta, so somebody else's coupon with the same code is never taken for it. A
    reward a merge moved keeps the customer it was made for (its coupon may exist already)."""
    return {"loyalty_customer": reward.get("coupon_customer_id") or customer_id, "loyalty_reward": reward["reward_id"],
            "loyalty_entry": reward["request_key"]}


def coupons_to_withdraw(doc: dict) -> list[tuple[dict, dict[str, str], datetime | None]]:
    """An account's rewards whose coupon may be at the shop unused (pending, issued, closing),
    with the meta that marks each and the end of a coupon call that may still be running."""
    return [(reward, coupon_meta(doc["customer_id"], reward), reward.get("leased_until"))
            for reward in (doc.get("rewards") or {}).values()
            if reward["state"] in (PENDING, ISSUED, CLOSING)]


def _orders_using(reward: dict) -> list[dict]:
    """The orders seen with a reward's code. A reward from before they were kept starts from
    the order that used it, if any."""
    if "orders_using" in reward:
        return reward["orders_using"]
    orders = []
    last = reward.get("last_order") or {}
    if reward["state"] == USED and reward.get("order_id") is not None:
        at = last.get("as_of") if last.get("id") == reward["order_id"] else None
        at = at or reward.get("used_at") or reward["created_at"]
        orders.append({"id": reward["order_id"], "status": "processing", "as_of": at,
                       "counts": True, "first_counted_at": at})
    return orders


def reward_due_at(reward: dict) -> datetime | None:
    """When a reward next needs the shop: its next attempt while a step is open, its expiry
    while issued, never once it is used or ended."""
    if reward["state"] in OPEN_REWARD_STATES:
        return reward["next_attempt_at"]
    if reward["state"] == ISSUED:
        return reward["expires_at"]
    return None


def ledger_check(entries: list[dict], doc: dict) -> dict:
    """Does one customer's ledger agree with their account? The points entries must sum to the
    balance (earned - reversed - redeemed + returned - expired + adjustments), and every
    points reward must have left the balance once and come back at most once, never while it
    counts as spent (a reward a merge moved is checked where it now is). Answers the totals
    by kind and the problems found (none when `ok`)."""
    totals: dict[str, int] = {}
    for entry in entries:
        if entry["book"] == POINTS:
            totals[entry["kind"]] = totals.get(entry["kind"], 0) + entry["delta"]
    balance = sum(lot["remaining"] for lot in doc.get("lots", [])) - doc.get("debt", 0)
    from_entries = sum(totals.values())
    problems = []
    if from_entries != balance:
        problems.append(f"entries sum to {from_entries}, the lots hold {balance}")
    if doc.get("balance", 0) != balance:
        problems.append(f"the account says {doc.get('balance')}, the lots hold {balance}")
    by_key = {e["key"]: e for e in entries}
    for reward in doc.get("rewards", {}).values():
        if reward["kind"] != POINTS or reward["state"] == MOVED:
            continue  # a moved reward is checked on the account holding it
        name = reward["reward_id"]
        spent = by_key.get(reward["request_key"])
        if spent is None and reward.get("moved_from"):
            pass  # redeemed on the account a merge brought it from
        elif spent is None or spent["delta"] != -reward["points"]:
            problems.append(f"reward {name}: no redeem entry of -{reward['points']}")
        back = by_key.get(f"return:{name}")
        returned = back["delta"] if back else 0
        if returned and reward["state"] not in (RETURNED, EXPIRED):
            problems.append(f"reward {name} is {reward['state']} and its points came back")
        if returned != reward.get("points_returned", 0):
            problems.append(f"reward {name}: {returned} returned by the ledger, "
                            f"{reward.get('points_returned', 0)} by the reward")
        if reward["state"] == RETURNED and returned != reward["points"]:
            problems.append(f"reward {name} was returned without its points")
    return {"totals": totals, "balance": balance, "from_entries": from_entries,
            "problems": problems, "ok": not problems}
