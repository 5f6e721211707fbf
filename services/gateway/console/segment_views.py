"""The console's saved segments: list, create, edit and delete, through the gateway's API as
the signed-in key. Conditions are written one a line, `field op value` (`total_spent gt 10000`;
a list for in and not_in is comma-separated), and segmentation names what it refuses."""
from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from services.gateway.console import forms
from services.gateway.console.api import ApiError, path

PREFIX = "/console"
MAX_CONDITION_LINES = 50
_LISTS = ("in", "not_in")


def _value(text: str) -> Any:
    """A number when it reads as one (money is in minor units), else the text as given."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse_conditions(text: str) -> tuple[list[dict], str | None]:
    """The conditions written one a line, or the first line that is not `field op value`."""
    conditions = []
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) > MAX_CONDITION_LINES:
        return [], f"at most {MAX_CONDITION_LINES} conditions"
    for number, line in enumerate(lines, 1):
        parts = line.split(None, 2)
        if len(parts) != 3:
            return [], f"line {number} is not “field op value”: {line[:80]}"
        field, op, raw = parts
        value = ([_value(v.strip()) for v in raw.split(",") if v.strip()] if op in _LISTS
                 else _value(raw))
        conditions.append({"field": field, "op": op, "value": value})
    if not conditions:
        return [], "write at least one condition"
    return conditions, None


def format_conditions(conditions: list[dict]) -> str:
    def shown(value: Any) -> str:
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    return "\n".join(f"{c['field']} {c['op']} {shown(c['value'])}" for c in conditions or [])


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
               problem: str = "", status: int = 200) -> Response:
    title = "New saved segment" if is_new else f"Saved segment “{values.get('name', '')}”"
    return page.render("segment_edit.html", status, title=title, v=values, is_new=is_new,
                       errors=errors or {}, problem=problem)


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
    conditions, wrong = parse_conditions(values["conditions"])
    if wrong:
        return _edit_page(page, values, is_new, {"conditions": wrong}, status=400,
                          problem="Nothing was saved: correct the fields marked below.")
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
                          problem=f"Nothing was saved: {exc.message()}")
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
