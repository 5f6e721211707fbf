"""The consent card of a customer's page: each purpose's state with where it came from, the
full history, and the form that changes one purpose (always with a reason, kept on the
history). Its words are here, in one place."""
from __future__ import annotations

from werkzeug.wrappers import Response

from services.gateway.console.api import ApiError, path

PREFIX = "/console"
PURPOSE_LABELS = {"email_marketing": "Email marketing", "sms_marketing": "SMS marketing",
                  "data_processing": "Data processing"}
SOURCE_LABELS = {"checkout": "Checkout opt-in", "operator": "Changed by staff",
                 "sms_stop": "Replied STOP by SMS", "sms_start": "Replied START by SMS",
                 "request": "GDPR request", "import": "Imported with proof"}
REASON_MAX_LENGTH = 2000


def _source(entry: dict) -> str:
    label = SOURCE_LABELS.get(entry.get("source"), entry.get("source") or "–")
    if entry.get("order_id"):
        label += f" (order {entry['order_id']})"
    return label


def card(page, customer_id: str) -> dict | None:
    """What the card shows; None without the gdpr scope (the card is not shown), and
    `unavailable` when gdpr did not answer."""
    if not page.may("gdpr"):
        return None
    try:
        consent = page.api.get(path("customers", customer_id, "consent"))
    except ApiError as exc:
        return {"unavailable": exc.message(), "purposes": [], "history": []}
    held = consent.get("purposes") or {}
    purposes = []
    for purpose, label in PURPOSE_LABELS.items():
        state = held.get(purpose)
        purposes.append({
            "purpose": purpose, "label": label,
            "state": "Not recorded" if state is None else ("Yes" if state["granted"] else "No"),
            "granted": None if state is None else bool(state["granted"]),
            "since": (state or {}).get("at"), "source": _source(state) if state else "",
            "actor": (state or {}).get("actor")})
    history = [{**entry, "label": PURPOSE_LABELS.get(entry["purpose"], entry["purpose"]),
                "source_label": _source(entry), "state": "Yes" if entry["granted"] else "No"}
               for entry in reversed(consent.get("history") or [])]
    return {"unavailable": None, "purposes": purposes, "history": history}


def set_consent(page, customer_id: str) -> Response:
    """Turn one purpose on or off; refused here, before the API, without a reason."""
    form = page.request.form
    purpose, choice = form.get("purpose", ""), form.get("granted", "")
    reason = form.get("reason", "").strip()
    back = f"{PREFIX}/customers/{path(customer_id)[1:]}#consent"
    if purpose not in PURPOSE_LABELS or choice not in ("yes", "no"):
        page.flash("error", "Choose a purpose and whether the customer agrees.")
        return page.redirect(back)
    if not reason:
        page.flash("error", "Give the reason for the change; it is kept with the consent "
                            "history.")
        return page.redirect(back)
    if len(reason) > REASON_MAX_LENGTH:
        page.flash("error", f"The reason is too long (at most {REASON_MAX_LENGTH} characters).")
        return page.redirect(back)
    granted = choice == "yes"
    try:
        page.api.put(path("customers", customer_id, "consent"),
                     {"purpose": purpose, "granted": granted, "source": "operator",
                      "note": reason})
    except ApiError as exc:
        page.flash("error", f"Consent was not changed: {exc.message()}")
        return page.redirect(back)
    page.flash("success", f"{PURPOSE_LABELS[purpose]}: consent turned "
                          f"{'on' if granted else 'off'}.")
    return page.redirect(back)
