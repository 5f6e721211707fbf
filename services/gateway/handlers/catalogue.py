"""Tags, groups, saved segments, rules and reports: segmentation's, over the API. Bodies are
checked for shape here and for meaning by segmentation, which names the failing field."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.routing import Context, Param, Reply, Route


def list_tags(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_tags", ctx.store_id))


def list_groups(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_groups", ctx.store_id))


def save_group(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "save_group", ctx.store_id,
                          {**ctx.body, "slug": ctx.path["slug"]}))


def list_segments(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_segments", ctx.store_id))


def save_segment(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "save_segment", ctx.store_id, ctx.body), 201)


def segment_members(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "segment_members", ctx.store_id, ctx.path["segment_id"],
                          {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]}))


def list_rules(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_rules", ctx.store_id))


def save_rule(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "save_rule", ctx.store_id, ctx.body), 201)


def delete_rule(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "delete_rule", ctx.store_id, ctx.path["rule_id"]))


def report(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "report", ctx.store_id, ctx.query["period"]))


GROUP = s.obj({"slug": s.STRING, "name": s.STRING},
              {"description": s.STRING, "discount_percent": s.NULLABLE_STRING,
               "free_shipping_threshold": {"type": ["integer", "null"]},
               "payment_terms_days": {"type": ["integer", "null"]},
               "members": s.INTEGER})
GROUP_BODY = s.obj({"name": {"type": "string", "minLength": 1, "maxLength": 200}},
                   {"description": {"type": "string", "maxLength": 2000},
                    "discount_percent": {"type": ["string", "number", "null"]},
                    "free_shipping_threshold": {"type": ["integer", "null"], "minimum": 0},
                    "payment_terms_days": {"type": ["integer", "null"], "minimum": 0}},
                   additionalProperties=False)
RULE_BODY = s.obj({"name": s.STRING, "conditions": {"type": "array", "minItems": 1}},
                  description="see README 'Segmentation' for conditions and actions")
SEGMENT_BODY = {"type": "object", "description": "a saved filter; see README 'Segmentation'"}

ROUTES = [
    Route("GET", "/tags", list_tags, "Tags in use, with how many customers carry each", "tags",
          responses={200: {"type": "array", "items": s.obj({"tag": s.STRING,
                                                            "customers": s.INTEGER})}}),
    Route("GET", "/groups", list_groups, "Customer groups", "groups",
          responses={200: {"type": "array", "items": GROUP}}),
    Route("PUT", "/groups/<slug>", save_group, "Create or change a group", "groups",
          scope="write", body=GROUP_BODY, responses={200: GROUP}),
    Route("GET", "/segments", list_segments, "Saved segments", "segments",
          responses={200: {"type": "array", "items": s.ANY_OBJECT}}),
    Route("POST", "/segments", save_segment, "Save a segment", "segments", scope="write",
          body=SEGMENT_BODY, responses={201: s.obj({"segment_id": s.STRING})}),
    Route("GET", "/segments/<segment_id>/members", segment_members, "A segment's customers",
          "segments", query=PAGE_PARAMS, responses={200: s.page_of(s.ANY_OBJECT)}),
    Route("GET", "/rules", list_rules, "Tagging rules, in the order they apply", "rules",
          responses={200: {"type": "array", "items": s.obj({"rule_id": s.STRING,
                                                            "name": s.STRING})}}),
    Route("POST", "/rules", save_rule, "Create or replace a rule", "rules", scope="admin",
          body=RULE_BODY, responses={201: s.obj({"rule_id": s.STRING, "name": s.STRING})}),
    Route("DELETE", "/rules/<rule_id>", delete_rule, "Delete a rule", "rules", scope="admin",
          responses={200: s.ANY_OBJECT}),
    Route("GET", "/reports", report, "New customers, repeat rate, revenue share of the top "
          "10%, segment sizes", "reports",
          query=[Param("period", "bucket size of the series", enum=("day", "week", "month"),
                       default="month")],
          responses={200: s.obj({"store_id": s.STRING})}),
]
