"""The proof step of an erasure: search a service's whole database for a person's strings.

After every service confirms an erasure, gdpr asks each to look for the person's email, phone
and names anywhere in its data: every collection, every string at any depth (including the
events still owed in outboxes), compared without case. Completed means nothing was found.
"""
from __future__ import annotations

from typing import Any, Iterable

from pymongo.database import Database

from shared.errors import ValidationError


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def search_terms(terms: Any) -> list[str]:
    """The terms to look for, or ValidationError: short terms would match everything."""
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValidationError("terms must be a non-empty list", {"fields": {"terms": ["required"]}})
    cleaned = sorted({str(t).strip().lower() for t in terms if isinstance(t, str) and t.strip()})
    short = [t for t in cleaned if len(t) < 4]
    if short or not cleaned:
        raise ValidationError("each term must have at least 4 characters",
                              {"fields": {"terms": short or ["empty"]}})
    return cleaned


def search(database: Database, terms: Iterable[str], service: str) -> dict:
    """Documents holding any of the terms, counted per collection (a full scan: this runs
    once per erasure, not per request)."""
    wanted = search_terms(list(terms))
    matches = []
    for name in sorted(database.list_collection_names()):
        count = 0
        for doc in database[name].find({}):
            if any(term in text.lower() for text in _strings(doc) for term in wanted):
                count += 1
        if count:
            matches.append({"collection": name, "count": count})
    return {"service": service, "matches": matches}
