"""Templates, workflows, the send log and bulk sends: notifications', over the API."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import Context, Param, Reply, Route


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


def send_log(ctx: Context) -> Reply:
    return Reply(ctx.call("notifications", "send_log", ctx.store_id, ctx.path["customer_id"],
                          ctx.query["limit"]))


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


TEMPLATE = s.obj({"slug": s.STRING}, {"channel": s.STRING, "subject": s.NULLABLE_STRING})
_N = "/notifications"

ROUTES = [
    Route("GET", _N + "/templates", list_templates, "Message templates", "notifications",
          responses={200: {"type": "array", "items": TEMPLATE}}),
    Route("GET", _N + "/templates/<slug>", get_template, "A template", "notifications",
          responses={200: TEMPLATE}),
    Route("PUT", _N + "/templates/<slug>", save_template, "Create or change a template (its "
          "syntax and variables are checked)", "notifications", scope="write",
          body={"type": "object"}, responses={200: TEMPLATE}),
    Route("DELETE", _N + "/templates/<slug>", delete_template, "Delete a template",
          "notifications", scope="write", responses={200: s.ANY_OBJECT}),
    Route("POST", _N + "/preview", preview, "Render a template (saved, by slug, or unsaved) "
          "for a customer or sample data", "notifications",
          body=s.obj({"template": {"type": ["string", "object"]}},
                     {"customer_id": s.STRING}, additionalProperties=False),
          responses={200: s.ANY_OBJECT}),
    Route("GET", _N + "/workflows", list_workflows, "Workflows", "notifications",
          responses={200: {"type": "array", "items": s.ANY_OBJECT}}),
    Route("POST", _N + "/workflows", save_workflow, "Create or replace a workflow",
          "notifications", scope="write", body={"type": "object"},
          responses={201: s.ANY_OBJECT}),
    Route("DELETE", _N + "/workflows/<workflow_id>", delete_workflow, "Delete a workflow",
          "notifications", scope="write", responses={200: s.ANY_OBJECT}),
    Route("GET", "/customers/<customer_id>/messages", send_log, "Messages sent to a customer, "
          "newest first", "notifications",
          query=[Param("limit", "most entries", "integer", default=100, minimum=1, maximum=500)],
          responses={200: {"type": "array", "items": s.ANY_OBJECT}}),
    Route("POST", _N + "/bulk-sends", bulk_send, "Send a template to an audience (consent "
          "respected)", "notifications", scope="write",
          body=s.obj({"audience": {"type": "object"}, "template": s.STRING},
                     {"when": s.TIME, "purpose": {"enum": ["marketing", "transactional"]},
                      "bulk_id": s.STRING}, additionalProperties=False),
          responses={202: s.ANY_OBJECT}),
    Route("GET", _N + "/bulk-sends/<bulk_id>", bulk_status, "A bulk send's progress",
          "notifications", responses={200: s.ANY_OBJECT}),
    Route("GET", _N + "/settings", get_settings, "Sender, quiet hours, weekly cap, time zone",
          "notifications", responses={200: s.ANY_OBJECT}),
    Route("PUT", _N + "/settings", save_settings, "Change the store's notification settings",
          "notifications", scope="admin", body={"type": "object"}, responses={200: s.ANY_OBJECT}),
]
