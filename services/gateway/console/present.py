"""How the console shows and reads values: money, times, the list's filters and sorting.
Plain functions, so every rule is unit-tested without a browser."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable
from urllib.parse import urlencode

from services.gateway.routing import COMPANY_ID_PATTERN
from shared.money import exponent, minor_per_unit, money_text
from shared.times import as_utc

# Quick filters: each one the list's API filter it stands for. "wholesale" is the customer
# group of that slug: groups are where B2B terms (discount, payment terms) live, and the API
# ANDs its filters, so "tag or group" could not be one query.
QUICK_FILTERS = [
    ("all", "All", {}),
    ("active", "Active", {"status": "active"}),
    ("inactive", "Inactive", {"status": "inactive"}),
    ("vip", "VIP", {"segment": "vip"}),
    ("new", "New", {"segment": "new"}),
    ("at_risk", "At risk", {"segment": "at_risk"}),
    ("wholesale", "Wholesale", {"group": "wholesale"}),
]
QUICK = {slug: params for slug, _, params in QUICK_FILTERS}
SEGMENTS = [("", "Any segment"), ("prospect", "Prospect"), ("new", "New"),
            ("regular", "Regular"), ("vip", "VIP"), ("one_time", "One-time"),
            ("at_risk", "At risk")]
SEGMENT_LABELS = dict(SEGMENTS[1:])
# column -> (label, the direction a first click sorts by)
SORT_COLUMNS = {"name": ("Name", ""), "orders": ("Orders", "-"),
                "total_spent": ("Total spent", "-"), "last_order": ("Last order", "-"),
                "registered": ("Registered", "-")}
DEFAULT_SORT = "-registered"
PAGE_SIZES = (25, 50, 100)
# Text filters passed to the API as they are typed.
TEXT_FILTERS = ("q", "segment", "status", "country", "state", "city", "company_id")
MONEY_FILTERS = ("total_spent_min", "total_spent_max")
DATE_FILTERS = ("last_order_after", "last_order_before", "registered_after",
                "registered_before")
# Everything of the list's state that survives paging and sorting.
STATE_KEYS = ("view", "sort", "limit", "orders_min", "tag", "group") + TEXT_FILTERS \
    + MONEY_FILTERS + DATE_FILTERS
_DAYS_PER_MONTH = Decimal("30.436875")


def money(amount: Any, currency: str | None = None) -> str:
    """Minor units as a decimal with its currency code, in the currency's own decimals:
    123456, EUR -> '1,234.56 EUR'; 500, JPY -> '500 JPY'."""
    if amount is None:
        return "–"
    if isinstance(amount, dict):
        amount, currency = amount.get("amount"), amount.get("currency")
        if amount is None:
            return "–"
    return money_text(amount, currency, grouped=True)


def day(value: Any) -> str:
    moment = as_utc(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d") if moment else "–"


def moment(value: Any) -> str:
    when = as_utc(value)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if when else "–"


def orders_per_month(stats: dict | None, now: datetime) -> float | None:
    """Counted orders per month since the first one; a customer whose first order is less than
    a month old counts as one month (two orders last week is 2.0, not 8.7). None before any."""
    stats = stats or {}
    count = int(stats.get("orders_count") or 0)
    first = as_utc(stats.get("first_order_at"))
    if not count or first is None:
        return None
    days = Decimal(max(0.0, (now - first).total_seconds()) / 86400)
    months = max(Decimal(1), days / _DAYS_PER_MONTH)
    return float((Decimal(count) / months).quantize(Decimal("0.01")))


def number(value: Any, places: int = 1) -> str:
    if value is None:
        return "–"
    return f"{float(value):,.{places}f}"


MAX_AMOUNT_UNITS = 10 ** 9  # a billion in any currency: no shop's coupon or credit is more


def to_minor_units(text: str, currency: str | None = None) -> int:
    """'12.50' -> 1250 in the currency's minor units (two decimals when it is not given);
    refuses negatives, more decimals than the currency has, and non-numbers."""
    per_unit, places = minor_per_unit(currency), exponent(currency)
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError("must be an amount such as 25 or 19.99") from None
    if not value.is_finite() or value < 0:
        raise ValueError("must be an amount of zero or more")
    if value >= MAX_AMOUNT_UNITS:  # also keeps quantize below from failing on 1e30
        raise ValueError(f"must be less than {MAX_AMOUNT_UNITS:,}")
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(f"has at most {places} decimals" if places else "has no decimals")
    return int(value * per_unit)


def to_day_start(text: str) -> str:
    """'2026-01-31' (an <input type=date>) -> the start of that day in UTC, as ISO-8601."""
    try:
        parsed = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("must be a date (YYYY-MM-DD)") from None
    return datetime(parsed.year, parsed.month, parsed.day, tzinfo=timezone.utc).isoformat()


def split_names(text: str) -> list[str]:
    """'vip, Gold ,' -> ['vip', 'gold']: tags and groups are lower-case slugs."""
    return [p.strip().lower() for p in (text or "").split(",") if p.strip()]


def list_state(args) -> tuple[dict, list[tuple[str, str]], dict]:
    """The list page's state from its query string, the API query it stands for, and the
    fields it could not read (field -> message)."""
    state = {k: (args.get(k) or "").strip() for k in STATE_KEYS}
    errors: dict[str, str] = {}
    if state["view"] not in QUICK:
        state["view"] = "all"
    sort = state["sort"]
    if sort.lstrip("-") not in SORT_COLUMNS:
        state["sort"] = DEFAULT_SORT
    try:
        limit = int(state["limit"] or 50)
    except ValueError:
        limit = 50
    state["limit"] = str(limit if limit in PAGE_SIZES else 50)
    query: list[tuple[str, str]] = [("sort", state["sort"]), ("limit", state["limit"])]
    filters: dict[str, Any] = {k: state[k] for k in TEXT_FILTERS if state[k]}
    tags, groups = split_names(state["tag"]), split_names(state["group"])
    for name, value in QUICK[state["view"]].items():
        if name == "group":
            groups.append(value)
        else:
            filters[name] = value
    for name in MONEY_FILTERS:
        if state[name]:
            try:
                filters[name] = str(to_minor_units(state[name]))
            except ValueError as exc:
                errors[name] = str(exc)
    if state["orders_min"]:
        if state["orders_min"].isdigit():
            filters["orders_min"] = state["orders_min"]
        else:
            errors["orders_min"] = "must be a whole number"
    for name in DATE_FILTERS:
        if state[name]:
            try:
                filters[name] = to_day_start(state[name])
            except ValueError as exc:
                errors[name] = str(exc)
    if state["company_id"] and not re.fullmatch(COMPANY_ID_PATTERN, state["company_id"]):
        errors["company_id"] = "choose a company from the list"
        del filters["company_id"]
    query.extend(sorted(filters.items()))
    query.extend(("tag", t) for t in dict.fromkeys(tags))
    query.extend(("group", g) for g in dict.fromkeys(groups))
    if args.get("cursor"):
        query.append(("cursor", args.get("cursor")))
    return state, query, errors


def list_url(state: dict, **changes: Any) -> str:
    """The list page with this state, changed; paging starts again unless a cursor (and the
    trail back) is given."""
    merged = {**state, **changes}
    pairs = [(k, str(v)) for k, v in merged.items()
             if v not in (None, "") and k in STATE_KEYS + ("cursor",)
             and not (k == "view" and v == "all") and not (k == "limit" and str(v) == "50")
             and not (k == "sort" and v == DEFAULT_SORT)]
    pairs.extend(("back", b) for b in changes.get("back") or [])
    return "/console/customers" + ("?" + urlencode(pairs) if pairs else "")


# Paging back over keyset cursors: the API's cursors only go forward, so each page's link
# carries the cursors of the pages before it (`back`, the first page as FIRST_PAGE). The trail
# keeps the last TRAIL_MAX pages, which bounds the address's length; further back than that the
# page offers the first page instead of a wrong "previous".
FIRST_PAGE = "~"
TRAIL_MAX = 20
MAX_CURSOR_LENGTH = 2000


def trail_of(args) -> list[str]:
    """The `back` cursors of a page's address, oldest first, bounded."""
    trail = [c for c in args.getlist("back") if c and len(c) <= MAX_CURSOR_LENGTH]
    return trail[-TRAIL_MAX:]


def paging(url_for, cursor: str | None, trail: list[str], next_cursor: str | None
           ) -> dict[str, str | None]:
    """The first, previous and next links of a page. `url_for(cursor, back)` builds a page's
    address; `cursor` is this page's (None: the first page)."""
    links: dict[str, str | None] = {"first": None, "previous": None, "next": None}
    if next_cursor:
        links["next"] = url_for(next_cursor, (trail + [cursor or FIRST_PAGE])[-TRAIL_MAX:])
    if trail:
        before = trail[-1]
        links["previous"] = url_for(None if before == FIRST_PAGE else before, trail[:-1])
    if cursor and (not trail or trail[-1] != FIRST_PAGE):
        links["first"] = url_for(None, [])
    return links


def sort_link(state: dict, column: str) -> tuple[str, str | None]:
    """The header link of a column, and its aria-sort value when the list is sorted by it."""
    current = state["sort"]
    if current.lstrip("-") == column:
        flipped = column if current.startswith("-") else f"-{column}"
        return list_url(state, sort=flipped), ("descending" if current.startswith("-")
                                                else "ascending")
    return list_url(state, sort=SORT_COLUMNS[column][1] + column), None


def group_notes(notes: Iterable[dict], categories: Iterable[str]) -> list[tuple[str, list]]:
    """Notes by category, in the categories' order, leaving out empty ones."""
    by: dict[str, list] = {c: [] for c in categories}
    for note in notes:
        by.setdefault(note.get("category") or "general", []).append(note)
    return [(c, items) for c, items in by.items() if items]


# -- rewards: coupons bought with points or issued as store credit ---------------------------

REWARD_STATES = {"pending": "waiting for the shop", "issued": "ready to use", "used": "used",
                 "closing": "being withdrawn", "returned": "cancelled", "expired": "expired"}
CANCELLABLE_STATES = frozenset({"pending", "issued"})
CREDIT_REASONS = [("goodwill", "Goodwill"), ("refund_alternative", "Instead of a refund")]


def store_currency(account: dict | None, programme: dict | None = None) -> str | None:
    """The currency a customer's rewards are in: the loyalty card's, else the programme's."""
    for money_field in ("store_credit", "cash_value"):
        currency = ((account or {}).get(money_field) or {}).get("currency")
        if currency:
            return currency
    return (programme or {}).get("currency") or None


def _valid_until(reward: dict) -> str:
    return f", valid until {day(reward['expires_at'])}" if reward.get("expires_at") else ""


def reward_message(reward: dict) -> str:
    """What happened to a reward just made, for the person who made it."""
    code, value = reward.get("code") or "(no code yet)", money(reward.get("amount"))
    state = reward.get("state")
    if state == "issued":
        return f"Coupon {code} for {value} is ready{_valid_until(reward)}."
    if state == "pending" and reward.get("last_error"):
        return (f"The shop is not answering; the coupon {code} for {value} will be created "
                "when it is back.")
    if state == "pending":
        return f"Coupon {code} for {value} is being created at the shop."
    if state == "returned":
        back = " and the points went back" if reward.get("points") else ""
        why = f" ({reward['last_error']})" if reward.get("last_error") else ""
        return f"The shop refused the coupon {code}{why}{back}."
    return f"Coupon {code} for {value}: {REWARD_STATES.get(state, state)}."


def cancel_message(reward: dict) -> str:
    """What a cancellation did, for the person who asked for it."""
    code, state = reward.get("code") or reward.get("reward_id"), reward.get("state")
    points = reward.get("points")
    if state == "returned":
        back = f" {points} points went back to the balance." if points else ""
        return f"Coupon {code} is cancelled and no longer works at the shop.{back}"
    if state == "closing":
        back = f" Its {points} points go back once it is." if points else ""
        return (f"Coupon {code} is being withdrawn at the shop; it is deleted there as soon as "
                f"the shop answers.{back}")
    return f"Coupon {code}: {REWARD_STATES.get(state, state)}."


def custom_field_rows(definitions: Iterable[dict], values: dict | None) -> list[dict]:
    """A customer's custom field values to show, labelled, in the store's order of its fields;
    a value whose field the page could not read is shown under its key rather than hidden."""
    values = dict(values or {})
    rows = []
    for definition in definitions:
        key = definition.get("key")
        if key in values and values[key] is not None:
            rows.append({"key": key, "label": definition.get("label") or key,
                         "value": _field_text(values.pop(key))})
    rows += [{"key": key, "label": key, "value": _field_text(value)}
             for key, value in sorted(values.items()) if value is not None]
    return rows


def _field_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
