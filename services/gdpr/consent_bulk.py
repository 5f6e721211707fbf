"""One consent change for many customers at once (an operator acting on a complaint, a list
from the shop's old newsletter tool), with the reason recorded on every customer's history."""
from __future__ import annotations

from typing import Any

from services.gdpr.desk import Desk
from shared.customers import valid_customer_ids
from shared.errors import ValidationError
from shared.events.notifications import CONSENT_PURPOSES

# The most customers one bulk change may name: every one is a write and an event, and the
# whole list is checked against customer_sync in one call.
MAX_BULK_CONSENT = 500
REASON_MAX_LENGTH = 2000


def bulk_set_consent(desk: Desk, store_id: str, customer_ids: Any, purpose: Any, granted: Any,
                     reason: Any, actor: str) -> dict:
    """Answers each customer's outcome: `changed`, `unchanged` (already so: nothing recorded)
    or `not_found` (not the store's customer: nothing recorded). Input that is wrong as a
    whole (too many ids, a bad id, no reason) is refused before anything is written."""
    if purpose not in CONSENT_PURPOSES:
        raise ValidationError(f"purpose must be one of {', '.join(CONSENT_PURPOSES)}",
                              {"fields": {"purpose": ["invalid"]}})
    if not isinstance(granted, bool):
        raise ValidationError("granted must be true or false", {"fields": {"granted": ["invalid"]}})
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_MAX_LENGTH:
        raise ValidationError(f"reason is required (at most {REASON_MAX_LENGTH} characters)",
                              {"fields": {"reason": ["required"]}})
    if isinstance(customer_ids, list) and len(customer_ids) > MAX_BULK_CONSENT:
        raise ValidationError(f"at most {MAX_BULK_CONSENT} customers per bulk consent change",
                              {"fields": {"customer_ids": [f"at most {MAX_BULK_CONSENT}"]}})
    ids = valid_customer_ids(customer_ids)
    consents = desk.storage.consents
    if desk.customers is None:
        existing = set(ids)
    else:
        existing = desk.customers.existing(
            store_id, ids, lambda c: consents.get(store_id, c) is not None)
    now = desk.clock()
    results = []
    for customer_id in ids:
        if customer_id not in existing:
            results.append({"customer_id": customer_id, "outcome": "not_found"})
            continue
        current = ((consents.get(store_id, customer_id) or {}).get("purposes") or {}).get(purpose)
        if current is not None and current.get("granted") is granted:
            results.append({"customer_id": customer_id, "outcome": "unchanged"})
            continue
        desk.record_operator_change(store_id, customer_id, purpose, granted, actor,
                                    reason.strip(), now)
        results.append({"customer_id": customer_id, "outcome": "changed"})
    summary = {outcome: sum(1 for r in results if r["outcome"] == outcome)
               for outcome in ("changed", "unchanged", "not_found")}
    return {"purpose": purpose, "granted": granted, "reason": reason.strip(),
            "results": results, "summary": summary}
