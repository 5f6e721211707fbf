"""A store's loyalty programme, stored as data: how points are earned, tiers, redemption, expiry.

Defaults are the product's: 10 points per 1.00 of the order's paid total excluding shipping and
tax, earned when an order is processing or completed; tiers by points earned in the last 12
months (Bronze 0-999 at 10 points per 1.00, Silver 1,000-4,999 at 12, Gold 5,000+ at 15);
100 points = 1.00 off at the shop; points expire 12 months after they were earned. Points are
redeemed for single-use coupons ("reward-..." codes) that expire after 90 days and give their
points back if they expire unused; store credit coupons expire after 365 days; customers are
warned 14 days before points expire.

Rounding (the one rule, everywhere): points are whole. An order earns
floor(basis in minor units x rate / minor units per currency unit) points, so a fraction of a
point is never awarded; a partial refund takes back floor(earned x refunded / total) points
in all (computed on the cumulative refund, so several partial refunds never take more than
one refund of their sum would), and a full refund or cancellation takes back exactly what the
order earned.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Mapping

from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields as mf, validate
from marshmallow import validates, validates_schema

from shared.coupons import check_prefix
from shared.errors import ValidationError
from shared.events.fields import UtcDateTime
from shared.money import minor_per_unit

ORDER_STATUSES = ("pending", "processing", "on-hold", "completed", "cancelled", "refunded",
                  "failed", "trash", "checkout-draft")
# Statuses that take back everything an order earned.
VOID_STATUSES = frozenset({"cancelled", "refunded", "failed", "trash"})

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Tier:
    name: str
    min_points: int
    max_points: int | None  # inclusive; None for the top tier
    rate: int  # points per 1.00 of the earning basis

    def holds(self, points: int) -> bool:
        return points >= self.min_points and (self.max_points is None or points <= self.max_points)


DEFAULT_TIERS = (Tier("bronze", 0, 999, 10), Tier("silver", 1000, 4999, 12),
                 Tier("gold", 5000, None, 15))


@dataclass(frozen=True)
class Programme:
    earning_statuses: tuple[str, ...] = ("processing", "completed")
    exclude_shipping: bool = True
    exclude_tax: bool = True
    guests_earn: bool = False  # guest checkouts have no account to hold points
    starts_at: datetime | None = None  # orders created before it earn nothing (None: all)
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    tier_window_days: int = 365
    points_per_unit: int = 100  # redemption: this many points are 1.00 of store credit
    min_redeem_points: int = 100
    max_redeem_points: int | None = 100_000
    expiry_months: int = 12  # 0: points never expire
    currency: str | None = None  # the store's currency, until an order names it
    coupon_prefix: str = "reward"  # reward coupon codes read "<prefix>-<10 random characters>"
    reward_expiry_days: int = 90  # a redemption's coupon expires this long after it was asked
    reward_individual_use: bool = False  # True: the coupon cannot be combined with others
    expired_rewards_return_points: bool = True  # a reward expiring unused gives its points back
    credit_expiry_days: int = 365  # store credit's coupon expires this long after issue
    expiry_warning_days: int = 14  # warn this long before points expire (0: no warning)

    def tier_for(self, points_in_window: int) -> Tier:
        for tier in self.tiers:
            if tier.holds(points_in_window):
                return tier
        return self.tiers[0]  # below every tier's floor (not possible once validated)

    def rank(self, tier_name: str | None) -> int:
        names = [t.name for t in self.tiers]
        return names.index(tier_name) if tier_name in names else -1

    def earning_basis(self, total: int, shipping: int, tax: int) -> int:
        """What an order's points are earned on, in minor units (never below zero)."""
        basis = total - (shipping if self.exclude_shipping else 0) - (tax if self.exclude_tax else 0)
        return max(0, basis)

    def points_for(self, basis: int, rate: int, currency: str) -> int:
        return (basis * rate) // minor_per_unit(currency)

    def credit_for(self, points: int, currency: str) -> int:
        """Store credit in minor units that `points` buy; callers check divisibility first."""
        return points * minor_per_unit(currency) // self.points_per_unit

    def redeem_step(self, currency: str) -> int:
        """Redemptions are multiples of this many points, so credit is whole minor units."""
        from math import gcd

        unit = minor_per_unit(currency)
        return self.points_per_unit // gcd(self.points_per_unit, unit)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["earning_statuses"] = list(self.earning_statuses)
        data["tiers"] = [asdict(t) for t in self.tiers]
        data["starts_at"] = self.starts_at.isoformat() if self.starts_at else None
        return data


DEFAULT_PROGRAMME = Programme()


class _TierSchema(Schema):
    class Meta:
        unknown = RAISE

    name = mf.String(required=True, validate=validate.Regexp(_SLUG, error="must be a lower-case slug"))
    min_points = mf.Integer(required=True, strict=True, validate=validate.Range(min=0))
    max_points = mf.Integer(load_default=None, allow_none=True, strict=True,
                            validate=validate.Range(min=0))
    rate = mf.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10_000))


class ProgrammeSchema(Schema):
    class Meta:
        unknown = RAISE

    earning_statuses = mf.List(mf.String(validate=validate.OneOf(ORDER_STATUSES)),
                               validate=validate.Length(min=1))
    exclude_shipping = mf.Boolean()
    exclude_tax = mf.Boolean()
    guests_earn = mf.Boolean()
    starts_at = UtcDateTime(allow_none=True)
    tiers = mf.List(mf.Nested(_TierSchema), validate=validate.Length(min=1, max=20))
    tier_window_days = mf.Integer(strict=True, validate=validate.Range(min=1, max=3660))
    points_per_unit = mf.Integer(strict=True, validate=validate.Range(min=1, max=1_000_000))
    min_redeem_points = mf.Integer(strict=True, validate=validate.Range(min=1))
    max_redeem_points = mf.Integer(allow_none=True, strict=True, validate=validate.Range(min=1))
    expiry_months = mf.Integer(strict=True, validate=validate.Range(min=0, max=120))
    currency = mf.String(allow_none=True, validate=validate.Regexp(r"^[A-Z]{3}\Z",
                                                                  error="must be an ISO-4217 code"))
    coupon_prefix = mf.String()
    reward_expiry_days = mf.Integer(strict=True, validate=validate.Range(min=1, max=3660))
    reward_individual_use = mf.Boolean()
    expired_rewards_return_points = mf.Boolean()
    credit_expiry_days = mf.Integer(strict=True, validate=validate.Range(min=1, max=3660))
    expiry_warning_days = mf.Integer(strict=True, validate=validate.Range(min=0, max=365))

    @validates("coupon_prefix")
    def _prefix(self, value: str, **_: Any) -> None:
        try:
            check_prefix(value)
        except ValueError as exc:
            raise MarshmallowError(str(exc)) from None

    @validates_schema
    def _consistent(self, data: dict, **_: Any) -> None:
        statuses = data.get("earning_statuses") or ()
        void = sorted(set(statuses) & VOID_STATUSES)
        if void:
            raise MarshmallowError(f"{void} take points back; they cannot earn",
                                   field_name="earning_statuses")
        low, high = data.get("min_redeem_points"), data.get("max_redeem_points")
        if low is not None and high is not None and high < low:
            raise MarshmallowError("must not be below min_redeem_points",
                                   field_name="max_redeem_points")
        tiers = data.get("tiers")
        if tiers:
            _check_tiers(tiers)


def _check_tiers(tiers: list[dict]) -> None:
    """Tiers cover 0 upwards without gaps or overlaps, in order, the last one open-ended."""
    names = [t["name"] for t in tiers]
    if len(set(names)) != len(names):
        raise MarshmallowError("tier names must be unique", field_name="tiers")
    if tiers[0]["min_points"] != 0:
        raise MarshmallowError("the first tier must start at 0 points", field_name="tiers.0.min_points")
    for i, tier in enumerate(tiers):
        last = i == len(tiers) - 1
        if last and tier["max_points"] is not None:
            raise MarshmallowError("the top tier has no maximum (null)", field_name=f"tiers.{i}.max_points")
        if not last:
            if tier["max_points"] is None:
                raise MarshmallowError("only the top tier may be open-ended",
                                       field_name=f"tiers.{i}.max_points")
            if tier["max_points"] < tier["min_points"]:
                raise MarshmallowError("must not be below min_points", field_name=f"tiers.{i}.max_points")
            following = tiers[i + 1]["min_points"]
            if following <= tier["max_points"]:
                raise MarshmallowError(f"overlaps tier {tier['name']} (which ends at "
                                       f"{tier['max_points']})", field_name=f"tiers.{i + 1}.min_points")
            if following != tier["max_points"] + 1:
                raise MarshmallowError(f"leaves a gap after tier {tier['name']} (which ends at "
                                       f"{tier['max_points']})", field_name=f"tiers.{i + 1}.min_points")


def _flatten(messages: Any, prefix: str = "") -> dict[str, list]:
    flat: dict[str, list] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "programme"
            flat.update(_flatten(value, name))
    else:
        flat[prefix or "programme"] = messages if isinstance(messages, list) else [messages]
    return flat


def load_programme(data: Mapping[str, Any] | None, base: Programme = DEFAULT_PROGRAMME) -> Programme:
    """A programme from stored or submitted data; absent keys keep `base`'s values. Refused
    with every failing field named (`tiers.1.min_points`)."""
    if data is not None and not isinstance(data, Mapping):
        raise ValidationError("programme must be an object", {"fields": {"programme": ["not an object"]}})
    raw = {k: v for k, v in dict(data or {}).items() if k not in ("store_id", "_id", "updated_at")}
    if isinstance(raw.get("starts_at"), datetime):
        raw["starts_at"] = raw["starts_at"].isoformat()
    try:
        loaded = ProgrammeSchema().load(raw)
    except MarshmallowError as exc:
        flat = _flatten(exc.messages)
        summary = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in sorted(flat.items()))
        raise ValidationError(f"invalid programme: {summary}", {"fields": flat}) from None
    values = {f.name: getattr(base, f.name) for f in fields(Programme)}
    values.update(loaded)
    values["earning_statuses"] = tuple(values["earning_statuses"])
    values["tiers"] = tuple(t if isinstance(t, Tier) else Tier(**t) for t in values["tiers"])
    return Programme(**values)
