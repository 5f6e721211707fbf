"""The customer directory: the gateway's customer list, answered from segmentation's profiles.

A list filters on what customer_sync owns (name, email, place, registration, account status)
and on what segmentation owns (segment, tags, groups, stats) at once, so the profile is its
read model: every customer event leaves the contact fields the list shows in `contact`, and
every write of a profile leaves `listing`, the keys it is sorted and filtered by (derived from
`contact` and `stats`, so they never disagree with them). One query answers a page:

- keyset paging on (sort value, customer_id), so page 1,000 costs what page 1 does, served by
  one index per sort (store_id, status, sort key, customer_id), which the profiles'
  repository creates at start-up;
- a sort key is never missing: a customer without a value (no order yet, no registration
  time, no name) holds the lowest value of its type ("" or 1970-01-01), so they come last in
  descending order and first in ascending order, consistently for every sort and in MongoDB
  and mongomock alike;
- the cursor carries a fingerprint of the store, filters and sort it was made for, so a
  cursor replayed with another query is refused rather than silently skipping customers.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Protocol

from marshmallow import RAISE, Schema, ValidationError as MarshmallowError, fields, validate
from pymongo import ASCENDING, DESCENDING

from shared.errors import ValidationError
from shared.events.fields import UtcDateTime
from shared.paging import decode_cursor, encode_cursor
from shared.times import iso_ms, utc_ms
from services.segmentation.stats import SEGMENTS

ACTIVE = "active"
ACCOUNT_STATUSES = ("active", "inactive")
# What a missing time sorts as: lower than any real registration or order.
LOWEST_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
# sort name -> the profile field holding its key
SORT_KEYS = {"name": "listing.name", "total_spent": "listing.total_spent",
             "orders": "listing.orders", "last_order": "listing.last_order",
             "registered": "listing.registered"}
_TIME_SORTS = ("last_order", "registered")
_INT_SORTS = ("total_spent", "orders")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PROJECTION = {"customer_id": 1, "contact": 1, "segment": 1, "tag_list": 1, "group_list": 1,
               "stats": 1, "listing": 1}


# -- keys, written with every profile ---------------------------------------------------------

def full_name(contact: dict) -> str:
    return " ".join(p for p in (contact.get("first_name") or "", contact.get("last_name") or "")
                    if p)


def listing_keys(contact: dict | None, stats: dict | None) -> dict:
    """The sort and filter keys of one profile: lower-cased names and places, and a value for
    every sort (the lowest of its type when the customer has none)."""
    contact, stats = contact or {}, stats or {}
    first = (contact.get("first_name") or "").lower()
    last = (contact.get("last_name") or "").lower()
    last_order = stats.get("last_order_at")
    if isinstance(last_order, str):
        last_order = datetime.fromisoformat(last_order)
    return {
        # last name, then first name; "\x01" keeps ("smith", "al") before ("smithe", ...)
        "name": f"{last}\x01{first}" if (first or last) else "",
        "search": full_name(contact).lower(),
        "email": (contact.get("email_key") or "").lower(),
        "city": (contact.get("city") or "").strip().lower(),
        "state": (contact.get("state") or "").strip().lower(),
        "total_spent": int(stats.get("total_spent") or 0),
        "orders": int(stats.get("orders_count") or 0),
        "last_order": utc_ms(last_order) or LOWEST_TIME,
        "registered": utc_ms(contact.get("date_created")) or LOWEST_TIME,
    }


def same_listing(a: dict | None, b: dict | None) -> bool:
    """Whether two listings hold the same keys (a stored copy's times may come back naive)."""
    def norm(listing: dict | None) -> dict:
        return {k: (utc_ms(v) if isinstance(v, datetime) else v)
                for k, v in (listing or {}).items()}
    return norm(a) == norm(b)


# -- input ----------------------------------------------------------------------------------

def _slugs(values: list) -> list:
    slugs = [str(v).strip().lower() for v in values]
    bad = [v for v in slugs if not _SLUG.match(v)]
    if bad:
        raise MarshmallowError(f"must be lower-case slugs: {bad}")
    return slugs


CUSTOM_KEY = r"^[a-z][a-z0-9_]{0,39}\Z"
COMPANY_ID = r"^co_[0-9a-f]{24}\Z"
MAX_CUSTOM_FILTERS = 10


def custom_matches(text: str) -> list:
    """What a custom field value asked for as text may be held as: the text itself, and the
    number or boolean it spells (a query string has no types; the values have)."""
    matches: list = [text]
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        matches.append(lowered == "true")
    try:
        number = float(text)
    except ValueError:
        return matches
    if math.isfinite(number):
        matches.append(int(number) if number.is_integer() and abs(number) < 2 ** 53 else number)
    return matches


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class FiltersSchema(_Strict):
    q = fields.String(validate=validate.Length(min=1, max=200))
    segment = fields.String(validate=validate.OneOf(SEGMENTS))
    saved_segment = fields.String(validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", error="must be a saved segment's id"))
    tags = fields.List(fields.String(), validate=[validate.Length(min=1, max=50), _slugs])
    groups = fields.List(fields.String(), validate=[validate.Length(min=1, max=50), _slugs])
    account_status = fields.String(validate=validate.OneOf(ACCOUNT_STATUSES))
    total_spent_min = fields.Integer(strict=True, validate=validate.Range(min=0))
    total_spent_max = fields.Integer(strict=True, validate=validate.Range(min=0))
    orders_min = fields.Integer(strict=True, validate=validate.Range(min=0))
    last_order_after = UtcDateTime(format="iso")
    last_order_before = UtcDateTime(format="iso")
    registered_after = UtcDateTime(format="iso")
    registered_before = UtcDateTime(format="iso")
    country = fields.String(validate=validate.Regexp(r"^[A-Za-z]{2}\Z",
                                                     error="must be an ISO 3166 code of 2 letters"))
    state = fields.String(validate=validate.Length(min=1, max=100))
    city = fields.String(validate=validate.Length(min=1, max=100))
    registered = fields.Boolean()
    company_id = fields.String(validate=validate.Regexp(
        COMPANY_ID, error="must be a company id (co_ and 24 hex digits)"))
    # Custom field key to the value asked for, as text (customer_sync owns the definitions).
    custom = fields.Dict(keys=fields.String(validate=validate.Regexp(
                             CUSTOM_KEY, error="must be a custom field's key")),
                         values=fields.String(validate=validate.Length(min=1, max=200)),
                         validate=validate.Length(min=1, max=MAX_CUSTOM_FILTERS))


class SortSchema(_Strict):
    field = fields.String(load_default="registered", validate=validate.OneOf(tuple(SORT_KEYS)))
    direction = fields.String(load_default="desc", validate=validate.OneOf(("asc", "desc")))


class PageSchema(_Strict):
    size = fields.Integer(load_default=50, strict=True, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, allow_none=True)


def _load(schema: Schema, data: Any, name: str) -> dict:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError(f"{name} must be an object", {"fields": {name: ["not an object"]}})
    try:
        return schema.load(data)
    except MarshmallowError as exc:
        raise ValidationError(f"invalid {name}: {exc.messages}",
                              {"fields": {name: exc.messages}}) from None


def load_filters(data: Any) -> dict:
    filters = _load(FiltersSchema(), data, "filters")
    if "q" in filters:
        filters["q"] = filters["q"].strip().lower()
        if not filters["q"]:
            del filters["q"]
    if "country" in filters:
        filters["country"] = filters["country"].upper()
    for name in ("state", "city"):
        if name in filters:
            filters[name] = filters[name].strip().lower()
    for name in ("tags", "groups"):
        if name in filters:
            filters[name] = sorted(set(filters[name]))
    for name in ("last_order_after", "last_order_before", "registered_after",
                 "registered_before"):
        if name in filters:
            filters[name] = utc_ms(filters[name])
    return filters


# -- the query ------------------------------------------------------------------------------

def build_query(store_id: str, filters: dict) -> dict:
    """The MongoDB filter for a store's active profiles matching `filters` (as loaded)."""
    query: dict = {"store_id": store_id, "status": ACTIVE}
    conditions: list[dict] = []
    if "q" in filters:
        pattern = re.escape(filters["q"])
        conditions.append({"$or": [{"listing.search": {"$regex": pattern}},
                                   {"listing.email": {"$regex": pattern}}]})
    if "segment" in filters:
        query["segment"] = filters["segment"]
    if "saved_segment" in filters:
        query["saved_segments"] = filters["saved_segment"]
    if "tags" in filters:
        query["tag_list"] = {"$all": filters["tags"]}
    if "groups" in filters:
        query["group_list"] = {"$all": filters["groups"]}
    if "account_status" in filters:
        # a profile no customer event reached yet has no status: customers start active
        query["contact.account_status"] = ({"$in": [ACTIVE, None]}
                                           if filters["account_status"] == ACTIVE
                                           else filters["account_status"])
    spent: dict = {}
    if "total_spent_min" in filters:
        spent["$gte"] = filters["total_spent_min"]
    if "total_spent_max" in filters:
        spent["$lte"] = filters["total_spent_max"]
    if spent:
        query["listing.total_spent"] = spent
    if "orders_min" in filters:
        query["listing.orders"] = {"$gte": filters["orders_min"]}
    for prefix in ("last_order", "registered"):
        bounds: dict = {}
        if f"{prefix}_after" in filters:
            bounds["$gte"] = filters[f"{prefix}_after"]
        if f"{prefix}_before" in filters:
            bounds["$lt"] = filters[f"{prefix}_before"]
        if bounds:
            bounds["$gt"] = LOWEST_TIME  # no time known: in no time range
            query[f"listing.{prefix}"] = bounds
    if "country" in filters:
        query["contact.country"] = filters["country"]
    if "state" in filters:
        query["listing.state"] = filters["state"]
    if "city" in filters:
        query["listing.city"] = filters["city"]
    if "registered" in filters:
        query["contact.registered"] = True if filters["registered"] else {"$ne": True}
    if "company_id" in filters:
        query["contact.company_id"] = filters["company_id"]
    for key, text in sorted((filters.get("custom") or {}).items()):
        query[f"contact.custom_fields.{key}"] = {"$in": custom_matches(text)}
    if conditions:
        query["$and"] = conditions
    return query


def _fingerprint(store_id: str, filters: dict, sort: dict) -> str:
    text = json.dumps({"store_id": store_id, "filters": filters, "sort": sort}, sort_keys=True,
                      default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_cursor(fingerprint: str, sort_field: str, value: Any, customer_id: str) -> str:
    if sort_field in _TIME_SORTS:
        value = (utc_ms(value) or LOWEST_TIME).isoformat()
    return encode_cursor({"f": fingerprint, "v": value, "id": customer_id})


def _decode_cursor(cursor: str, fingerprint: str, sort_field: str) -> tuple[Any, str]:
    def refuse(why: str) -> ValidationError:
        return ValidationError(f"page.cursor {why}", {"fields": {"page": {"cursor": [why]}}})

    try:
        body = decode_cursor(cursor)
        fp, value, customer_id = body["f"], body["v"], body["id"]
    except (ValueError, TypeError, KeyError):
        raise refuse("is not one this service issued") from None
    if fp != fingerprint:
        raise refuse("was made for another store, filter or sort: start again without it")
    if not isinstance(customer_id, str):
        raise refuse("is not one this service issued")
    try:
        if sort_field in _TIME_SORTS:
            value = utc_ms(datetime.fromisoformat(value))
            if value is None:
                raise ValueError
        elif sort_field in _INT_SORTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
        elif not isinstance(value, str):
            raise ValueError
    except (ValueError, TypeError):
        raise refuse("is not one this service issued") from None
    return value, customer_id


def _after(key: str, direction: int, value: Any, customer_id: str) -> list[dict]:
    """Conditions for "after (value, customer_id)" in this order. The bound on the sort key
    alone lets MongoDB start its index scan at the cursor; the $or settles ties by id."""
    beyond, at_least = ("$gt", "$gte") if direction == ASCENDING else ("$lt", "$lte")
    return [{key: {at_least: value}},
            {"$or": [{key: {beyond: value}}, {"customer_id": {beyond: customer_id}}]}]


def _money(amount: Any, currency: str | None) -> dict:
    return {"amount": int(amount or 0), "currency": currency}


def row(doc: dict) -> dict:
    """One customer as the list shows them, in plain JSON types."""
    contact, stats = doc.get("contact") or {}, doc.get("stats") or {}
    currency = stats.get("currency")
    return {
        "customer_id": doc["customer_id"],
        "name": full_name(contact),
        "first_name": contact.get("first_name", ""),
        "last_name": contact.get("last_name", ""),
        "email": contact.get("email", ""),
        "company": contact.get("company", ""),
        "city": contact.get("city", ""),
        "state": contact.get("state", ""),
        "country": contact.get("country", ""),
        "account_status": contact.get("account_status") or ACTIVE,
        "registered": bool(contact.get("registered")),
        "registered_at": iso_ms(contact.get("date_created")),
        "custom_fields": contact.get("custom_fields") or {},
        "company_id": contact.get("company_id") or None,
        "segment": doc.get("segment"),
        "tags": list(doc.get("tag_list") or []),
        "groups": list(doc.get("group_list") or []),
        "stats": {
            "orders_count": int(stats.get("orders_count") or 0),
            "total_spent": _money(stats.get("total_spent"), currency),
            "average_order_value": _money(stats.get("average_order_value"), currency),
            "last_order_at": iso_ms(stats.get("last_order_at")),
        },
    }


def _value_of(doc: dict, key: str) -> Any:
    current: Any = doc
    for part in key.split("."):
        current = (current or {}).get(part)
    return current


class Listing(Protocol):
    """What the list reads of the profiles (their repository answers it)."""

    def count_matching(self, query: dict) -> int: ...

    def listing_page(self, query: dict, projection: dict, sort: list,
                     limit: int) -> list[dict]: ...

    def member_counts(self, store_id: str, field: str) -> dict[str, int]: ...


def search_customers(profiles: Listing, store_id: str, filters: Any = None,
                     sort: Any = None, page: Any = None) -> dict:
    """A page of a store's customers: {"items", "next_cursor", "total"} (see module doc)."""
    if not isinstance(store_id, str) or not store_id:
        raise ValidationError("store_id is required", {"fields": {"store_id": ["required"]}})
    loaded = load_filters(filters)
    order = _load(SortSchema(), sort, "sort")
    paging = _load(PageSchema(), page, "page")
    fingerprint = _fingerprint(store_id, loaded, order)
    key = SORT_KEYS[order["field"]]
    direction = ASCENDING if order["direction"] == "asc" else DESCENDING
    query = build_query(store_id, loaded)
    total = profiles.count_matching(query)
    if paging["cursor"]:
        value, customer_id = _decode_cursor(paging["cursor"], fingerprint, order["field"])
        query = {**query, "$and": query.get("$and", []) + _after(key, direction, value,
                                                                 customer_id)}
    size = paging["size"]
    docs = profiles.listing_page(query, _PROJECTION,
                                 [(key, direction), ("customer_id", direction)], size + 1)
    more = len(docs) > size
    docs = docs[:size]
    next_cursor = None
    if more:
        last = docs[-1]
        next_cursor = _encode_cursor(fingerprint, order["field"], _value_of(last, key),
                                     last["customer_id"])
    return {"items": [row(d) for d in docs], "next_cursor": next_cursor, "total": total}


def list_tags(profiles: Listing, store_id: str) -> list[dict]:
    """Every tag active customers hold (by a person or a rule), with how many, by tag."""
    counts = profiles.member_counts(store_id, "tag_list")
    return [{"tag": tag, "customers": counts[tag]} for tag in sorted(counts)]
