"""Per-customer statistics, segments and RFM scores for one store. Pure functions.

Everything here works on plain values (a customer's orders, a store's thresholds, the store's
cut points) so every boundary is unit-tested without a broker or a database; store-wide figures
(the VIP cutoff, the RFM cut points) are computed by the helpers at the bottom and handed in.

Money is an integer in minor units. Times are timezone-aware UTC; a naive `now` is refused,
since it is almost always a local-time mistake. Day counts are whole days, floored: 30 days and 23 hours is
30 days. A store sells in one currency; amounts are summed as they come.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

# Statuses that never became a sale: they are not orders for any statistic.
NOT_COUNTED_STATUSES = frozenset({"cancelled", "failed", "trash", "checkout-draft"})

PROSPECT = "prospect"  # no counted order (yet)
NEW = "new"
REGULAR = "regular"
VIP = "vip"
ONE_TIME = "one_time"
AT_RISK = "at_risk"
SEGMENTS = (PROSPECT, NEW, REGULAR, VIP, ONE_TIME, AT_RISK)

_DAY = timedelta(days=1)


def _require_aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return now


def _whole_days(since: datetime, now: datetime) -> int:
    """Whole days from `since` to `now`, floored; a time in the future (clock skew) is 0."""
    return max(0, (now - since) // _DAY)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class OrderFact:
    """One order as segmentation needs it.

    An order counts unless it never became a sale (cancelled, failed, trashed, a checkout
    draft). It contributes its total net of refunds, never below zero. A fully refunded order
    (status "refunded") still counts as an order - the customer did buy, and it moves their
    dates and order count - but contributes net 0, whatever refund amount has arrived so far.
    """

    order_id: str
    status: str
    total: int
    refunded: int
    currency: str
    date_created: datetime

    def __post_init__(self) -> None:
        for name in ("total", "refunded"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be whole minor units, got {getattr(self, name)!r}")
        if not isinstance(self.date_created, datetime):
            raise ValueError(f"date_created must be a datetime, got {self.date_created!r}")

    @property
    def counts(self) -> bool:
        return self.status not in NOT_COUNTED_STATUSES

    @property
    def net(self) -> int:
        if not self.counts or self.status == "refunded":
            return 0
        return max(0, self.total - self.refunded)


class ThresholdError(ValueError):
    """A store's threshold setting that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field


@dataclass(frozen=True)
class Thresholds:
    """A store's segment thresholds (defaults as the product describes them).

    new_max_orders is exclusive ("fewer than 3 orders"); vip_min_spent is exclusive ("over
    5,000.00"), None turns it off; vip_top_share 0 turns the top-share rule off.
    """

    new_days: int = 30
    new_max_orders: int = 3
    one_time_days: int = 30
    vip_min_spent: int | None = 500_000
    vip_top_share: float = 0.10
    at_risk_days: int = 90
    at_risk_min_orders: int = 2
    at_risk_min_spent: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "vip_top_share":
                if not isinstance(value, (int, float)) or isinstance(value, bool) \
                        or not math.isfinite(value):
                    raise ThresholdError(f.name, f"must be a number between 0 and 1, got {value!r}")
                if not 0 <= value <= 1:
                    raise ThresholdError(f.name, f"must be between 0 and 1, got {value!r}")
                object.__setattr__(self, f.name, float(value))
            elif f.name == "vip_min_spent" and value is None:
                continue
            elif not _is_int(value):
                raise ThresholdError(f.name, f"must be a whole number, got {value!r}")
            elif value < 0:
                raise ThresholdError(f.name, f"must not be negative, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Thresholds:
        """A store's settings; absent keys keep their defaults, unknown keys are refused."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        for name in sorted(data):
            if name not in known:
                raise ThresholdError(name, "is not a threshold setting")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Stats:
    """What a customer's counted orders add up to. Money in minor units."""

    orders_count: int = 0
    total_spent: int = 0
    average_order_value: int = 0  # total_spent / orders_count, rounded half up; 0 with no orders
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    avg_days_between_orders: float | None = None  # None with fewer than 2 orders
    currency: str | None = None  # of the latest counted order
    largest_order: int | None = None  # the largest counted order, net of refunds; None without

    def to_dict(self) -> dict:
        """JSON-ready: times as ISO-8601 strings. Written out by hand, not with asdict (which
        deep-copies), since a store recompute calls it once per customer."""
        first, last = self.first_order_at, self.last_order_at
        return {"orders_count": self.orders_count, "total_spent": self.total_spent,
                "average_order_value": self.average_order_value,
                "first_order_at": first.isoformat() if first is not None else None,
                "last_order_at": last.isoformat() if last is not None else None,
                "avg_days_between_orders": self.avg_days_between_orders,
                "currency": self.currency, "largest_order": self.largest_order}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """Read back what to_dict wrote."""
        values = {f.name: data.get(f.name, f.default) for f in fields(cls)}
        for name in ("first_order_at", "last_order_at"):
            value = values[name]
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            values[name] = value
        return cls(**values)


def compute_stats(orders: Iterable[OrderFact]) -> Stats:
    """A customer's stats from their orders (one fact per order); uncounted orders are ignored
    entirely, for dates as much as for money."""
    counted = sorted((o for o in orders if o.counts), key=lambda o: (o.date_created, o.order_id))
    if not counted:
        return Stats()
    n = len(counted)
    total = sum(o.net for o in counted)
    first, last = counted[0].date_created, counted[-1].date_created
    return Stats(
        orders_count=n,
        total_spent=total,
        average_order_value=(2 * total + n) // (2 * n),  # half up, in integers (total >= 0)
        first_order_at=first,
        last_order_at=last,
        avg_days_between_orders=(last - first) / _DAY / (n - 1) if n > 1 else None,
        currency=counted[-1].currency,
        largest_order=max(o.net for o in counted),
    )


def days_since_last_order(stats: Stats, now: datetime) -> int | None:
    """Whole days (floored) since the last counted order; None without one."""
    if stats.last_order_at is None:
        return None
    return _whole_days(stats.last_order_at, _require_aware(now))


def email_domain(email: str | None) -> str | None:
    """The part after the last '@', lower-cased; None when there is none."""
    if not isinstance(email, str) or "@" not in email:
        return None
    domain = email.strip().lower().rsplit("@", 1)[1].strip()
    return domain or None


# -- segments ----------------------------------------------------------------------------------

def is_vip(stats: Stats, thresholds: Thresholds, vip_cutoff: int | None) -> bool:
    """Spent over the store's threshold, or at least the store's top-share cutoff."""
    spent = stats.total_spent
    if thresholds.vip_min_spent is not None and spent > thresholds.vip_min_spent:
        return True
    return vip_cutoff is not None and spent > 0 and spent >= vip_cutoff


def classify(stats: Stats, now: datetime, thresholds: Thresholds = DEFAULT_THRESHOLDS,
             vip_cutoff: int | None = None) -> str:
    """The customer's one segment. The first that applies wins:

    1. prospect  no counted order;
    2. at_risk   at least at_risk_min_orders (2) orders, the last one more than at_risk_days
                 (90) whole days ago, and historically valuable: spent at least
                 at_risk_min_spent, or a VIP. It beats VIP on purpose: a VIP who stopped
                 ordering is the at-risk customer a shop most wants to win back;
    3. vip       spent over vip_min_spent, or at least the store's top-share cutoff;
    4. new       first order at most new_days (30) whole days ago, and fewer than
                 new_max_orders (3) orders;
    5. one_time  exactly one order, more than one_time_days (30) whole days ago;
    6. regular   everyone else.

    Day counts are whole days, floored, as days_since_last_order shows them: 30 days and 23
    hours after the first order is still new, 31 days is one-time; 90 days after the last
    order is not yet at risk, 91 is.
    """
    now = _require_aware(now)
    if stats.orders_count == 0 or stats.first_order_at is None or stats.last_order_at is None:
        return PROSPECT
    vip = is_vip(stats, thresholds, vip_cutoff)
    since_first = _whole_days(stats.first_order_at, now)
    since_last = _whole_days(stats.last_order_at, now)
    if (stats.orders_count >= thresholds.at_risk_min_orders
            and since_last > thresholds.at_risk_days
            and (stats.total_spent >= thresholds.at_risk_min_spent or vip)):
        return AT_RISK
    if vip:
        return VIP
    if since_first <= thresholds.new_days and stats.orders_count < thresholds.new_max_orders:
        return NEW
    if stats.orders_count == 1 and since_first > thresholds.one_time_days:
        return ONE_TIME
    return REGULAR


def vip_cutoff(spends: Sequence[int], top_share: float = 0.10) -> int | None:
    """The smallest spend inside the store's top `top_share` by spend, or None.

    The share is of the store's paying customers (spend > 0): a store with many accounts that
    never bought would otherwise make every buyer a VIP. The top share holds floor(n * share)
    customers, but at least one; customers whose spend equals the cutoff are all inside it.
    None when no one has spent or top_share is 0 (the rule is off).
    """
    paying = sorted((s for s in spends if s > 0), reverse=True)
    if not paying or top_share <= 0:
        return None
    # Decimal(str()) so that 0.1 * 30 is 3, not 3.0000000000000004 or 2.9999999999999996.
    size = max(1, math.floor(Decimal(str(top_share)) * len(paying)))
    return paying[min(size, len(paying)) - 1]


# -- RFM ---------------------------------------------------------------------------------------

RFM_AXES = ("recency_days", "frequency", "monetary")


def quintile_cutoffs(values: Sequence[float]) -> list[float]:
    """The store's four cut points on one axis; [] for no values.

    Quintiles by rank: with the n values sorted ascending, cut point i (1..4) is the value at
    rank ceil(i * n / 5), so about a fifth of the store lies at or below each successive cut.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return []
    return [float(ordered[math.ceil(i * n / 5) - 1]) for i in range(1, 5)]


def _score(value: float, cuts: Sequence[float]) -> int:
    """1 plus the number of cut points strictly below the value: 1-5."""
    return 1 + sum(1 for cut in cuts if value > cut)


def rfm_scores(stats: Stats, now: datetime, cutoffs: Mapping[str, Sequence[float]]
               ) -> dict[str, int] | None:
    """Recency, frequency and monetary scores, 1-5 each, against the store's cut points.

    Frequency (orders_count) and monetary (total_spent) score 1 plus the number of cut points
    their value is strictly above. Recency is scored on days since the last order, reversed
    (6 minus that score), so the most recent fifth scores 5. Equal values always score the
    same; a block of equal values scores where the block starts on its axis, so a store's
    many one-order customers all score frequency 1 and everyone who ordered today scores
    recency 5. Score against cut points computed at the same `now` (store_rfm_cutoffs).

    None for a customer with no orders, and while the store has no cut points yet.
    """
    if stats.orders_count == 0 or stats.last_order_at is None:
        return None
    for axis in RFM_AXES:
        cuts = cutoffs.get(axis)
        if cuts is None or len(cuts) not in (0, 4):
            raise ValueError(f"cutoffs[{axis!r}] must hold 4 cut points, got {cuts!r}")
        if not cuts:
            return None
    days = days_since_last_order(stats, now)
    assert days is not None
    return {
        "recency": 6 - _score(days, cutoffs["recency_days"]),
        "frequency": _score(stats.orders_count, cutoffs["frequency"]),
        "monetary": _score(stats.total_spent, cutoffs["monetary"]),
    }


def store_rfm_cutoffs(all_stats: Iterable[Stats], now: datetime) -> dict[str, list[float]]:
    """The store's cut points for each RFM axis, over its customers who have ordered."""
    now = _require_aware(now)
    buyers = [s for s in all_stats if s.orders_count > 0 and s.last_order_at is not None]
    return {
        "recency_days": quintile_cutoffs([_whole_days(s.last_order_at, now) for s in buyers]),
        "frequency": quintile_cutoffs([s.orders_count for s in buyers]),
        "monetary": quintile_cutoffs([s.total_spent for s in buyers]),
    }
