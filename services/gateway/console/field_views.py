"""The console's custom fields: the store's page to define, change and delete its fields, and
the customer page's form for one customer's values (docs/custom-fields.md has the rules).
Through the gateway's API as the signed-in key, like every other page: the API judges every
value and names a refusal by its field, and the forms show it beside that field."""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from werkzeug.wrappers import Response

from services.gateway.console import forms
from services.gateway.console.api import ApiError, path

PREFIX = "/console"
TYPES = [("text", "Text"), ("number", "Number"), ("date", "Date"), ("choice", "Choice"),
         ("boolean", "Yes or no")]
# A value's form field is `custom.<key>`, as the import's columns are named.
VALUE_PREFIX = "custom."
# More value fields than this in one form is no form of ours (a store has at most 50 fields).
MAX_VALUE_FIELDS = 100
DELETE_UNDERSTOOD = ("I understand: every customer's value of this field is removed, and the "
                     "other services are told.")
_WHOLE = re.compile(r"-?\d{1,16}\Z")


# -- pure rules of the forms -------------------------------------------------------------------

def number(raw: str) -> Any:
    """A number typed into a form: None when blank, an int or a finite float when it reads as
    one, else the text as typed, for the API to refuse by the field."""
    text = raw.strip()
    if not text:
        return None
    if _WHOLE.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def definition_form(form: Mapping) -> dict:
    """What the definition form holds, as the template shows it back."""
    return {"key": (form.get("key") or "").strip(), "label": (form.get("label") or "").strip(),
            "type": (form.get("type") or "").strip(), "required": form.get("required") == "yes",
            "options": [line.strip() for line in (form.get("options") or "").splitlines()
                        if line.strip()],
            "min": (form.get("min") or "").strip(), "max": (form.get("max") or "").strip(),
            "max_length": (form.get("max_length") or "").strip(),
            "applies_to": (form.get("applies_to") or "customer").strip()}


def definition_body(typed: dict, new: bool) -> dict:
    """The API's body for a definition form: its label, type, `required` and the limits of
    its type (the form says only those are saved). A new field leaves blank limits out; a
    change sends them as null, which clears them."""
    body: dict = {"label": typed["label"], "type": typed["type"],
                  "required": typed["required"]}
    if new:
        body.update(key=typed["key"], applies_to=typed.get("applies_to") or "customer")
    limits: dict = {}
    if typed["type"] == "choice":
        limits["options"] = typed["options"]
    elif typed["type"] == "number":
        limits.update(min=number(typed["min"]), max=number(typed["max"]))
    elif typed["type"] == "text":
        limits["max_length"] = number(typed["max_length"])
    if new:
        limits = {k: v for k, v in limits.items() if v is not None}
    return {**body, **limits}


def shown_value(value: Any) -> str:
    """A stored value as its input shows it (a boolean as the yes/no select's choice)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def value_of(definition: dict | None, raw: str) -> Any:
    """One posted value in its field's type; blank is no value. What does not read as the
    type goes on as typed, and a key the store has no field of as typed too, so the API
    refuses it by the field rather than the console dropping it."""
    kind = (definition or {}).get("type")
    if kind is None:
        return raw
    if kind == "number":
        return number(raw)
    if kind == "boolean":
        return {"": None, "yes": True, "no": False}.get(raw.strip(), raw)
    if kind == "text":
        return raw if raw != "" else None
    return raw.strip() or None


def values_body(form: Any, definitions: list[dict]) -> dict:
    """The customer's values from the form's `custom.<key>` fields, by the store's fields;
    ValueError past MAX_VALUE_FIELDS."""
    by_key = {d.get("key"): d for d in definitions}
    names = [n for n in form.keys() if n.startswith(VALUE_PREFIX)]
    if len(names) > MAX_VALUE_FIELDS:
        raise ValueError(f"custom_fields: at most {MAX_VALUE_FIELDS} values a form")
    return {name[len(VALUE_PREFIX):]: value_of(by_key.get(name[len(VALUE_PREFIX):]),
                                                form.get(name) or "")
            for name in names}


def limits_text(definition: dict) -> str:
    """A definition's limits in words, for the list."""
    kind = definition.get("type")
    if kind == "choice":
        return ", ".join(map(str, definition.get("options") or []))
    if kind == "number":
        low, high = definition.get("min"), definition.get("max")
        if low is None and high is None:
            return "any number"
        if high is None:
            return f"at least {low}"
        if low is None:
            return f"at most {high}"
        return f"{low} to {high}"
    if kind == "text":
        return f"at most {definition.get('max_length') or 500} characters"
    return ""


def _typed_from(definition: dict) -> dict:
    """A stored definition as the form shows it."""
    return {"key": definition.get("key") or "", "label": definition.get("label") or "",
            "type": definition.get("type") or "text",
            "required": bool(definition.get("required")),
            "options": list(definition.get("options") or []),
            "applies_to": definition.get("applies_to") or "customer",
            **{k: shown_value(definition.get(k)) for k in ("min", "max", "max_length")}}


# -- the store's fields ------------------------------------------------------------------------

def _list(page, status: int = 200, typed: dict | None = None, problem: str = "",
          errors: dict | None = None) -> Response:
    definitions, load_problem = [], ""
    try:
        definitions = page.api.get("/custom-fields")
    except ApiError as exc:
        load_problem = exc.message()
    return page.render("custom_fields.html", status, title="Custom fields",
                       definitions=definitions, load_problem=load_problem, types=TYPES,
                       type_labels=dict(TYPES), limits=limits_text,
                       f=typed or {"type": "text", "options": []}, problem=problem,
                       errors=errors or {})


def field_list(page) -> Response:
    return _list(page)


def field_create(page) -> Response:
    """A new field; a refusal is shown on the form, by the field, and nothing is stored."""
    typed = definition_form(page.request.form)
    try:
        made = page.api.post("/custom-fields", definition_body(typed, new=True))
    except ApiError as exc:
        return _list(page, exc.page_status, typed, f"No field was defined: {exc.message()}",
                     forms.field_errors(exc.problem))
    page.flash("success", f"Defined the field {made['label']} ({made['key']}).")
    return page.redirect(PREFIX + "/custom-fields")


def _field(page, key: str, status: int = 200, typed: dict | None = None, problem: str = "",
           errors: dict | None = None) -> Response:
    try:
        definitions = page.api.get("/custom-fields")
    except ApiError as exc:
        return page.render("error.html", exc.page_status, title="Custom field not available",
                           message=exc.message())
    current = next((d for d in definitions if d.get("key") == key), None)
    if current is None:
        return page.render("error.html", 404, title="Custom field not available",
                           message=f"There is no custom field {key[:64]} in this store.")
    return page.render("custom_field.html", status, title=f"Custom field {current['label']}",
                       d=current, f=typed or _typed_from(current), types=TYPES,
                       problem=problem, errors=errors or {}, understood=DELETE_UNDERSTOOD)


def field_page(page, key: str) -> Response:
    return _field(page, key)


def field_edit(page, key: str) -> Response:
    typed = {**definition_form(page.request.form), "key": key}
    try:
        changed = page.api.put(path("custom-fields", key), definition_body(typed, new=False))
    except ApiError as exc:
        return _field(page, key, exc.page_status, typed,
                      f"The field was not changed: {exc.message()}",
                      forms.field_errors(exc.problem))
    page.flash("success", f"Saved the field {changed['label']} ({changed['key']}).")
    return page.redirect(PREFIX + "/custom-fields")


def field_delete(page, key: str) -> Response:
    """Delete, once the box is ticked: every customer's value goes too."""
    back = PREFIX + "/custom-fields/" + path(key)[1:]
    if page.request.form.get("understood") != "yes":
        page.flash("error", "Nothing was deleted: understood: tick the box to confirm.")
        return page.redirect(back + "#delete")
    try:
        answer = page.api.delete(path("custom-fields", key))
    except ApiError as exc:
        page.flash("error", f"The field {key[:64]} was not deleted: {exc.message()}")
        return page.redirect(back + "#delete")
    if not answer.get("deleted"):
        page.flash("success", f"The field {answer['key']} is being deleted: its value was "
                              f"taken off {answer['values_removed']} records so far, and the "
                              "rest follows in the background.")
        return page.redirect(PREFIX + "/custom-fields")
    page.flash("success", f"Deleted the field {answer['key']}: its value was taken off "
                          f"{answer['values_removed']} records.")
    return page.redirect(PREFIX + "/custom-fields")


# -- one customer's values ---------------------------------------------------------------------

def value_inputs(definitions: list[dict], values: dict | None,
                 typed: dict | None = None) -> list[dict]:
    """One input a field, in the store's order, showing what the customer holds (or, after a
    refusal, what was typed)."""
    values = values or {}
    rows = []
    for definition in definitions:
        key = definition.get("key")
        if typed is not None:
            shown = typed.get(VALUE_PREFIX + key, "")
        else:
            shown = shown_value(values.get(key))
        options = list(definition.get("options") or [])
        if definition.get("type") == "choice" and shown and shown not in options:
            options.append(shown)  # held before the options changed: shown, not lost
        rows.append({**definition, "key": key, "shown": shown, "options": options})
    return rows


def values_save(page, customer_id: str) -> Response | dict:
    """Replace the customer's values with the form's. A refusal answers what the customer's
    page needs to show it beside each field the API names (`custom_fields.<key>`), with the
    form as typed: its `status`, `field_problem`, `field_errors` and `field_typed`. Nothing
    is stored then."""
    back = f"{PREFIX}/customers/{path(customer_id)[1:]}#custom-fields"
    form = page.request.form
    try:
        definitions = page.api.get("/custom-fields")
        body = values_body(form, definitions)
        answer = page.api.put(path("customers", customer_id, "custom-fields"), body)
    except ValueError as exc:
        page.flash("error", f"No value was saved: {exc}")
        return page.redirect(back)
    except ApiError as exc:
        typed = {n: (form.get(n) or "")[:2000] for n in form.keys()
                 if n.startswith(VALUE_PREFIX)}
        return {"status": exc.page_status, "field_problem": f"No value was saved: "
                f"{exc.message()}", "field_errors": forms.field_errors(exc.problem),
                "field_typed": typed}
    page.flash("success", "Saved the custom fields." if answer.get("changed")
               else "The custom fields were already so: nothing changed.")
    return page.redirect(back)
