"""A data-subject request and its life, as plain values. Pure.

    received -> verified (an operator confirmed who asked) -> in_progress -> completed
    received | verified | in_progress -> rejected (with a reason)

Every step is appended to the request's audit trail with its actor and time, and nothing is
ever removed from it: the trail is the shop's proof that it answered, and how. A request is due
30 days after it was received.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any, Mapping

from shared.email_addresses import single_address
from shared.errors import Conflict, ValidationError
from shared.events.gdpr import REQUEST_STATES, REQUEST_TYPES
from shared.times import as_utc

TYPES = REQUEST_TYPES
STATES = REQUEST_STATES
OPEN_STATES = ("received", "verified", "in_progress")
DUE_DAYS = 30
RECTIFIABLE = ("first_name", "last_name", "email", "phone", "company", "billing", "shipping")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")  # recognises stored search terms only

ALLOWED = {  # state -> the states it may move to
    "received": {"verified", "rejected"},
    "verified": {"in_progress", "rejected"},
    "in_progress": {"completed", "rejected", "in_progress"},
    "completed": set(),
    "rejected": set(),
}


def new_request(store_id: str, request_type: str, email: str, details: Mapping[str, Any] | None,
                actor: str, now: datetime, request_id: str | None = None) -> dict:
    """A received request, or ValidationError naming the bad field."""
    errors: dict[str, list[str]] = {}
    if request_type not in TYPES:
        errors["type"] = [f"must be one of {', '.join(TYPES)}"]
    if single_address(email) is None:
        errors["email"] = ["must be exactly one email address"]
    if not isinstance(store_id, str) or not store_id:
        errors["store_id"] = ["required"]
    if not isinstance(actor, str) or not actor.strip():
        errors["actor"] = ["required: who recorded the request"]
    details = dict(details or {})
    if request_type == "rectification":
        fields = details.get("fields")
        if not isinstance(fields, dict) or not fields:
            errors["details.fields"] = ["required: the corrected contact fields"]
        else:
            unknown = sorted(set(fields) - set(RECTIFIABLE))
            if unknown:
                errors["details.fields"] = [f"cannot rectify {', '.join(unknown)} "
                                            f"(only {', '.join(RECTIFIABLE)})"]
    if errors:
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items()))
        raise ValidationError(f"invalid request: {summary}", {"fields": errors})
    request_id = request_id or f"req-{uuid.uuid4().hex[:16]}"
    return {
        "_id": request_id, "request_id": request_id, "store_id": store_id,
        "type": request_type, "email": email.strip(), "details": details,
        "state": "received", "received_at": now, "due_at": now + timedelta(days=DUE_DAYS),
        "completed_at": None, "customer_ids": [], "result": None,
        "audit": [audit_entry(now, actor, "received", f"{request_type} request received")],
    }


def shop_erasure(store_id: str, customer_id: str, erased_at: datetime, now: datetime) -> dict:
    """An erasure the shop started with WordPress's own eraser: customer_sync has already
    forgotten the person (so their email is gone), and the shop verified who asked. It goes
    straight to work: every other service must forget them too."""
    request_id = f"shop-{store_id}-{customer_id}"
    return {
        "_id": request_id, "request_id": request_id, "store_id": store_id, "type": "erasure",
        "email": None, "details": {"origin": "shop", "shop_erased_at": erased_at},
        "state": "in_progress", "received_at": now, "due_at": now + timedelta(days=DUE_DAYS),
        "completed_at": None, "customer_ids": [customer_id], "resolved": True,
        "search_terms": [], "result": None, "verified_at": now, "next_attempt_at": now,
        "lease_until": None,
        "audit": [audit_entry(now, "shop", "received", "the shop's privacy eraser erased this "
                              "customer in WooCommerce"),
                  audit_entry(now, "shop", "identity_verified", "verified by the shop"),
                  audit_entry(now, "gdpr-service", "in_progress", "work started")],
    }


def audit_entry(at: datetime, actor: str, action: str, detail: str = "", **data: Any) -> dict:
    return {"at": at, "actor": actor, "action": action, "detail": detail, **data}


def transition(request: Mapping[str, Any], to: str) -> None:
    """Refuse a move the lifecycle does not allow, saying why."""
    if to not in ALLOWED[request["state"]]:
        raise Conflict(f"request {request['request_id']} is {request['state']}; it cannot become {to}")


def is_email(value: Any) -> bool:
    """Whether a search term is an email address (the person's alone) rather than a phone
    or a name (which others may share)."""
    return isinstance(value, str) and bool(_EMAIL.match(value.strip()))


def needs_review(request: Mapping[str, Any]) -> bool:
    """A completed erasure whose proof found the person's phone or name in records naming no
    customer: an operator must judge whether those are theirs."""
    return ((request.get("result") or {}).get("verification") == "ambiguous")


def overdue(request: Mapping[str, Any], now: datetime) -> bool:
    return request["state"] in OPEN_STATES and as_utc(request["due_at"]) < now
