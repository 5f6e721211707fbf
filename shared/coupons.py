"""Coupons this system asks the shop to create: their codes and the form they travel in.

loyalty (rewards, store credit) and notifications (a coupon attached to a message) decide what
a coupon is; customer_sync, which holds each shop's REST credentials, writes it. `CouponSpec`
is what crosses RPC between them: money in minor units like every amount here, times in
ISO-8601 with their offset, and `meta` naming whose coupon it is, so a retried creation finds
the coupon an earlier try made instead of making a second one.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from shared.times import RefusedTime, check_aware

# Lower-case (WooCommerce lower-cases codes) without the characters people misread when they
# type a code from an email: 0/o, 1/l/i.
CODE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
CODE_RANDOM_LENGTH = 10  # 31^10 ≈ 8e14 codes: not guessable at a checkout's pace
PREFIX = re.compile(r"[a-z2-9]{1,12}")
DISCOUNT_TYPES = ("fixed_cart", "percent")
_MAX_META = 10
_MAX_TEXT = 200
_MAX_MINOR = 10 ** 12


def new_coupon_code(prefix: str, choose: Callable[[str], str] = secrets.choice) -> str:
    """`<prefix>-` and ten characters from `CODE_ALPHABET`, drawn by `choose` (a CSPRNG;
    tests pass a seeded one)."""
    check_prefix(prefix)
    return f"{prefix}-" + "".join(choose(CODE_ALPHABET) for _ in range(CODE_RANDOM_LENGTH))


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix):
        raise ValueError("coupon prefix must be 1-12 lower-case letters or digits 2-9 "
                         "(no 0, 1, i, l or o, which read like each other)")
    return prefix


@dataclass(frozen=True)
class CouponSpec:
    """One coupon to create. `amount` is minor units of `currency` for fixed_cart, or a whole
    percentage (1-100) for percent; `minimum_spend` is minor units or None; `email` restricts
    the coupon to one customer's email (WooCommerce checks it at checkout)."""

    code: str
    discount_type: str
    amount: int
    currency: str
    expires_at: datetime
    email: str | None = None
    individual_use: bool = False
    minimum_spend: int | None = None
    usage_limit: int = 1
    description: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check("code", isinstance(self.code, str)
               and re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", self.code) is not None,
               "must be 1-64 lower-case letters, digits, '-' or '_'")
        _check("discount_type", self.discount_type in DISCOUNT_TYPES,
               f"must be one of {', '.join(DISCOUNT_TYPES)}")
        _check("currency", isinstance(self.currency, str)
               and re.fullmatch(r"[A-Z]{3}", self.currency) is not None, "must be an ISO-4217 code")
        top = 100 if self.discount_type == "percent" else _MAX_MINOR
        _check("amount", _whole(self.amount) and 0 < self.amount <= top,
               f"must be a whole number from 1 to {top}")
        _check("minimum_spend", self.minimum_spend is None
               or (_whole(self.minimum_spend) and 0 <= self.minimum_spend <= _MAX_MINOR),
               "must be a whole number of minor units, or null")
        _check("usage_limit", _whole(self.usage_limit) and 1 <= self.usage_limit <= 1000,
               "must be a whole number from 1 to 1000")
        _check("expires_at", isinstance(self.expires_at, datetime),
               "must be a time with its UTC offset")
        _check_time("expires_at", self.expires_at)
        _check("email", self.email is None or (isinstance(self.email, str)
               and re.fullmatch(r"[^@\s*A-Z]+@[^@\s*A-Z]+\.[^@\s*A-Z]+", self.email) is not None
               and len(self.email) <= 254), "must be one lower-cased email, or null")
        _check("individual_use", isinstance(self.individual_use, bool), "must be true or false")
        _check("description", isinstance(self.description, str) and len(self.description) <= 500,
               "must be text of at most 500 characters")
        _check("meta", isinstance(self.meta, Mapping) and 0 < len(self.meta) <= _MAX_META and all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= _MAX_TEXT
            and len(v) <= _MAX_TEXT for k, v in self.meta.items()),
            f"must name whose coupon it is: 1-{_MAX_META} text keys and values")

    def to_wire(self) -> dict:
        """JSON-ready, for an RPC call."""
        return {"code": self.code, "discount_type": self.discount_type, "amount": self.amount,
                "currency": self.currency,
                "expires_at": self.expires_at.astimezone(timezone.utc).isoformat(),
                "email": self.email, "individual_use": self.individual_use,
                "minimum_spend": self.minimum_spend, "usage_limit": self.usage_limit,
                "description": self.description, "meta": dict(self.meta)}

    @classmethod
    def from_wire(cls, data: Any) -> "CouponSpec":
        """Raises ValueError naming the field (its first word) when `data` is not a coupon."""
        if not isinstance(data, Mapping):
            raise ValueError("coupon must be an object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{unknown[0]} is not a coupon field")
        values = dict(data)
        if isinstance(values.get("expires_at"), str):
            values["expires_at"] = _check_time("expires_at", values["expires_at"])
        try:
            return cls(**values)
        except TypeError:
            missing = [n for n in ("code", "discount_type", "amount", "currency", "expires_at")
                       if n not in values]
            raise ValueError(f"{(missing or ['coupon'])[0]} is required") from None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_time(name: str, value: str | datetime) -> datetime:
    """`value` as check_aware takes it, or ValueError naming the field."""
    try:
        return check_aware(value)
    except RefusedTime as refused:
        raise ValueError(f"{name} {refused}") from None


def _check(name: str, ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"{name} {message}")
