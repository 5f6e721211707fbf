"""One customer's loyalty account: points in lots, store credit, tier, and the ledger entries
every change makes. Pure: it works on the account document's plain values, so every rule
(earning, reversal, FIFO expiry, debt, tiers, credit) is unit-tested without a database.

Points live in lots, one per earn or positive adjustment, spent oldest first (FIFO). The
balance is the sum of what the lots hold, minus `debt`: a reversal that finds the points
already redeemed takes what it can and records the rest as debt (a negative balance), which
the next points earned pay back first. Every change appends an entry with a natural key;
a key already applied is never applied again.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from services.loyalty.programme import VOID_STATUSES, Programme, Tier

POINTS, CREDIT = "points", "credit"
CREDIT_REASONS = ("goodwill", "refund_alternative", "redemption")


class InsufficientBalance(Exception):
    """A debit the balance does not cover (a redemption, a negative adjustment, a credit use)."""


class InvalidRequest(Exception):
    """A request the programme refuses (below the minimum, not a multiple of the step, ...)."""


def aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


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
        doc.setdefault("lots", [])
        doc.setdefault("debt", 0)
        doc.setdefault("orders", {})
        doc.setdefault("credit_lots", [])
        doc.setdefault("request_keys", [])
        doc.setdefault("balance", 0)
        doc.setdefault("credit_balance", 0)

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
                   if lot["source"] == "earn" and aware(lot["earned_at"]) > since)

    def next_expiry(self) -> dict | None:
        due = [lot for lot in self.doc["lots"] if lot["remaining"] > 0 and lot.get("expires_at")]
        if not due:
            return None
        first = min(aware(lot["expires_at"]) for lot in due)
        points = sum(lot["remaining"] for lot in due if aware(lot["expires_at"]) == first)
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
                 order_id: str | None, rate: int | None) -> None:
        paid_back = min(self.doc["debt"], points)
        self.doc["debt"] -= paid_back
        expires = (add_months(earned_at, self.programme.expiry_months)
                   if self.programme.expiry_months else None)
        self.doc["lots"].append({
            "lot_id": key, "source": source, "order_id": order_id, "earned_at": earned_at,
            "expires_at": expires, "points": points, "remaining": points - paid_back,
            "paid_debt": paid_back, "reversed": 0, "expired": 0, "rate": rate})
        self.doc["lots"].sort(key=lambda lot: (aware(lot["earned_at"]), lot["lot_id"]))

    def _take(self, points: int, first_lot: str | None = None, allow_debt: bool = False,
              only_lot: str | None = None) -> dict[str, int]:
        """Take points from the lots, `first_lot` first, then oldest first. Answers what each
        lot gave; what the lots cannot cover becomes debt, or is refused."""
        lots = self.doc["lots"]
        if only_lot is not None:
            order = [lot for lot in lots if lot["lot_id"] == only_lot]
        else:
            order = sorted(lots, key=lambda lot: (lot["lot_id"] != first_lot,
                                                  aware(lot["earned_at"]), lot["lot_id"]))
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
        if held is not None and aware(held["as_of"]) > order.as_of:
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
        created = aware(order.created_at)
        return p.starts_at is None or (created is not None and created >= aware(p.starts_at))

    def _earn(self, order: OrderSnapshot, state: dict) -> None:
        tier = self.current_tier()
        basis = self.programme.earning_basis(order.total, order.shipping, order.tax)
        points = self.programme.points_for(basis, tier.rate, order.currency)
        earned_at = aware(order.paid_at or order.created_at or order.as_of)
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
        for lot in sorted(self.doc["lots"], key=lambda l: (aware(l["earned_at"]), l["lot_id"])):
            expires = aware(lot.get("expires_at"))
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
                         f"points earned {aware(lot['earned_at']).date().isoformat()} expired",
                         order_id=lot.get("order_id"))
        for lot in self.doc["credit_lots"]:
            expires = aware(lot.get("expires_at"))
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
                            if lot["remaining"] > 0 or aware(lot["earned_at"]) > since]

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

    def redeem(self, key: str, points: int, actor: str | None) -> tuple[Entry, Entry]:
        """Points into store credit: refused below the minimum, above the maximum, off the
        step that keeps credit in whole minor units, or beyond the balance."""
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
        taken = self._take(points)
        self._remember(key)
        debit = self._record(key, POINTS, "redeem", -points,
                             "redeemed for store credit", actor=actor, details={"taken": taken})
        credit = self.issue_credit(f"{key}:credit", p.credit_for(points, currency), "redemption",
                                   f"{points} points redeemed", actor, None)
        return debit, credit

    def issue_credit(self, key: str, amount: int, reason: str, note: str, actor: str | None,
                     expires_at: datetime | None) -> Entry:
        if reason not in CREDIT_REASONS:
            raise InvalidRequest(f"reason must be one of {', '.join(CREDIT_REASONS)}")
        if amount <= 0:
            raise InvalidRequest("amount must be positive (minor units)")
        if expires_at is not None and aware(expires_at) <= self.now:
            raise InvalidRequest("expires_at must be in the future")
        self.doc["credit_lots"].append({"credit_id": key, "reason": reason, "amount": amount,
                                        "remaining": amount, "issued_at": self.now,
                                        "expires_at": expires_at})
        self._remember(key)
        return self._record(key, CREDIT, "credit_issue", amount, note or reason, actor=actor,
                            expires_at=expires_at, details={"reason": reason})

    def use_credit(self, key: str, amount: int, reference: str, actor: str | None) -> Entry:
        """Spend store credit, the credit expiring soonest first (then the oldest)."""
        if amount <= 0:
            raise InvalidRequest("amount must be positive (minor units)")
        if amount > self.credit_balance:
            raise InsufficientBalance(f"{amount} asked, {self.credit_balance} of store credit available")
        far = datetime.max.replace(tzinfo=timezone.utc)
        left, used = amount, {}
        for lot in sorted(self.doc["credit_lots"],
                          key=lambda l: (aware(l.get("expires_at")) or far, aware(l["issued_at"]))):
            part = min(lot["remaining"], left)
            if part:
                lot["remaining"] -= part
                used[lot["credit_id"]] = part
                left -= part
            if not left:
                break
        self._remember(key)
        return self._record(key, CREDIT, "credit_use", -amount, reference or "store credit used",
                            actor=actor, details={"used": used})
