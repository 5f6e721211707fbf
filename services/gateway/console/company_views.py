"""The console's companies (B2B): the list with each company's members' stats, a company's
page with its group's terms and its members, the forms that create, change and delete one,
the customer page's Company card, and the store's setting that joins customers to the company
of their email's domain. Through the gateway's API as the signed-in key, like every page, so a
read key sees the pages and no form, and the API would refuse it anyway."""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from services.gateway.console import forms, present
from services.gateway.console.api import ApiError, path
from services.gateway.console.listing import paged_listing
from services.gateway.schemas import COMPANY_ADDRESS_PARTS, fields_of

PREFIX = "/console"
ADDRESS_LABELS = {"address_1": "Address", "address_2": "Address, second line", "city": "City",
                  "state": "State or region", "postcode": "Postcode",
                  "country": "Country (2 letters)"}
# The companies offered in a choice (the customer page's card, the list's filter): the first
# page of the store's companies by name; any other is reached from its own page.
CHOICES_SIZE = 100
MAX_TEXT = 500  # what the form keeps of a typed value; the API bounds it tighter and says so
CUSTOM_PREFIX = "custom."
MAX_CUSTOM_INPUTS = 50  # a store has at most 50 custom fields (customer_sync bounds it)
# Sent by a form that showed the custom inputs: only then do its (maybe blank) values replace
# the company's set; a form shown without them leaves the set as it is.
CUSTOM_SHOWN = "custom_fields_shown"


def company_choices(page) -> list[dict]:
    """The companies a form offers, by name (none when the list cannot be read)."""
    return (page.api.get_or({}, "/companies", {"limit": CHOICES_SIZE, "stats": "false"})
            or {}).get("items") or []


def company_fields(page) -> list[dict]:
    """The store's custom field definitions that apply to companies, for a page that shows
    them (none when they cannot be read: the form then has no custom inputs)."""
    return fields_of(page.api.get_or([], "/custom-fields"), "company")


def company_fields_to_save(page) -> list[dict]:
    """The company definitions a save reads its values by; ApiError when they cannot be read,
    as a save without them would take every value for blank."""
    return fields_of(page.api.get("/custom-fields"), "company")


# -- the form, read and shown -----------------------------------------------------------------

def form_values(company: dict | None) -> dict:
    """What the form shows for a company (empty for a new one): every value as text."""
    company = company or {}
    address = company.get("address") or {}
    custom = company.get("custom_fields") or {}
    return {"name": company.get("name") or "", "domain": company.get("domain") or "",
            "vat_id": company.get("vat_id") or "", "group": company.get("group") or "",
            "address": {part: address.get(part) or "" for part in COMPANY_ADDRESS_PARTS},
            "custom": {key: _custom_text(value) for key, value in custom.items()}}


def _custom_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _custom_value(definition: dict, text: str) -> Any:
    """A typed value as the API takes it; what does not read as its type is sent as typed,
    for customer_sync to refuse naming the field."""
    kind = definition.get("type")
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    if kind == "number":
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return text


def read_form(form, definitions: list[dict]) -> dict:
    """The form's values as typed (bounded), in the shape form_values gives."""
    def text(name: str) -> str:
        return (form.get(name) or "").strip()[:MAX_TEXT]

    shown = form.get(CUSTOM_SHOWN) == "1"
    return {"name": text("name"), "domain": text("domain").lower(), "vat_id": text("vat_id"),
            "group": text("group"),
            "address": {part: text("address." + part) for part in COMPANY_ADDRESS_PARTS},
            "custom": {d["key"]: text(CUSTOM_PREFIX + d["key"]) for d in definitions}
            if shown else {},
            "custom_shown": shown}


def request_body(values: dict, definitions: list[dict], is_new: bool) -> dict:
    """The API's body for the form's values: a new company leaves out what is empty; a change
    sends every field, an emptied one as null (which clears it), the address whole. The custom
    values are sent only when the form showed their inputs, as they replace the whole set."""
    by_key = {d["key"]: d for d in definitions}
    has_address = any(values["address"].values())
    body = {"name": values["name"], "domain": values["domain"] or None,
            "vat_id": values["vat_id"] or None, "group": values["group"] or None,
            "address": dict(values["address"]) if has_address else None}
    if values.get("custom_shown"):
        body["custom_fields"] = {key: _custom_value(by_key[key], value)
                                 for key, value in values["custom"].items()
                                 if value and key in by_key}
    if is_new:
        body = {k: v for k, v in body.items() if k == "name" or v not in (None, {})}
        if has_address:
            body["address"] = {part: v for part, v in values["address"].items() if v}
    return body


def _without_custom(form) -> dict:
    """The form's values when its custom ones cannot be read: shown again without the custom
    inputs, so sending it again leaves the company's custom values as they are."""
    return {**read_form(form, []), "custom_shown": False}


def _as_typed(form) -> dict:
    """A new company's form as typed when the definitions cannot be read: its custom values
    kept by their input's name (bounded), to show again should the definitions load then;
    nothing of a new company can be cleared by them."""
    values = read_form(form, [])
    keys = [name[len(CUSTOM_PREFIX):] for name in form.keys()
            if name.startswith(CUSTOM_PREFIX)][:MAX_CUSTOM_INPUTS]
    values["custom"] = {key: (form.get(CUSTOM_PREFIX + key) or "").strip()[:MAX_TEXT]
                        for key in keys}
    return values


def _form_page(page, values: dict, company_id: str | None, status: int = 200,
               problem: str = "", errors: dict | None = None) -> Response:
    """The form; its custom inputs only when its values hold them (a form sent without them
    is shown again without them, as blank inputs would clear the values on the next save)."""
    is_new = company_id is None
    definitions = company_fields(page) if values.get("custom_shown", True) else []
    title = "New company" if is_new else f"Change {values.get('name') or 'the company'}"
    return page.render("company_form.html", status, title=title, v=values, is_new=is_new,
                       company_id=company_id, errors=errors or {}, problem=problem,
                       groups=page.api.get_or([], "/groups"), definitions=definitions,
                       address_labels=ADDRESS_LABELS)


def _form_errors(exc: ApiError) -> dict[str, str]:
    """The API's refusal keyed by the form's field names (address.city, custom.<key>)."""
    errors = {}
    for key, text in forms.field_errors(exc.problem).items():
        if key.startswith("custom_fields."):
            key = CUSTOM_PREFIX + key[len("custom_fields."):]
        errors[key] = text
    return errors


# -- the pages --------------------------------------------------------------------------------

def company_list(page) -> Response:
    q = (page.request.args.get("q") or "").strip()[:200]
    listing = paged_listing(page, "/companies", "/companies", {"q": q})
    matching = page.api.get_or(None, "/settings/companies")
    return page.render("companies.html", title="Companies", result=listing.result,
                       problem=listing.problem, links=listing.links, q=q, matching=matching)


def company_new(page) -> Response:
    return _form_page(page, form_values(None), None)


def company_create(page) -> Response:
    try:
        definitions = company_fields_to_save(page)
    except ApiError as exc:
        return _form_page(page, _as_typed(page.request.form), None, exc.page_status,
                          f"No company was created: the custom fields could not be read "
                          f"({exc.message()}); try again.")
    values = read_form(page.request.form, definitions)
    try:
        company = page.api.post("/companies", request_body(values, definitions, is_new=True))
    except ApiError as exc:
        return _form_page(page, values, None, exc.page_status,
                          f"No company was created: {exc.message()}", _form_errors(exc))
    page.flash("success", f"Created the company {company['name']}.")
    return page.redirect(PREFIX + "/companies/" + path(company["company_id"])[1:])


def company_page(page, company_id: str) -> Response:
    try:
        company = page.api.get(path("companies", company_id))
    except ApiError as exc:
        return page.render("error.html", exc.page_status, title="Company not available",
                           message=exc.message())
    members = paged_listing(page, path("companies", company_id, "members"),
                            "/companies/" + path(company_id)[1:], {})
    definitions = company_fields(page)
    return page.render("company.html", title=company["name"], co=company,
                       members=members.result, members_problem=members.problem,
                       links=members.links, address_labels=ADDRESS_LABELS,
                       custom_fields=present.custom_field_rows(definitions,
                                                               company.get("custom_fields")))


def company_edit(page, company_id: str) -> Response:
    try:
        company = page.api.get(path("companies", company_id))
    except ApiError as exc:
        return page.render("error.html", exc.page_status, title="Company not available",
                           message=exc.message())
    return _form_page(page, form_values(company), company["company_id"])


def company_save(page, company_id: str) -> Response:
    try:
        definitions = company_fields_to_save(page)
    except ApiError as exc:
        return _form_page(page, _without_custom(page.request.form), company_id, exc.page_status,
                          f"Nothing was saved: the custom fields could not be read "
                          f"({exc.message()}); try again.")
    values = read_form(page.request.form, definitions)
    try:
        page.api.put(path("companies", company_id),
                     request_body(values, definitions, is_new=False))
    except ApiError as exc:
        if exc.status == 404 and not exc.field_errors:
            return page.render("error.html", 404, title="Company not available",
                               message=exc.message())
        return _form_page(page, values, company_id, exc.page_status,
                          f"Nothing was saved: {exc.message()}", _form_errors(exc))
    page.flash("success", f"Saved the company {values['name']}.")
    return page.redirect(PREFIX + "/companies/" + path(company_id)[1:])


def company_delete(page, company_id: str) -> Response:
    back = PREFIX + "/companies/" + path(company_id)[1:]
    if page.request.form.get("understood") != "yes":
        page.flash("error", "Nothing was deleted: tick the box to confirm.")
        return page.redirect(back + "#delete")
    try:
        answer = page.api.delete(path("companies", company_id))
    except ApiError as exc:
        page.flash("error", f"Nothing was deleted: {exc.message()}")
        return page.redirect(back + "#delete")
    page.flash("success", deletion_message(answer))
    return page.redirect(PREFIX + "/companies")


def deletion_message(answer: dict) -> str:
    """What a deletion did: done, or (`finishing`) stopped early with the rest left to the
    background sweep, which a person should not read as done."""
    released = answer.get("members_released", 0)
    members = f"{released} member{'s' if released != 1 else ''}"
    if answer.get("finishing") and not answer.get("deleted"):
        return (f"The company is being deleted; {members} released so far, the rest of its "
                f"members are released in the background.")
    return f"Deleted the company; {members} now belong to none."


def matching_save(page) -> Response:
    wanted = page.request.form.get("match_email_domain") == "yes"
    try:
        page.api.put("/settings/companies", {"match_email_domain": wanted})
    except ApiError as exc:
        page.flash("error", f"The setting was not changed: {exc.message()}")
    else:
        page.flash("success", "Customers now join the company of their email's domain."
                   if wanted else "Customers no longer join companies by their email's domain.")
    return page.redirect(PREFIX + "/companies#matching")


def set_customer_company(page, customer_id: str) -> Response:
    """The customer page's Company card: the company chosen, or none (`company_id` empty)."""
    chosen = (page.request.form.get("company_id") or "").strip()[:64] or None
    back = f"{PREFIX}/customers/{path(customer_id)[1:]}#company"
    try:
        answer = page.api.put(path("customers", customer_id, "company"),
                              {"company_id": chosen})
    except ApiError as exc:
        page.flash("error", f"The company was not changed: {exc.message()}")
        return page.redirect(back)
    if not answer.get("changed"):
        page.flash("info", "The company was already so.")
    else:
        page.flash("success", "Joined the company." if chosen else "Removed from the company.")
    return page.redirect(back)
