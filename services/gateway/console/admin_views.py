"""The console's store pages: the loyalty programme, message templates (with live preview),
workflows, the send log, the GDPR request queue and the reports. Like the customer pages, each
goes through the gateway's own API as the signed-in key, so the API's scopes and validation
decide, and its refusals are shown (next to the fields they name, where they name one)."""
from __future__ import annotations

import json

from werkzeug.wrappers import Response

from services.gateway.console import charts, forms, present
from services.gateway.console.api import ApiError, path
from services.gateway.console.listing import paged_listing
from services.gateway.handlers.loyalty import PROGRAMME_BODY
from shared.send_log import SEND_FILTERS
from shared.times import as_utc, utcnow

PREFIX = "/console"
SEND_STATUSES = ("scheduled", "sending", "sent", "failed", "refused", "cancelled")
# The send log's filters the page offers: all but the workflow, which it has no field for.
LOG_FILTERS = tuple(k for k in SEND_FILTERS if k != "workflow_id")
# Why a send was held back, as the send log's held_reason says it.
HELD_LABELS = {"no_consent": "no consent", "suppressed": "suppressed",
               "weekly_cap": "weekly cap", "quiet_hours": "quiet hours",
               "cancelled": "cancelled", "waiting_for_contact": "waiting for contact details",
               "customer_inactive": "customer deleted or erased",
               "no_address": "no address"}
GDPR_STATES = ("received", "verified", "in_progress", "completed", "rejected")
PERIODS = (("day", "Day"), ("week", "Week"), ("month", "Month"))


def _unavailable(page, exc: ApiError, title: str) -> Response:
    status = exc.status if exc.status in (403, 404) else 502
    return page.render("error.html", status, title=title, message=exc.message())


def _refused(page, title: str, scope: str) -> Response:
    return page.render("error.html", 403, title=title,
                       message=f"This page needs an API key with the {scope} scope.")


# -- the loyalty programme -------------------------------------------------------------------

def loyalty_page(page) -> Response:
    try:
        programme = page.api.get("/loyalty/programme")
    except ApiError as exc:
        return _unavailable(page, exc, "Loyalty programme not available")
    return _programme_page(page, programme, forms.programme_form(programme), {})


def _programme_page(page, programme: dict, values: dict, errors: dict, status: int = 200,
                    problem: str = "") -> Response:
    return page.render("loyalty.html", status, title="Loyalty programme", programme=programme,
                       v=forms.with_blank_tiers(values), errors=errors, problem=problem,
                       integers=forms.programme_fields(programme)[0],
                       flags=forms.programme_fields(programme)[1],
                       statuses=forms.EARNING_STATUS_CHOICES)


def loyalty_save(page) -> Response:
    try:
        current = page.api.get("/loyalty/programme")
    except ApiError as exc:
        return _unavailable(page, exc, "Loyalty programme not available")
    body, shown, errors = forms.parse_programme(page.request.form, current)
    if errors:
        return _programme_page(page, current, shown, errors, 400,
                               "Nothing was saved: correct the fields marked below.")
    try:
        page.api.put("/loyalty/programme", forms.keep_unshown(
            current, body, PROGRAMME_BODY["properties"]))
    except ApiError as exc:
        return _programme_page(page, current, shown, forms.field_errors(exc.problem),
                               exc.status if exc.status < 500 else 502,
                               f"Nothing was saved: {exc.detail}")
    page.flash("success", "Loyalty programme saved.")
    return page.redirect(PREFIX + "/loyalty")


# -- templates --------------------------------------------------------------------------------

def template_list(page) -> Response:
    try:
        templates = page.api.get("/notifications/templates")
    except ApiError as exc:
        return _unavailable(page, exc, "Templates not available")
    templates = sorted(templates, key=lambda t: (t.get("channel", ""), t.get("slug", "")))
    return page.render("templates.html", title="Message templates", templates=templates)


def template_new(page) -> Response:
    channel = page.request.args.get("channel", "email")
    values = {"slug": "", "channel": channel if channel in forms.TEMPLATE_PARTS else "email",
              "name": "", "description": "", "subject": "", "html": "", "text": "", "body": ""}
    return _template_page(page, values, is_new=True)


def template_edit(page, slug: str) -> Response:
    try:
        template = page.api.get(path("notifications", "templates", slug))
    except ApiError as exc:
        return _unavailable(page, exc, "Template not available")
    values = {k: template.get(k) or "" for k in ("slug", "channel", "name", "description",
                                                 "subject", "html", "text", "body")}
    return _template_page(page, values, is_new=False, preview=_preview(page, values)[0])


def _template_page(page, values: dict, is_new: bool, errors: dict | None = None,
                   preview: dict | None = None, preview_error: str = "", problem: str = "",
                   status: int = 200) -> Response:
    return page.render("template_edit.html", status,
                       title="New template" if is_new else f"Template {values['slug']}",
                       v=values, is_new=is_new, errors=errors or {}, preview=preview,
                       preview_error=preview_error, problem=problem)


def _draft(values: dict) -> dict:
    channel = values.get("channel") if values.get("channel") in forms.TEMPLATE_PARTS else "email"
    slug = values.get("slug") or ""
    draft = {"slug": slug if forms._SLUG.match(slug) else "draft", "channel": channel}
    draft.update({p: values.get(p) or "" for p in forms.TEMPLATE_PARTS[channel]})
    return draft


def _preview(page, values: dict) -> tuple[dict | None, str, dict]:
    """The API's rendering of the unsaved template with sample data: (parts, error, errors)."""
    try:
        return page.api.post("/notifications/preview", {"template": _draft(values)}), "", {}
    except ApiError as exc:
        return None, exc.detail, forms.field_errors(exc.problem)


def _template_values(form) -> dict:
    return {k: form.get(k) or "" for k in ("slug", "channel", "name", "description", "subject",
                                           "html", "text", "body")}


def template_preview(page) -> Response:
    """For the page's script: the preview as JSON, refreshed as the template is typed."""
    values = _template_values(page.request.form)
    rendered, error, errors = _preview(page, values)
    body = {"ok": rendered is not None, "rendered": rendered, "error": error, "errors": errors}
    return Response(json.dumps(body), mimetype="application/json")


def template_save(page) -> Response:
    form = page.request.form
    values = _template_values(form)
    is_new = form.get("is_new") == "1"
    if form.get("op") == "preview":  # the Preview button, for browsers without script
        rendered, error, errors = _preview(page, values)
        return _template_page(page, values, is_new, preview=rendered, preview_error=error)
    slug, body, errors = forms.template_body(form)
    if errors:
        return _template_page(page, values, is_new, errors, status=400,
                              problem="Nothing was saved: correct the fields marked below.")
    try:
        page.api.put(path("notifications", "templates", slug), body)
    except ApiError as exc:
        return _template_page(page, values, is_new, forms.field_errors(exc.problem),
                              status=exc.status if exc.status < 500 else 502,
                              problem=f"Nothing was saved: {exc.message()}")
    page.flash("success", f"Template {slug} saved.")
    return page.redirect(f"{PREFIX}/templates/{path(slug)[1:]}")


def template_delete(page, slug: str) -> Response:
    try:
        page.api.delete(path("notifications", "templates", slug))
    except ApiError as exc:
        page.flash("error", f"Template {slug} was not deleted: {exc.message()}")
    else:
        page.flash("success", f"Template {slug} deleted.")
    return page.redirect(PREFIX + "/templates")


# -- workflows --------------------------------------------------------------------------------

def _workflows(page) -> list[dict]:
    return page.api.get("/notifications/workflows")


def workflow_list(page) -> Response:
    try:
        workflows = sorted(_workflows(page), key=lambda w: w.get("name", "").lower())
    except ApiError as exc:
        return _unavailable(page, exc, "Workflows not available")
    rows = [{**w, "trigger_text": forms.trigger_summary(w.get("trigger") or {}),
             "delay_text": forms.delay_text(int(w.get("delay_seconds") or 0))}
            for w in workflows]
    return page.render("workflows.html", title="Workflows", workflows=rows)


def _workflow_page(page, values: dict, is_new: bool, errors: dict | None = None,
                   problem: str = "", status: int = 200) -> Response:
    templates, saved_segments = [], []
    try:
        templates = page.api.get("/notifications/templates")
    except ApiError:
        pass
    try:
        saved_segments = page.api.get("/segments")
    except ApiError:
        pass
    return page.render("workflow_edit.html", status, saved_segments=saved_segments,
                       title="New workflow" if is_new else f"Workflow {values['name']}",
                       v=values, is_new=is_new, errors=errors or {}, problem=problem,
                       triggers=forms.TRIGGER_CHOICES, segments=forms.SEGMENT_CHOICES,
                       units=list(forms.DELAY_UNITS), segment_labels=present.SEGMENT_LABELS,
                       order_statuses=forms.ORDER_STATUS_CHOICES,
                       reward_kinds=forms.REWARD_KIND_CHOICES,
                       points_kinds=forms.POINTS_KIND_CHOICES,
                       coupon_types=forms.COUPON_TYPE_CHOICES,
                       templates=sorted(templates, key=lambda t: t.get("slug", "")))


def workflow_new(page) -> Response:
    return _workflow_page(page, forms.workflow_form(None), is_new=True)


def workflow_edit(page, workflow_id: str) -> Response:
    try:
        found = [w for w in _workflows(page) if w.get("workflow_id") == workflow_id]
    except ApiError as exc:
        return _unavailable(page, exc, "Workflows not available")
    if not found:
        return page.render("error.html", 404, title="Workflow not found",
                           message=f"There is no workflow {workflow_id}.")
    return _workflow_page(page, forms.workflow_form(found[0]), is_new=False)


def workflow_save(page) -> Response:
    body, shown, errors = forms.parse_workflow(page.request.form)
    is_new = page.request.form.get("is_new") == "1"
    if errors:
        return _workflow_page(page, shown, is_new, errors, status=400,
                              problem="Nothing was saved: correct the fields marked below.")
    try:
        saved = page.api.post("/notifications/workflows", body)
    except ApiError as exc:
        return _workflow_page(page, shown, is_new, forms.field_errors(exc.problem),
                              status=exc.status if exc.status < 500 else 502,
                              problem=f"Nothing was saved: {exc.message()}")
    page.flash("success", f"Workflow “{saved['name']}” saved"
                          f"{'' if saved.get('enabled') else ' (disabled)'}.")
    return page.redirect(PREFIX + "/workflows")


WORKFLOW_BODY_KEYS = ("workflow_id", "name", "enabled", "trigger", "delay_seconds", "channel",
                      "template", "purpose", "cancel", "coupon")


def workflow_toggle(page, workflow_id: str) -> Response:
    """Enable or disable: the API replaces a workflow whole, so the rest is sent as it is."""
    try:
        found = [w for w in _workflows(page) if w.get("workflow_id") == workflow_id]
        if not found:
            page.flash("error", f"There is no workflow {workflow_id}.")
            return page.redirect(PREFIX + "/workflows")
        body = {k: found[0][k] for k in WORKFLOW_BODY_KEYS if k in found[0]}
        body["enabled"] = page.request.form.get("enabled") == "true"
        saved = page.api.post("/notifications/workflows", body)
    except ApiError as exc:
        page.flash("error", f"Nothing was changed: {exc.message()}")
    else:
        page.flash("success", f"Workflow “{saved['name']}” "
                              f"{'enabled' if saved['enabled'] else 'disabled'}.")
    return page.redirect(PREFIX + "/workflows")


def workflow_delete(page, workflow_id: str) -> Response:
    try:
        answer = page.api.delete(path("notifications", "workflows", workflow_id))
    except ApiError as exc:
        page.flash("error", f"The workflow was not deleted: {exc.message()}")
    else:
        page.flash("success", f"Workflow deleted; {answer.get('cancelled_sends', 0)} scheduled "
                              "message(s) cancelled.")
    return page.redirect(PREFIX + "/workflows")


# -- the send log -----------------------------------------------------------------------------

def send_log(page) -> Response:
    args = page.request.args
    state = {k: (args.get(k) or "").strip()[:200] for k in LOG_FILTERS}
    if state["channel"] not in ("", "email", "sms"):
        state["channel"] = ""
    if state["held_reason"] not in HELD_LABELS:
        state["held_reason"] = ""
    limit = args.get("limit", "50")
    state["limit"] = limit if limit in ("25", "50", "100") else "50"
    listing = paged_listing(page, "/notifications/sends", "/messages", state,
                            lambda name, value: bool(value) and (name, value) != ("limit", "50"))
    templates = []
    try:
        templates = sorted(t["slug"] for t in page.api.get("/notifications/templates"))
    except ApiError:
        pass
    return page.render("messages.html", title="Send log", state=state, result=listing.result,
                       problem=listing.problem, links=listing.links, statuses=SEND_STATUSES,
                       held_labels=HELD_LABELS,
                       templates=templates, filtered=any(state[k] for k in LOG_FILTERS))


# -- GDPR requests ----------------------------------------------------------------------------

def gdpr_queue(page) -> Response:
    if not page.may("gdpr"):
        return _refused(page, "GDPR requests", "gdpr")
    state = page.request.args.get("state", "")
    state = state if state in GDPR_STATES else ""
    try:
        requests = page.api.get("/gdpr/requests", [("state", state)] if state else [])
    except ApiError as exc:
        return _unavailable(page, exc, "GDPR requests not available")
    # Whether a request is overdue is the gdpr service's word (its clock); the days left of
    # the others are only a reading aid.
    now = utcnow()
    for request in requests:
        due = as_utc(request.get("due_at"))
        request["days_left"] = (due - now).days if due else None
    return page.render("gdpr.html", title="GDPR requests", requests=requests, state=state,
                       states=GDPR_STATES,
                       overdue=sum(1 for r in requests if r.get("overdue")))


def _gdpr_act(page, request_id: str, call, success: str) -> Response:
    if not page.may("gdpr"):
        return _refused(page, "GDPR requests", "gdpr")
    try:
        call()
    except ApiError as exc:
        page.flash("error", exc.message())
    except ValueError as exc:
        page.flash("error", str(exc))
    else:
        page.flash("success", success)
    back = page.request.form.get("state", "")
    return page.redirect(PREFIX + "/gdpr" + (f"?state={back}" if back in GDPR_STATES else ""))


def gdpr_verify(page, request_id: str) -> Response:
    note = (page.request.form.get("note") or "").strip()
    return _gdpr_act(page, request_id, lambda: page.api.post(
        path("gdpr", "requests", request_id, "verify"), {"note": note} if note else {}),
        "Identity confirmed: the request is being worked.")


def gdpr_reject(page, request_id: str) -> Response:
    reason = (page.request.form.get("reason") or "").strip()

    def call():
        if not reason:
            raise ValueError("Give the reason for refusing the request.")
        return page.api.post(path("gdpr", "requests", request_id, "reject"), {"reason": reason})
    return _gdpr_act(page, request_id, call, "Request refused.")


def gdpr_export(page, request_id: str) -> Response:
    if not page.may("gdpr"):
        return _refused(page, "GDPR requests", "gdpr")
    try:
        document = page.api.get(path("gdpr", "requests", request_id, "export"))
    except ApiError as exc:
        return _unavailable(page, exc, "Export not available")
    safe = "".join(ch for ch in request_id if ch.isalnum() or ch in "-_")[:80] or "export"
    return Response(json.dumps(document, indent=2), mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="gdpr-{safe}.json"'})


# -- reports ----------------------------------------------------------------------------------

def reports(page) -> Response:
    period = page.request.args.get("period", "month")
    period = period if period in dict(PERIODS) else "month"
    try:
        report = page.api.get("/reports", [("period", period)])
    except ApiError as exc:
        return _unavailable(page, exc, "Reports not available")
    new = [(p["period"], p["count"]) for p in report.get("new_customers") or []]
    segments = [(present.SEGMENT_LABELS.get(k, k), v)
                for k, v in sorted((report.get("segment_sizes") or {}).items(),
                                   key=lambda kv: (-kv[1], kv[0]))]
    return page.render(
        "reports.html", title="Reports", report=report, period=period, periods=PERIODS,
        new_chart=charts.column_chart(new), new_points=new,
        segment_chart=charts.bar_list(segments), segment_rows=segments,
        repeat=charts.share_bar(report.get("repeat_purchase_rate")),
        top_share=charts.share_bar(report.get("top_10_percent_revenue_share")))
