"""The console's saved segments: list, create, edit and delete, through the gateway's API as
the signed-in key. Conditions are written one a line, `field op value` (`total_spent gt 10000`;
a list for in and not_in is comma-separated), and segmentation names what it refuses.

The store's custom fields (`GET /custom-fields`) are offered as `custom.<key>`, each with the
operators of its type; a value is read in its field's type (`custom.account_no eq 123` is
text when the field is text), `is_set` and `is_not_set` take none."""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from services.gateway.console import forms
from services.gateway.console.api import ApiError, path
from services.gateway.schemas import fields_of

PREFIX = "/console"
MAX_CONDITION_LINES = 50
_LISTS = ("in", "not_in")
CUSTOM_PREFIX = "custom."
_NO_VALUE = ("is_set", "is_not_set")
# What segmentation compares for each type of custom field (docs/services/segmentation.md).
CUSTOM_OPERATORS = {
    "text": ("eq", "ne", "contains", "in", "not_in", "is_set", "is_not_set"),
    "choice": ("eq", "ne", "in", "not_in", "is_set", "is_not_set"),
    "number": ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "is_set", "is_not_set"),
    "date": ("before", "after", "on", "is_set", "is_not_set"),
    "boolean": ("eq", "ne", "is_set", "is_not_set"),
}


def _value(text: str, field_type: str | None = None) -> Any:
    """A value read in its custom field's type; without one, a number when it reads as one
    (money is in minor units), else the text as given."""
    if field_type in ("text", "choice", "date"):
        return text
    if field_type == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse_conditions(text: str, custom_types: dict[str, str] | None = None
                     ) -> tuple[list[dict], str | None]:
    """The conditions written one a line, or the first line that is not `field op value`.
    `custom_types` (key to type) reads a custom field's value in its type."""
    conditions = []
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) > MAX_CONDITION_LINES:
        return [], f"at most {MAX_CONDITION_LINES} conditions"
    for number, line in enumerate(lines, 1):
        parts = line.split(None, 2)
        if len(parts) == 2 and parts[1] in _NO_VALUE:
            conditions.append({"field": parts[0], "op": parts[1]})
            continue
        if len(parts) != 3:
            return [], f"line {number} is not “field op value”: {line[:80]}"
        field, op, raw = parts
        field_type = ((custom_types or {}).get(field[len(CUSTOM_PREFIX):])
                      if field.startswith(CUSTOM_PREFIX) else None)
        value = ([_value(v.strip(), field_type) for v in raw.split(",") if v.strip()]
                 if op in _LISTS else _value(raw, field_type))
        conditions.append({"field": field, "op": op, "value": value})
    if not conditions:
        return [], "write at least one condition"
    return conditions, None


def format_conditions(conditions: list[dict]) -> str:
    def shown(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return ", ".join(map(shown, value)) if isinstance(value, list) else str(value)

    return "\n".join(f"{c['field']} {c['op']}" if c["op"] in _NO_VALUE
                     else f"{c['field']} {c['op']} {shown(c['value'])}"
                     for c in conditions or [])


def custom_condition_rows(definitions: Any) -> list[dict]:
    """The store's custom fields as the form offers them: `custom.<key>`, its label and type,
    and the operators that type takes."""
    rows = []
    for definition in definitions if isinstance(definitions, list) else []:
        operators = CUSTOM_OPERATORS.get(definition.get("type"))
        if operators:
            rows.append({"field": CUSTOM_PREFIX + definition["key"],
                         "label": definition.get("label") or definition["key"],
                         "type": definition["type"], "operators": ", ".join(operators),
                         "options": ", ".join(definition.get("options") or [])})
    return rows


def _unavailable(page, exc: ApiError, title: str) -> Response:
    status = exc.status if exc.status in (403, 404) else 502
    return page.render("error.html", status, title=title, message=exc.message())


def segment_list(page) -> Response:
    try:
        segments = page.api.get("/segments")
    except ApiError as exc:
        return _unavailable(page, exc, "Saved segments not available")
    rows = [{**s, "conditions_text": format_conditions(s.get("conditions"))} for s in segments]
    return page.render("segments.html", title="Saved segments", segments=rows)


def _edit_page(page, values: dict, is_new: bool, errors: dict | None = None,
               problem: str = "", status: int = 200, definitions: list | None = None
               ) -> Response:
    title = "New saved segment" if is_new else f"Saved segment “{values.get('name', '')}”"
    if definitions is None:
        definitions = fields_of(page.api.get_or([], "/custom-fields"), "customer")
    return page.render("segment_edit.html", status, title=title, v=values, is_new=is_new,
                       errors=errors or {}, problem=problem,
                       custom_fields=custom_condition_rows(definitions))


def segment_new(page) -> Response:
    return _edit_page(page, {"segment_id": "", "name": "", "match": "all", "conditions": ""},
                      is_new=True)


def segment_edit(page, segment_id: str) -> Response:
    try:
        segment = page.api.get(path("segments", segment_id))
    except ApiError as exc:
        return _unavailable(page, exc, "Saved segment not available")
    return _edit_page(page, {**segment, "conditions": format_conditions(segment["conditions"])},
                      is_new=False)


def segment_save(page) -> Response:
    form = page.request.form
    is_new = form.get("is_new") == "1"
    values = {"segment_id": (form.get("segment_id") or "").strip()[:64],
              "name": (form.get("name") or "").strip(),
              "match": "any" if form.get("match") == "any" else "all",
              "conditions": (form.get("conditions") or "")[:20_000]}
    definitions = fields_of(page.api.get_or([], "/custom-fields"), "customer")
    custom_types = {d["key"]: d["type"] for d in definitions if isinstance(d, dict)}
    conditions, wrong = parse_conditions(values["conditions"], custom_types)
    if wrong:
        return _edit_page(page, values, is_new, {"conditions": wrong}, status=400,
                          problem="Nothing was saved: correct the fields marked below.",
                          definitions=definitions)
    body = {"name": values["name"], "match": values["match"], "conditions": conditions}
    try:
        if is_new:
            saved = page.api.post("/segments", body)
        else:
            saved = page.api.put(path("segments", values["segment_id"]), body)
    except ApiError as exc:
        errors = forms.field_errors(exc.problem)
        if any(k.startswith("conditions") for k in errors):
            errors["conditions"] = "; ".join(f"{k}: {v}" for k, v in errors.items()
                                             if k.startswith("conditions"))
        return _edit_page(page, values, is_new, errors,
                          status=exc.status if exc.status < 500 else 502,
                          problem=f"Nothing was saved: {exc.message()}",
                          definitions=definitions)
    page.flash("success", f"Saved segment “{saved['name']}” saved.")
    return page.redirect(PREFIX + "/segments")


def segment_delete(page, segment_id: str) -> Response:
    try:
        page.api.delete(path("segments", segment_id))
    except ApiError as exc:
        page.flash("error", f"The saved segment was not deleted: {exc.message()}")
    else:
        page.flash("success", "Saved segment deleted.")
    return page.redirect(PREFIX + "/segments")
