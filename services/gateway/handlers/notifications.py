"""Templates, workflows, the send log and bulk sends: notifications', over the API."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import CURSOR_PATTERN, Context, Param, Reply, Route
from shared.events.notifications import MAX_TRIGGER_AGE_HOURS
from shared.send_log import HELD_REASONS, SEND_FILTERS



def list_templates(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "list_templates", ctx.store_id))


def get_template(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "get_template", ctx.store_id, ctx.path["slug"]))


def save_template(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "save_template", ctx.store_id,
                          {**ctx.body, "slug": ctx.path["slug"]}))


def delete_template(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "delete_template", ctx.store_id, ctx.path["slug"]))


def preview(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "preview", ctx.store_id, ctx.body["template"],
                          ctx.body.get("customer_id")))


def list_workflows(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "list_workflows", ctx.store_id))


def save_workflow(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "save_workflow", ctx.store_id, ctx.body), 201)


def delete_workflow(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "delete_workflow", ctx.store_id,
                          ctx.path["workflow_id"]))


_INTERNAL_SEND_FIELDS = ("_id", "lease_until", "owner", "outbox")


def send_log(ctx: Context) -> Reply:
    """notifications answers its stored send documents; the API names the send `send_id` and
    leaves out the send loop's own bookkeeping (its claim on the send)."""
    entries = ctx.call("notifications", "send_log", ctx.store_id, ctx.path["customer_id"],
                       ctx.query["limit"])
    return Reply([_send_view(entry) for entry in entries])


def _send_view(entry: dict) -> dict:
    return {"send_id": entry.get("_id"),
            **{k: v for k, v in entry.items() if k not in _INTERNAL_SEND_FIELDS}}


def list_sends(ctx: Context) -> Reply:
    """The store's whole send log, a page at a time (the console's send log page)."""
    filters = {k: ctx.query[k] for k in SEND_FILTERS if ctx.query[k]}
    page = ctx.call("notifications", "list_sends", ctx.store_id, filters,
                    {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]})
    return Reply({"items": [_send_view(e) for e in page["items"]],
                  "next_cursor": page.get("next_cursor")})


def bulk_send(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("notifications", "bulk_send", ctx.store_id, body["audience"],
                          body["template"], body.get("when"), body.get("purpose", "marketing"),
                          body.get("bulk_id") or ctx.request.headers.get("Idempotency-Key")),
                 202)


def bulk_status(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "bulk_status", ctx.store_id, ctx.path["bulk_id"]))


def get_settings(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "get_store_settings", ctx.store_id))


def save_settings(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "save_store_settings", ctx.store_id, ctx.body))


SLUG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}
CHANNEL = {"enum": ["email", "sms"]}
PURPOSE = {"enum": ["marketing", "transactional"]}
_PARTS = {"subject": {**s.STRING, "description": "email"},
          "html": {**s.STRING, "description": "email; autoescaped"},
          "text": {**s.STRING, "description": "email"},
          "body": {**s.STRING, "description": "sms"}}
TEMPLATE = s.obj({"slug": s.STRING, "channel": CHANNEL, "name": s.STRING,
                  "description": s.STRING}, _PARTS,
                 description="jinja2: an email template has subject, html and text; an SMS "
                             "template has body")
TEMPLATE_BODY = s.obj({"channel": CHANNEL},
                      {"name": {"type": "string", "maxLength": 200},
                       "description": {"type": "string", "maxLength": 2000},
                       "slug": {**SLUG, "description": "ignored: the path names the template"},
                       **_PARTS}, additionalProperties=False,
                      description="syntax and variables are checked; an error names the part "
                                  "and line (docs/services/notifications.md lists the variables)")
DRAFT_TEMPLATE = {**TEMPLATE_BODY, "required": ["slug", "channel"]}
RENDERED = s.obj({"subject": s.NULLABLE_STRING, "html": s.NULLABLE_STRING, "text": s.STRING},
                 description="an SMS renders as text only")
WORKFLOW_FIELDS = {
    "workflow_id": SLUG, "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "enabled": s.BOOLEAN,
    "trigger": {"type": "object", "description": "{\"event\": ...} with its condition "
                "(an order's status: {\"event\": \"order.updated\", \"to_status\": "
                "\"completed\"}), or {\"date\": \"birthday\" | \"days_since_last_order\", "
                "\"days\": n}"},
    "delay_seconds": {"type": "integer", "minimum": 0, "maximum": 90 * 86400},
    "channel": CHANNEL, "template": s.STRING, "purpose": PURPOSE,
    "cancel": {"type": "array", "items": s.obj({"if": {"enum": ["tag_removed",
                                                                 "order_placed"]}},
                                               {"tag": s.STRING})},
    "coupon": s.nullable(s.obj(
        {"type": {"enum": ["percent", "fixed"]},
         "amount": {"type": "integer", "minimum": 1, "maximum": 10 ** 12,
                    "description": "percent: a whole percentage, 1-100; fixed: minor units "
                                   "of currency"},
         "currency": {"type": "string", "pattern": "^[A-Z]{3}$",
                      "description": "the shop's currency (ISO-4217)"},
         "validity_days": {"type": "integer", "minimum": 1, "maximum": 365}},
        {"minimum_spend": {"type": ["integer", "null"], "minimum": 0, "maximum": 10 ** 12,
                           "description": "minor units of currency"},
         "individual_use": s.BOOLEAN,
         "prefix": {"type": ["string", "null"], "pattern": "^[a-z2-9]{1,12}$",
                    "description": "of the code; null: NOTIFY_COUPON_PREFIX"}},
        additionalProperties=False,
        description="a unique single-use coupon made at the shop for each message "
                    "(docs/notification-coupons.md)"))}
WORKFLOW = s.obj({k: v for k, v in WORKFLOW_FIELDS.items() if k != "coupon"},
                 {"coupon": WORKFLOW_FIELDS["coupon"]})  # absent: no coupon
WORKFLOW_BODY = s.obj({k: WORKFLOW_FIELDS[k] for k in ("name", "trigger", "channel", "template",
                                                      "purpose")},
                      {k: WORKFLOW_FIELDS[k] for k in ("workflow_id", "enabled",
                                                      "delay_seconds", "cancel", "coupon")},
                      additionalProperties=False,
                      description="see docs/services/notifications.md; a workflow_id replaces that "
                                  "workflow")
SEND = s.obj({"send_id": s.STRING, "customer_id": s.STRING, "channel": CHANNEL,
              "template": s.STRING, "purpose": PURPOSE, "status": s.STRING,
              "attempts": {"type": "array", "items": s.ANY_OBJECT}, "created_at": s.TIME},
             {"workflow_id": s.NULLABLE_STRING, "bulk_id": s.NULLABLE_STRING,
              "due_at": s.NULLABLE_TIME, "to": s.NULLABLE_STRING,
              "subject": s.NULLABLE_STRING,
              "reason": {**s.NULLABLE_STRING, "description": "why it was held, refused, "
                         "cancelled or failed; while it waits for a retry, why the last "
                         "attempt failed"},
              "held_reason": {"type": ["string", "null"], "enum": [
                  *HELD_REASONS, None], "description": "why it was held back or refused, "
                  "as a word; `reason` says it in full"},
              "provider_error": {**s.NULLABLE_STRING, "description": "the mail server's or "
                                 "Twilio's latest failure, retried or final"},
              "delivery_status": s.NULLABLE_STRING,
              "delivery_error": {**s.NULLABLE_STRING, "description": "Twilio's error code "
                                 "of a failed delivery"}})
BULK_STATUS = s.obj({"bulk_id": s.STRING, "state": s.STRING, "template": s.STRING,
                     "channel": CHANNEL, "purpose": PURPOSE, "total": s.INTEGER,
                     "done": s.INTEGER,
                     "by_status": {"type": "object", "additionalProperties": s.INTEGER}})
_HHMM = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
_SETTINGS_FIELDS = {
    "name": s.STRING, "url": s.STRING,
    "timezone": {**s.STRING, "description": "an IANA zone, e.g. Europe/Berlin"},
    "quiet_start": {**_HHMM, "description": "SMS quiet hours, store time; start = end: none"},
    "quiet_end": _HHMM,
    "weekly_marketing_cap": {"type": "integer", "minimum": 0, "maximum": 100},
    "max_trigger_age_hours": {"type": "integer", "minimum": 0, "maximum": MAX_TRIGGER_AGE_HOURS,
                              "description": "an order or sign-up older than this when it "
                              "arrives (a backfill of history) starts no workflow; 0: no limit"},
    "from_email": {**s.STRING, "description": "empty: the service's MAIL_FROM"},
    "unsubscribe_mailto": {**s.STRING, "description": "a mailbox the store reads and acts on, "
                           "offered as a mailto in List-Unsubscribe beside the https link; "
                           "empty: the link alone"},
    "sms_opt_out_text": {**s.STRING, "maxLength": 60, "description": "appended to every "
                         "marketing SMS, e.g. 'Reply STOP to opt out'; empty: nothing"},
    "email_double_opt_in": {**s.BOOLEAN, "description": "email marketing consent from "
                            "checkout, import or an operator waits until the customer confirms "
                            "it through a link in a confirmation email"}}
SETTINGS = s.obj(_SETTINGS_FIELDS)
SETTINGS_BODY = s.obj({}, _SETTINGS_FIELDS, additionalProperties=False,
                      description="the whole settings: a field left out takes its default")
AUDIENCE = {"type": "object", "minProperties": 1, "maxProperties": 1,
            "properties": {"segment": s.STRING, "group": s.STRING, "tag": s.STRING,
                           "saved_segment": {**s.STRING, "description": "a saved segment's id"},
                           "customer_ids": {"type": "array", "minItems": 1, "items": s.STRING}},
            "additionalProperties": False,
            "description": "exactly one of segment, saved_segment, group, tag or "
                           "customer_ids"}
_N = "/notifications"

ROUTES = [
    Route("GET", _N + "/templates", list_templates, "Message templates", "notifications",
          responses={200: {"type": "array", "items": TEMPLATE}}),
    Route("GET", _N + "/templates/<slug>", get_template, "A template", "notifications",
          responses={200: TEMPLATE}),
    Route("PUT", _N + "/templates/<slug>", save_template, "Create or change a template (its "
          "syntax and variables are checked)", "notifications", scope="write",
          body=TEMPLATE_BODY, responses={200: TEMPLATE}),
    Route("DELETE", _N + "/templates/<slug>", delete_template, "Delete a template",
          "notifications", scope="write", responses={200: s.DELETED},
          description="A shipped default stays (a store's own version of it goes); a template "
                      "that a workflow uses is refused."),
    Route("POST", _N + "/preview", preview, "Render a template (saved, by slug, or unsaved) "
          "for a customer or sample data", "notifications",
          body=s.obj({"template": {"anyOf": [{**s.STRING, "description": "a saved "
                                                "template's slug"}, DRAFT_TEMPLATE]}},
                     {"customer_id": {**s.STRING, "description": "absent: sample data"}},
                     additionalProperties=False),
          responses={200: RENDERED}),
    Route("GET", _N + "/workflows", list_workflows, "Workflows", "notifications",
          responses={200: {"type": "array", "items": WORKFLOW}}),
    Route("POST", _N + "/workflows", save_workflow, "Create or replace a workflow",
          "notifications", scope="write", body=WORKFLOW_BODY, responses={201: WORKFLOW}),
    Route("DELETE", _N + "/workflows/<workflow_id>", delete_workflow, "Delete a workflow "
          "(its scheduled sends are cancelled)", "notifications", scope="write",
          responses={200: s.obj({"deleted": s.STRING, "cancelled_sends": s.INTEGER})}),
    Route("GET", "/customers/<customer_id>/messages", send_log, "Messages sent to a customer, "
          "newest first", "notifications",
          query=[Param("limit", "most entries", "integer", default=100, minimum=1, maximum=500)],
          responses={200: {"type": "array", "items": SEND}}),
    Route("GET", _N + "/sends", list_sends, "The store's send log, newest first",
          "notifications",
          query=[Param("channel", "only this channel", enum=("email", "sms")),
                 Param("status", "only sends in this status (scheduled, sending, sent, "
                       "failed, cancelled, ...)", max_length=40),
                 Param("template", "only this template's sends", max_length=64),
                 Param("customer_id", "only sends to this customer"),
                 Param("workflow_id", "only this workflow's sends", max_length=64),
                 Param("held_reason", "only sends held back for this reason",
                       enum=HELD_REASONS),
                 Param("limit", "page size", "integer", default=50, minimum=1, maximum=500),
                 Param("cursor", "the previous page's next_cursor (opaque)", max_length=2000,
                       pattern=CURSOR_PATTERN)],
          responses={200: s.page_of(SEND)}),
    Route("POST", _N + "/bulk-sends", bulk_send, "Send a template to an audience (consent "
          "respected)", "notifications", scope="write",
          body=s.obj({"audience": AUDIENCE, "template": s.STRING},
                     {"when": s.TIME, "purpose": {**PURPOSE, "default": "marketing"},
                      "bulk_id": {**s.STRING, "description": "or an Idempotency-Key header: "
                                  "sent again, nobody gets the message twice"}},
                     additionalProperties=False),
          responses={202: BULK_STATUS}),
    Route("GET", _N + "/bulk-sends/<bulk_id>", bulk_status, "A bulk send's progress",
          "notifications", responses={200: BULK_STATUS}),
    Route("GET", _N + "/settings", get_settings, "Sender, quiet hours, weekly cap, time zone",
          "notifications", responses={200: SETTINGS}),
    Route("PUT", _N + "/settings", save_settings, "Change the store's notification settings",
          "notifications", scope="admin", body=SETTINGS_BODY, responses={200: SETTINGS}),
]
