"""What is left of a person's data after erasure, and how WooCommerce's own eraser looks.
Pure functions over snapshots, stored documents and raw WooCommerce JSON.

Orders stay for the shop's accounts: ids, status, dates, money, line items (products), coupon
codes and the payment method are kept; names, email, phone, company, street, city, postcode,
state, refund reasons and free text are removed. The billing and shipping *country* is kept:
it alone does not single out a person, and VAT is accounted per country.
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.customer_sync.core.normalise import (
    ADDRESS_FIELDS,
    CustomerSnapshot,
    OrderSnapshot,
    email_key,
    order_content_hash,
)

# Address fields an anonymised order keeps (see the module doc).
KEPT_ADDRESS_FIELDS = frozenset({"country"})

# What WordPress's wp_privacy_anonymize_data() writes instead of personal data.
_PLACEHOLDER_TEXTS = frozenset({"[deleted]", "this content was deleted by the author."})
_PLACEHOLDER_EMAIL = re.compile(r"@site\.invalid$", re.IGNORECASE)

# What an erased customer document keeps: ids, status, dates and counts, nothing about the person.
KEPT_CUSTOMER_FIELDS = frozenset({
    "_id", "store_id", "status", "registered", "version", "date_created", "created_at",
    "erased_at", "erased_by", "erasure_request_ids", "shop_erased_at", "merged_into",
    "orders_count",
})


# -- WooCommerce's placeholders ------------------------------------------------------------
def is_placeholder(value: Any) -> bool:
    """Empty, or what WordPress's eraser leaves behind ("[deleted]", "deleted@site.invalid")."""
    if value is None:
        return True
    text = str(value).strip()
    return (not text or text.lower() in _PLACEHOLDER_TEXTS
            or bool(_PLACEHOLDER_EMAIL.search(text)))


def real_email_key(value: Any) -> str | None:
    """The email as customers are matched by it, or None for a blank or a placeholder."""
    return None if is_placeholder(value) else email_key(value)


def is_blank_customer(snap: CustomerSnapshot) -> bool:
    """A customer as the shop's privacy eraser leaves it: no email and no names, neither on
    the account nor on its billing address (WooCommerce cannot save a live customer so)."""
    return all(is_placeholder(value) for value in (
        snap.email, snap.first_name, snap.last_name, snap.billing.get("email"),
        snap.billing.get("first_name"), snap.billing.get("last_name")))


def is_shop_erasure(existing: dict | None, snap: CustomerSnapshot) -> bool:
    """Whether a customer state blanks a live person we hold: the shop erased them (it is
    not a new person without an email)."""
    if existing is None or existing.get("status") != "active" or not is_blank_customer(snap):
        return False
    return any(not is_placeholder(existing.get(name))
               for name in ("email", "first_name", "last_name", "phone"))


# -- anonymised orders ----------------------------------------------------------------------
def anonymised_address(address: Any) -> dict:
    """The address with only the fields an anonymised order keeps; anything but an object
    (a body the door let through because addresses are optional) is no address."""
    address = address if isinstance(address, dict) else {}
    return {name: (str(address.get(name) or "") if name in KEPT_ADDRESS_FIELDS else "")
            for name in ADDRESS_FIELDS}


def anonymise_order_snapshot(snap: OrderSnapshot) -> OrderSnapshot:
    """The order without anything about its buyer, hashed again so the same anonymised state
    read twice compares SAME (and an older one STALE)."""
    anonymised = replace(
        snap,
        billing=anonymised_address(snap.billing),
        shipping=anonymised_address(snap.shipping),
        woo_customer_id=None,
        refunds=[{**refund, "reason": ""} for refund in snap.refunds],
        content_hash="",
    )
    return replace(anonymised, content_hash=order_content_hash(anonymised))


def order_snapshot_from_doc(doc: dict) -> OrderSnapshot | None:
    """A stored order read back as a snapshot; None for a placeholder (a trash seen before
    the order itself), which holds nothing to anonymise."""
    if "currency" not in doc:
        return None

    def when(name: str) -> datetime | None:
        return doc.get(name)

    return OrderSnapshot(
        order_id=doc["order_id"], number=doc["number"], status=doc["status"],
        currency=doc["currency"], woo_customer_id=doc.get("woo_customer_id"),
        billing=dict(doc.get("billing") or {}), shipping=dict(doc.get("shipping") or {}),
        total=doc["total"], subtotal=doc["subtotal"], discount_total=doc["discount_total"],
        shipping_total=doc["shipping_total"], tax_total=doc["tax_total"],
        total_refunded=doc["total_refunded"], refunds=list(doc.get("refunds") or []),
        line_items=list(doc.get("line_items") or []),
        coupon_codes=list(doc.get("coupon_codes") or []),
        payment_method=doc.get("payment_method", ""), date_created=when("date_created"),
        date_modified=when("date_modified"), date_paid=when("date_paid"),
        date_completed=when("date_completed"), anonymized=bool(doc.get("anonymized")),
        content_hash=doc.get("content_hash") or "",
    )


def anonymised_order_fields(doc: dict) -> dict:
    """The `$set` that anonymises a stored order in place (ids, money, dates stay)."""
    fields: dict = {"personal_data_erased": True,
                    "is_guest": order_is_guest(doc)}
    snap = order_snapshot_from_doc(doc)
    if snap is None:
        return fields
    anonymised = anonymise_order_snapshot(snap)
    fields.update(billing=anonymised.billing, shipping=anonymised.shipping,
                  woo_customer_id=None, refunds=anonymised.refunds,
                  content_hash=anonymised.content_hash)
    return fields


def order_is_guest(doc: dict) -> bool:
    """A guest checkout? Remembered explicitly once the shop's customer id is erased."""
    if "is_guest" in doc:
        return bool(doc["is_guest"])
    return doc.get("woo_customer_id") is None


# -- erased customers -----------------------------------------------------------------------
def erased_customer_unset(doc: dict) -> list[str]:
    """The fields of a customer document that erasure removes: all but KEPT_CUSTOMER_FIELDS
    (the events it still owes too: they carry the person's contact fields)."""
    return sorted(name for name in doc if name not in KEPT_CUSTOMER_FIELDS)


def emails_of(doc: dict) -> set[str]:
    """Every email a customer or order document holds, as customers are matched by it."""
    found = {doc.get("email_key"), doc.get("guest_email_key"), real_email_key(doc.get("email")),
             real_email_key((doc.get("billing") or {}).get("email"))}
    return {key for key in found if key and not is_placeholder(key)}


# -- raw WooCommerce JSON (stored webhook deliveries) -----------------------------------------
_ORDER_KEEP = ("id", "parent_id", "number", "created_via", "version", "status", "currency",
               "date_created", "date_created_gmt", "date_modified", "date_modified_gmt",
               "date_paid", "date_paid_gmt", "date_completed", "date_completed_gmt",
               "discount_total", "discount_tax", "shipping_total", "shipping_tax", "cart_tax",
               "total", "total_tax", "prices_include_tax", "customer_id", "payment_method",
               "payment_method_title")
_LINE_ITEM_KEEP = ("id", "name", "product_id", "variation_id", "quantity", "tax_class",
                   "subtotal", "subtotal_tax", "total", "total_tax", "taxes", "sku", "price")
_SHIPPING_LINE_KEEP = ("id", "method_title", "method_id", "total", "total_tax", "taxes")
_FEE_LINE_KEEP = ("id", "tax_class", "tax_status", "total", "total_tax", "taxes")
_COUPON_LINE_KEEP = ("id", "code", "discount", "discount_tax")
_CUSTOMER_KEEP = ("id", "date_created", "date_created_gmt", "date_modified", "date_modified_gmt",
                  "role", "is_paying_customer")


def _pick(item: Any, names: tuple[str, ...]) -> dict:
    return {name: item[name] for name in names if isinstance(item, dict) and name in item}


def _listed(value: Any) -> list:
    """A list the body may carry, or none: optional parts of any other shape are dropped, as
    applying the delivery dropped them."""
    return value if isinstance(value, list) else []


def _items(value: Any, names: tuple[str, ...]) -> list[dict]:
    return [_pick(item, names) for item in _listed(value) if isinstance(item, dict)]


def redact_order_payload(payload: dict) -> dict:
    """An order body with only what an anonymised order keeps (line items without their meta
    data, which can hold personalisation text; refunds without reasons; no note, IP or agent).
    Still an order WooCommerce could have sent, so a pending delivery can be applied."""
    redacted = _pick(payload, _ORDER_KEEP)
    redacted["billing"] = anonymised_address(payload.get("billing"))
    redacted["shipping"] = anonymised_address(payload.get("shipping"))
    redacted["line_items"] = _items(payload.get("line_items"), _LINE_ITEM_KEEP)
    redacted["shipping_lines"] = _items(payload.get("shipping_lines"), _SHIPPING_LINE_KEEP)
    redacted["fee_lines"] = _items(payload.get("fee_lines"), _FEE_LINE_KEEP)
    redacted["coupon_lines"] = _items(payload.get("coupon_lines"), _COUPON_LINE_KEEP)
    redacted["refunds"] = [{**_pick(r, ("id", "total")), "reason": ""}
                           for r in _listed(payload.get("refunds")) if isinstance(r, dict)]
    redacted["meta_data"] = [m for m in _listed(payload.get("meta_data"))
                             if isinstance(m, dict) and m.get("key") == "_anonymized"]
    return redacted


def redact_customer_payload(payload: dict) -> dict:
    """A customer body without the person: ids, role and dates only."""
    redacted = _pick(payload, _CUSTOMER_KEEP)
    redacted.update(email="", first_name="", last_name="", username="", meta_data=[],
                    billing={name: "" for name in ADDRESS_FIELDS},
                    shipping={name: "" for name in ADDRESS_FIELDS if name not in ("email", "phone")})
    return redacted


def redact_payload(resource: str, payload: Any) -> dict:
    """A stored delivery's body without personal data, for any resource WooCommerce sends."""
    if not isinstance(payload, dict):
        return {}
    if resource == "order":
        return redact_order_payload(payload)
    if resource == "customer":
        return redact_customer_payload(payload)
    return _pick(payload, ("id",))
