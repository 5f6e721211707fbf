"""What a company's (B2B) members add up to: their stats rolled up by the `company_id` each
profile keeps from customer_sync's `customer.*` events, for the company pages' figures."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

from shared.errors import ValidationError
from shared.times import iso_ms

MAX_COMPANIES_ASKED = 100
_COMPANY_ID = re.compile(r"co_[0-9a-f]{24}\Z")


class CompanyTotals(Protocol):
    """What the roll-up reads of the profiles (their repository answers it)."""

    def company_totals(self, store_id: str, company_ids: list[str]) -> list[dict]: ...


def company_ids_arg(value: Any) -> list[str]:
    """1..MAX_COMPANIES_ASKED company ids, duplicates dropped, else ValidationError."""
    if not isinstance(value, list) or len(value) > MAX_COMPANIES_ASKED:
        raise ValidationError(f"company_ids must be a list of at most {MAX_COMPANIES_ASKED} ids",
                              {"fields": {"company_ids": [f"at most {MAX_COMPANIES_ASKED} ids"]}})
    if any(not isinstance(v, str) or not _COMPANY_ID.match(v) for v in value):
        raise ValidationError("company_ids must hold company ids (co_ and 24 hex digits)",
                              {"fields": {"company_ids": ["not a company id"]}})
    return list(dict.fromkeys(value))


def _empty() -> dict:
    return {"members": 0, "orders_count": 0, "total_spent": {"amount": 0, "currency": None},
            "last_order_at": None}


def _time(value: Any) -> str | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return iso_ms(value) if isinstance(value, datetime) else None


def company_stats(profiles: CompanyTotals, store_id: Any, company_ids: Any) -> dict:
    """{company_id: {"members", "orders_count", "total_spent", "last_order_at"}} for every id
    asked, from the active members' stats (zeros and nulls for a company without any). A store
    sells in one currency; should members' orders be in several, the first by code is named."""
    if not isinstance(store_id, str) or not store_id:
        raise ValidationError("store_id is required", {"fields": {"store_id": ["required"]}})
    ids = company_ids_arg(company_ids)
    answer = {company_id: _empty() for company_id in ids}
    if not ids:
        return answer
    for row in profiles.company_totals(store_id, ids):
        currencies = sorted(c for c in row.get("currencies") or [] if c)
        answer[row["_id"]] = {
            "members": int(row["members"]), "orders_count": int(row["orders_count"] or 0),
            "total_spent": {"amount": int(row["total_spent"] or 0),
                            "currency": currencies[0] if currencies else None},
            "last_order_at": _time(row.get("last_order_at"))}
    return answer
