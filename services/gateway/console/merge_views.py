"""The console's merge pages: a duplicate group's records side by side to merge into one, the
store's merges, and one merge with its "Undo". Everything goes through the gateway's API as
the signed-in key, so a read key sees the pages but the API refuses it any change
(docs/merging.md has the rules of both)."""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from services.gateway.console import forms
from services.gateway.console.api import ApiError, path
from services.gateway.console.listing import paged_listing
from services.gateway.handlers.merges import CONTACT_FIELDS, MAX_MERGED

PREFIX = "/console"
FIELD_LABELS = {"email": "Email", "first_name": "First name", "last_name": "Last name",
                "phone": "Phone", "company": "Company", "billing": "Billing address",
                "shipping": "Shipping address", "birthday": "Birthday"}
STATE_LABELS = {"pending": "Being merged", "merged": "Merged",
                "unmerging": "Being undone", "unmerged": "Undone"}
# How a custom field is named among the field choices, and how many the form passes on.
VALUE_CHOICE = "custom_fields."
MAX_CUSTOM_CHOICES = 100
# The records a merge may name: the primary and up to MAX_MERGED merged into it.
MAX_RECORDS = MAX_MERGED + 1
MERGED_UNDERSTOOD = ("I understand: the other records are retired into the primary, their "
                     "orders, notes and reminders move to it, and the shop is not changed.")
UNDO_UNDERSTOOD = ("I understand: what the merge moved goes back; orders that arrived since "
                   "stay with the primary unless they are a restored record's own.")


# -- pure rules of the form ------------------------------------------------------------------

def is_empty(value: Any) -> bool:
    """As customer_sync's merge rules judge it: an address with nothing filled in is empty."""
    if isinstance(value, dict):
        return not any(v not in (None, "") for v in value.values())
    return value in (None, "", [], {})


def default_primary(records: list[dict]) -> str:
    """The record a merge most likely keeps: a registered one before a guest, then the one
    with most orders, then the first shown."""
    best = max(enumerate(records), key=lambda ir: (bool(ir[1].get("registered")),
                                                   ir[1].get("orders_count") or 0, -ir[0]))
    return best[1]["customer_id"]


def winner(field: str, records: list[dict], primary_id: str, chosen: str = "") -> str:
    """The record whose value of `field` the merge keeps: the chosen one, else the primary's,
    else the first other record with a value (the API's own default, shown beforehand)."""
    ids = [r["customer_id"] for r in records]
    if chosen in ids:
        return chosen
    ordered = sorted(records, key=lambda r: r["customer_id"] != primary_id)
    for record in ordered:
        if not is_empty(record.get(field)):
            return record["customer_id"]
    return primary_id


def field_choices(form: Any) -> dict[str, str]:
    """The form's `take_<field>` radios (a custom field's `take_custom_fields.<key>`) as the
    API's field_choices; an id not among the records, or a key the store has no field of, is
    passed on as sent, for the API to refuse by the field."""
    choices = {}
    custom = [name for name in form.keys() if name.startswith("take_" + VALUE_CHOICE)]
    for field in [*CONTACT_FIELDS, *(n[len("take_"):] for n in custom[:MAX_CUSTOM_CHOICES])]:
        value = (form.get("take_" + field) or "")[:200]
        if value:
            choices[field] = value
    return choices


def custom_rows(definitions: list[dict], records: list[dict], primary_id: str) -> list[dict]:
    """The store's custom fields that any of the records holds a value of, each with the
    record whose value the merge keeps unless chosen otherwise."""
    rows = []
    for definition in definitions:
        key = definition.get("key")
        values = [{"customer_id": r["customer_id"],
                   "value": (r.get("custom_fields") or {}).get(key)} for r in records]
        if any(v["value"] is not None for v in values):
            default = winner("value", values, primary_id)
            rows.append({"key": key, "label": definition.get("label") or key,
                         "name": VALUE_CHOICE + key,
                         "values": [{**v, "text": _value_text(v["value"])} for v in values],
                         "default": default,
                         "default_text": next(_value_text(v["value"]) for v in values
                                              if v["customer_id"] == default)})
    return rows


def _value_text(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def shown_value(value: Any) -> str:
    """A contact field as one line of text (an address joined by commas)."""
    if is_empty(value):
        return ""
    if isinstance(value, dict):
        order = ("first_name", "last_name", "company", "address_1", "address_2", "postcode",
                 "city", "state", "country", "email", "phone")
        parts = [str(value[k]) for k in order if value.get(k) not in (None, "")]
        return ", ".join(parts)
    return str(value)


# -- merging ---------------------------------------------------------------------------------

def _ids(values: list[str]) -> list[str]:
    """The record ids asked for, each once, in the order given; one past the bound at most,
    so that too many is refused rather than cut short unseen."""
    seen: list[str] = []
    for value in values[:4 * MAX_RECORDS]:
        value = value.strip()[:65]
        if value and value not in seen:
            seen.append(value)
    return seen[:MAX_RECORDS + 1]


def _ids_problem(ids: list[str]) -> str:
    """Why these ids cannot make a merge form, or ""."""
    if len(ids) < 2:
        return ("customer_id: name at least two records to merge (open them from the "
                "Possible duplicates page).")
    if len(ids) > MAX_RECORDS:
        return f"customer_id: a merge takes at most {MAX_RECORDS} records."
    if any(len(i) > 64 for i in ids):
        return "customer_id: a record id is at most 64 characters."
    return ""


def _records(page, ids: list[str]) -> list[dict]:
    """Each record as the form shows it, read from the API (ApiError if one cannot be)."""
    records = []
    for customer_id in ids:
        detail = page.api.get(path("customers", customer_id))
        customer = detail.get("customer") or {}
        stats = detail.get("stats") or {}
        records.append({**{f: customer.get(f) for f in CONTACT_FIELDS},
                        "customer_id": customer_id,
                        "registered": bool(customer.get("registered")),
                        "custom_fields": customer.get("custom_fields") or {},
                        "orders_count": stats.get("orders_count") or 0})
    return records


def _form(page, records: list[dict], primary_id: str, chosen: dict[str, str],
          status: int = 200, problem: str = "", errors: dict | None = None) -> Response:
    return page.render("merge_form.html", status, title="Merge customer records",
                       records=records, primary_id=primary_id, chosen=chosen,
                       by_id={r["customer_id"]: r for r in records},
                       defaults={f: winner(f, records, primary_id) for f in CONTACT_FIELDS},
                       fields=FIELD_LABELS, shown=shown_value,
                       custom=custom_rows(_definitions(page), records, primary_id),
                       problem=problem, errors=errors or {}, understood=MERGED_UNDERSTOOD)


def _definitions(page) -> list[dict]:
    """The store's custom fields, or none when they cannot be read (the form then offers
    the contact fields only, and the merge keeps its default for the values)."""
    try:
        return page.api.get("/custom-fields")
    except ApiError:
        return []


def _read_records(page, ids: list[str], title: str) -> list[dict] | Response:
    """The records named, or the error page saying why they cannot be merged."""
    if _ids_problem(ids):
        return page.render("error.html", 400, title=title, message=_ids_problem(ids))
    try:
        return _records(page, ids)
    except ApiError as exc:
        return page.render("error.html", exc.page_status,
                           title="These records cannot be merged", message=exc.message())


def merge_form(page) -> Response:
    """The records of a duplicate group side by side, with the primary and each field's
    winner preselected as the API would choose them."""
    records = _read_records(page, _ids(page.request.args.getlist("customer_id")),
                            "Choose records to merge")
    if isinstance(records, Response):
        return records
    return _form(page, records, default_primary(records), {})


def merge_submit(page) -> Response:
    """The merge itself, once the box is ticked; a refusal is shown on the form, by the
    field, and nothing is stored."""
    form = page.request.form
    ids = _ids(form.getlist("customer_id"))
    primary_id = (form.get("primary_id") or "")[:64]
    chosen = field_choices(form)
    records = _read_records(page, ids, "Nothing was merged")
    if isinstance(records, Response):
        return records
    if primary_id not in ids:
        return _form(page, records, primary_id, chosen, 400,
                     "Nothing was merged: choose the primary record among these.",
                     {"primary_id": "choose one of the records shown"})
    if form.get("understood") != "yes":
        return _form(page, records, primary_id, chosen, 400,
                     "Nothing was merged: tick the box to confirm.",
                     {"understood": "tick the box to confirm the merge"})
    body = {"primary_id": primary_id, "merged_ids": [i for i in ids if i != primary_id],
            "field_choices": chosen}
    try:
        merge = page.api.post("/customers/merge", body)
    except ApiError as exc:
        return _form(page, records, primary_id, chosen, exc.page_status,
                     f"Nothing was merged: {exc.message()}", forms.field_errors(exc.problem))
    page.flash("success", f"Merged {len(body['merged_ids'])} record"
                          f"{'s' if len(body['merged_ids']) != 1 else ''} into {primary_id}.")
    return page.redirect(PREFIX + "/merges/" + path(merge["merge_id"])[1:])


# -- the merges ------------------------------------------------------------------------------

def merge_list(page) -> Response:
    listing = paged_listing(page, "/merges", "/merges", {})
    return page.render("merges.html", title="Merges", result=listing.result,
                       problem=listing.problem, links=listing.links, states=STATE_LABELS)


def merge_page(page, merge_id: str) -> Response:
    try:
        merge = page.api.get(path("merges", merge_id))
    except ApiError as exc:
        return page.render("error.html", exc.page_status,
                           title="Merge not available", message=exc.message())
    return page.render("merge.html", title="Merge " + merge["merge_id"], m=merge,
                       states=STATE_LABELS, fields=FIELD_LABELS, shown=shown_value,
                       understood=UNDO_UNDERSTOOD)


def unmerge(page, merge_id: str) -> Response:
    """Undo, once the box is ticked; the merge's page then shows what went where."""
    back = PREFIX + "/merges/" + path(merge_id)[1:]
    if page.request.form.get("understood") != "yes":
        page.flash("error", "Nothing was undone: understood: tick the box to confirm.")
        return page.redirect(back + "#undo")
    try:
        page.api.post(path("merges", merge_id, "unmerge"))
    except ApiError as exc:
        page.flash("error", f"Nothing was undone: {exc.message()}")
        return page.redirect(back + "#undo")
    page.flash("success", "The merge was undone: what went where is shown below.")
    return page.redirect(back + "#unmerge")
