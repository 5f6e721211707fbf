"""WooCommerce REST/webhook JSON turned into the shapes customer_sync keeps. Pure functions.

Money becomes integer minor units (via Decimal, never float); times become aware UTC
datetimes read from the `*_gmt` fields (UTC without an offset); emails are compared
lower-cased and trimmed, and an email that is not exactly one valid address (two addresses
separated by a comma, a CR/LF) is kept as none, the customer flagged `email_unusable`.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, DecimalException
from typing import Any

from shared import money
from shared.email_addresses import single_address
from shared.times import parse_utc

ADDRESS_FIELDS = ("first_name", "last_name", "company", "address_1", "address_2", "city",
                  "state", "postcode", "country", "email", "phone")


# The largest integer MongoDB stores (8 bytes, signed): a larger one cannot be written.
MAX_INT = 2 ** 63 - 1


class NormalisationError(ValueError):
    """A payload that cannot be read as WooCommerce data; the message names the field, and
    `field` holds its path (`total`, `line_items[2].quantity`) for answers that must name it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def to_minor(value: Any, currency: str, field_name: str = "amount",
             non_negative: bool = False) -> int:
    """'12.34' EUR -> 1234. Empty or missing means zero; half-up rounding past the minor unit.
    `non_negative` for the amounts WooCommerce never sends below zero (an order's totals):
    a negative one is no real order, and would be summed into a customer's spend."""
    if value is None or value == "":
        return 0
    if isinstance(value, (bool, list, dict)):
        raise NormalisationError(f"{field_name} is not a decimal amount: {_short(value)}",
                                 field_name)
    try:
        amount = Decimal(str(value).strip())
        if not amount.is_finite():
            raise NormalisationError(f"{field_name} is not a finite amount: {_short(value)}",
                                     field_name)
        scaled = money.to_minor(amount, currency)
    except DecimalException:  # not a number, or too large to quantize ("1e999999")
        raise NormalisationError(f"{field_name} is not a decimal amount: {_short(value)}",
                                 field_name) from None
    if non_negative and scaled < 0:
        raise NormalisationError(f"{field_name} is negative: {_short(value)}", field_name)
    return _bounded(scaled, field_name)


def _bounded(value: int, field_name: str) -> int:
    """An integer MongoDB can store; a larger one is no real amount or id (fuzzing)."""
    if not -MAX_INT <= value <= MAX_INT:
        raise NormalisationError(f"{field_name} is out of range: {_short(value)}", field_name)
    return value


def _short(value: Any) -> str:
    """A value for an error message: bounded, however large the sender made it."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge number"
    return text if len(text) <= 80 else text[:77] + "..."


def _list(value: Any, field_name: str) -> list:
    """A list field: missing or empty means none; anything else but a list is an error."""
    if value in (None, "", {}):
        return []
    if not isinstance(value, list):
        raise NormalisationError(f"{field_name} is not a list", field_name)
    return value


def parse_gmt(value: Any, field_name: str = "date") -> datetime | None:
    """WooCommerce `*_gmt` strings are UTC without an offset; an explicit offset is honoured."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise NormalisationError(f"{field_name} is not a date string: {_short(value)}",
                                 field_name)
    try:
        return parse_utc(value)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved past the range
        raise NormalisationError(f"{field_name} is not an ISO-8601 date: {_short(value)}",
                                 field_name) from None


def email_key(value: Any) -> str | None:
    """How customers are matched by email: trimmed and lower-cased; empty means none."""
    if not isinstance(value, str):
        return None
    key = value.strip().lower()
    return key or None


def usable_email(value: Any) -> str:
    """The one address the shop sent, or "" when it is not exactly one valid address: such
    a value must never reach a To header (see shared.email_addresses)."""
    return single_address(_text(value)) or ""


def address(raw: Any) -> dict:
    raw = raw if isinstance(raw, dict) else {}
    found = {name: _text(raw.get(name)) for name in ADDRESS_FIELDS}
    found["email"] = usable_email(found["email"])
    return found


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _int(value: Any, field_name: str, default: int | None = None) -> int:
    if value in (None, "") and default is not None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float infinity
        raise NormalisationError(f"{field_name} is not a whole number: {_short(value)}",
                                 field_name) from None
    return _bounded(number, field_name)


def content_hash(content: dict) -> str:
    """A fingerprint of normalised content: same state, same hash, whatever the delivery."""
    canonical = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Longer integer literals are no id or amount of any shop; Python refuses to parse more than
# 4,300 digits at all, which would make a body with one look like malformed JSON.
_LONGEST_INTEGER_LITERAL = 100


def _parse_int(literal: str) -> int | float:
    if len(literal) > _LONGEST_INTEGER_LITERAL:
        return float("-inf") if literal.startswith("-") else float("inf")
    return int(literal)


def parse_body(text: str) -> Any:
    """A webhook body's JSON, as the door and the workers both read it: an integer too long
    for any real field becomes infinity, so the field it sits in is what refuses it."""
    return json.loads(text, parse_int=_parse_int)


def check_delivery(resource: str, action: str, payload: Any) -> None:
    """Refuse now, naming the field, what applying the delivery would refuse later: the
    door answers 400 instead of 200 for a body it would never apply (WooCommerce does not
    retry, so a later failure is a silent loss). A deleted body carries only its id."""
    resource_id(payload)
    if action == "deleted":
        return
    if resource == "customer":
        normalise_customer(payload)
    elif resource == "order":
        normalise_order(payload)


def resource_id(payload: Any) -> int:
    """The resource id every webhook body carries (deleted ones carry nothing else)."""
    if not isinstance(payload, dict):
        raise NormalisationError("the body must be a JSON object", "body")
    rid = payload.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 < rid <= MAX_INT:
        raise NormalisationError(f"id must be a positive whole number, got {_short(rid)}", "id")
    return rid


@dataclass(frozen=True)
class CustomerSnapshot:
    """A registered customer as the shop sent it."""

    woo_customer_id: int
    email: str
    first_name: str
    last_name: str
    username: str
    role: str
    billing: dict
    shipping: dict
    date_created: datetime | None
    date_modified: datetime | None
    is_paying_customer: bool
    content_hash: str
    birthday: str | None = None  # "MM-DD" or "YYYY-MM-DD", from a birthday plugin's meta data
    email_unusable: bool = False  # the shop sent an email that is not one valid address

    @property
    def email_key(self) -> str | None:
        return email_key(self.email)

    def contact(self) -> dict:
        """The fields customer events carry and change detection compares."""
        return {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.billing.get("phone", ""),
            "company": self.billing.get("company", ""),
            "billing": self.billing,
            "shipping": self.shipping,
            "birthday": self.birthday,
        }


# Meta keys under which common WooCommerce birthday plugins keep the customer's birthday.
BIRTHDAY_META_KEYS = ("birthday", "billing_birthday", "date_of_birth", "billing_birth_date",
                      "_birthday", "birth_date")
_BIRTHDAY = re.compile(r"^(?:(\d{4})-)?(\d{1,2})-(\d{1,2})$")


def birthday_from(meta: Any) -> str | None:
    """The customer's birthday from their meta data, as YYYY-MM-DD or MM-DD; None when absent
    or not a real date (it is optional data: a bad value is dropped, not an error)."""
    if not isinstance(meta, list):
        return None
    for item in meta:
        if not isinstance(item, dict) or item.get("key") not in BIRTHDAY_META_KEYS:
            continue
        value = str(item.get("value") or "").strip().replace("/", "-")
        match = _BIRTHDAY.match(value)
        if not match:
            continue
        year, month, day = match.group(1), int(match.group(2)), int(match.group(3))
        try:
            datetime(int(year) if year else 2000, month, day)  # 2000: a leap year
        except ValueError:
            continue
        return f"{year}-{month:02d}-{day:02d}" if year else f"{month:02d}-{day:02d}"
    return None


def normalise_customer(payload: Any) -> CustomerSnapshot:
    woo_id = resource_id(payload)
    billing = address(payload.get("billing"))
    shipping = address(payload.get("shipping"))
    content = {
        "email": _text(payload.get("email")),
        "first_name": _text(payload.get("first_name")),
        "last_name": _text(payload.get("last_name")),
        "username": _text(payload.get("username")),
        "role": _text(payload.get("role")),
        "billing": billing,
        "shipping": shipping,
        "is_paying_customer": bool(payload.get("is_paying_customer")),
    }
    birthday = birthday_from(payload.get("meta_data"))
    if birthday:  # only when there is one, so the content hash of everyone else is unchanged
        content["birthday"] = birthday
    if content["email"] and not usable_email(content["email"]):
        content["email"] = ""  # stored as none, and flagged (likewise only when so)
        content["email_unusable"] = True
    return CustomerSnapshot(
        woo_customer_id=woo_id,
        date_created=parse_gmt(payload.get("date_created_gmt"), "date_created_gmt"),
        date_modified=parse_gmt(payload.get("date_modified_gmt"), "date_modified_gmt"),
        content_hash=content_hash(content),
        **content,
    )


@dataclass(frozen=True)
class OrderSnapshot:
    """An order as the shop sent it, money in minor units."""

    order_id: str
    number: str
    status: str
    currency: str
    woo_customer_id: int | None  # None for a guest checkout (WooCommerce's 0)
    billing: dict
    shipping: dict
    total: int
    subtotal: int
    discount_total: int
    shipping_total: int
    tax_total: int
    total_refunded: int
    refunds: list[dict]
    line_items: list[dict]
    coupon_codes: list[str]
    payment_method: str
    date_created: datetime | None
    date_modified: datetime | None
    date_paid: datetime | None
    date_completed: datetime | None
    anonymized: bool
    content_hash: str = field(compare=False)

    @property
    def billing_email_key(self) -> str | None:
        return email_key(self.billing.get("email"))


def order_content_hash(snap: OrderSnapshot) -> str:
    """The content hash `normalise_order` gives, recomputed from a snapshot's fields, so a
    snapshot changed after reading (anonymised) compares equal to the same change read again."""
    content = {name: getattr(snap, name) for name in snap.__dataclass_fields__
               if name not in ("date_modified", "content_hash")}
    return content_hash(content)


KNOWN_STATUSES = {"pending", "processing", "on-hold", "completed", "cancelled", "refunded",
                  "failed", "trash", "checkout-draft"}


def normalise_order(payload: Any) -> OrderSnapshot:
    woo_id = resource_id(payload)
    currency = _text(payload.get("currency")).upper()
    if len(currency) != 3 or not currency.isalpha():
        raise NormalisationError(
            f"currency is not an ISO-4217 code: {_short(payload.get('currency'))}", "currency")
    status = _text(payload.get("status"))
    if status not in KNOWN_STATUSES:
        raise NormalisationError(f"status is not a WooCommerce order status: {_short(status)}",
                                 "status")
    customer = _int(payload.get("customer_id"), "customer_id", default=0)
    line_items = []
    for index, item in enumerate(_list(payload.get("line_items"), "line_items")):
        if not isinstance(item, dict):
            raise NormalisationError(f"line_items[{index}] is not an object", f"line_items[{index}]")
        line_items.append({
            "line_id": _int(item.get("id"), f"line_items[{index}].id", default=0),
            "product_id": _int(item.get("product_id"), f"line_items[{index}].product_id", default=0),
            "variation_id": _int(item.get("variation_id"), f"line_items[{index}].variation_id",
                                 default=0),
            "name": _text(item.get("name")),
            "sku": _text(item.get("sku")),
            "quantity": _int(item.get("quantity"), f"line_items[{index}].quantity", default=0),
            "subtotal": to_minor(item.get("subtotal"), currency, f"line_items[{index}].subtotal",
                                 non_negative=True),
            "total": to_minor(item.get("total"), currency, f"line_items[{index}].total",
                              non_negative=True),
        })
    refunds = []
    for index, refund in enumerate(_list(payload.get("refunds"), "refunds")):
        if not isinstance(refund, dict):
            raise NormalisationError(f"refunds[{index}] is not an object", f"refunds[{index}]")
        refunds.append({
            "refund_id": _int(refund.get("id"), f"refunds[{index}].id", default=0),
            "reason": _text(refund.get("reason")),
            # WooCommerce lists refund totals as negative strings ("-10.00").
            "amount": abs(to_minor(refund.get("total"), currency, f"refunds[{index}].total")),
        })
    meta = payload.get("meta_data")
    meta = meta if isinstance(meta, list) else []  # optional data: anything else means none
    anonymized = any(
        isinstance(m, dict) and m.get("key") == "_anonymized" and m.get("value") == "yes"
        for m in meta
    )
    content = {
        "order_id": str(woo_id),
        "number": _text(payload.get("number")) or str(woo_id),
        "status": status,
        "currency": currency,
        "woo_customer_id": customer or None,
        "billing": address(payload.get("billing")),
        "shipping": address(payload.get("shipping")),
        "total": to_minor(payload.get("total"), currency, "total", non_negative=True),
        "subtotal": _bounded(sum(item["subtotal"] for item in line_items), "line_items"),
        "discount_total": to_minor(payload.get("discount_total"), currency, "discount_total", non_negative=True),
        "shipping_total": to_minor(payload.get("shipping_total"), currency, "shipping_total", non_negative=True),
        "tax_total": to_minor(payload.get("total_tax"), currency, "total_tax", non_negative=True),
        "total_refunded": _bounded(sum(r["amount"] for r in refunds), "refunds"),
        "refunds": refunds,
        "line_items": line_items,
        "coupon_codes": [
            _text(c.get("code")) for c in _list(payload.get("coupon_lines"), "coupon_lines")
            if isinstance(c, dict)
        ],
        "payment_method": _text(payload.get("payment_method")),
        "date_created": parse_gmt(payload.get("date_created_gmt"), "date_created_gmt"),
        "date_paid": parse_gmt(payload.get("date_paid_gmt"), "date_paid_gmt"),
        "date_completed": parse_gmt(payload.get("date_completed_gmt"), "date_completed_gmt"),
        "anonymized": anonymized,
    }
    return OrderSnapshot(
        date_modified=parse_gmt(payload.get("date_modified_gmt"), "date_modified_gmt"),
        content_hash=content_hash(content),
        **content,
    )
