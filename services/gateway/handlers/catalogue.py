"""Tags, groups, saved segments, rules and reports: segmentation's, over the API. Bodies are
checked for shape here and for meaning by segmentation, which names the failing field."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.problems import Problem
from services.gateway.routing import Context, Param, Reply, Route


def list_tags(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_tags", ctx.store_id))


def create_tag(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "create_tag", ctx.store_id, ctx.body["tag"],
                          ctx.body.get("description"), ctx.actor), 201)


def update_tag(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "update_tag", ctx.store_id, ctx.path["tag"],
                          dict(ctx.body), ctx.actor))


def delete_tag(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "delete_tag", ctx.store_id, ctx.path["tag"],
                          ctx.actor))


def list_groups(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_groups", ctx.store_id))


def save_group(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "save_group", ctx.store_id,
                          {**ctx.body, "slug": ctx.path["slug"]}))


CUSTOM_FIELD_PREFIX = "custom."


def _custom_fields_defined(ctx: Context) -> None:
    """A condition on `custom.<key>` names one of the store's custom fields (customer_sync
    holds them; segmentation does not): a key never defined, a typo say, would match no one
    without a word."""
    named = [(index, condition["field"][len(CUSTOM_FIELD_PREFIX):])
             for index, condition in enumerate(ctx.body.get("conditions") or [])
             if condition["field"].startswith(CUSTOM_FIELD_PREFIX)]
    if not named:
        return
    defined = {f["key"] for f in s.fields_of(
        ctx.call("customer_sync", "list_custom_fields", ctx.store_id), "customer")}
    unknown = {f"conditions.{index}.field": ["no such custom field in this store"]
               for index, key in named if key not in defined}
    if unknown:
        raise Problem(400, "a condition names no custom field of this store: "
                           f"{', '.join(sorted(unknown))}", kind="invalid-body", errors=unknown)


def list_segments(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_segments", ctx.store_id))


def save_segment(ctx: Context) -> Reply:
    _custom_fields_defined(ctx)
    return Reply(ctx.call("segmentation", "save_segment", ctx.store_id, ctx.body), 201)


def get_segment(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "get_segment", ctx.store_id, ctx.path["segment_id"]))


def update_segment(ctx: Context) -> Reply:
    _custom_fields_defined(ctx)
    return Reply(ctx.call("segmentation", "update_segment", ctx.store_id, ctx.path["segment_id"],
                          ctx.body))


SAVED_SEGMENT_TRIGGERS = ("customer.saved_segment_entered", "customer.saved_segment_left")


def delete_segment(ctx: Context) -> Reply:
    """Refused while a workflow is triggered by the segment, naming the workflows: deleting it
    would leave them waiting for an event that can no longer come."""
    segment_id = ctx.path["segment_id"]
    users = [w for w in ctx.call("notifications", "list_workflows", ctx.store_id)
             if (w.get("trigger") or {}).get("event") in SAVED_SEGMENT_TRIGGERS
             and w["trigger"].get("segment_id") == segment_id]
    if users:
        names = ", ".join(f"“{w.get('name') or w['workflow_id']}” ({w['workflow_id']})"
                          for w in users)
        raise Problem(409, f"saved segment {segment_id} triggers the workflow(s) {names}: "
                           "delete them or change their trigger first", kind="in-use",
                      workflows=[w["workflow_id"] for w in users])
    return Reply(ctx.call("segmentation", "delete_segment", ctx.store_id, segment_id))


def segment_members(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "segment_members", ctx.store_id, ctx.path["segment_id"],
                          {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]}))


def get_thresholds(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "get_thresholds", ctx.store_id))


def set_thresholds(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "set_thresholds", ctx.store_id, ctx.body))


def list_rules(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "list_rules", ctx.store_id))


def save_rule(ctx: Context) -> Reply:
    _custom_fields_defined(ctx)
    return Reply(ctx.call("segmentation", "save_rule", ctx.store_id, ctx.body), 201)


def delete_rule(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "delete_rule", ctx.store_id, ctx.path["rule_id"]))


def report(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "report", ctx.store_id, ctx.query["period"]))


TAG = s.obj({"tag": s.STRING, "description": s.STRING, "customers": s.INTEGER,
             "catalogued": {**s.BOOLEAN, "description": "created in the catalogue (otherwise "
                                                        "only carried by customers)"}})
GROUP = s.obj({"slug": s.STRING, "name": s.STRING, "description": s.STRING,
               "discount_percent": {**s.NULLABLE_STRING, "description": "a decimal, e.g. 12.5"},
               "free_shipping_threshold": {"type": ["integer", "null"],
                                           "description": "minor units"},
               "payment_terms_days": {"type": ["integer", "null"]}})
LISTED_GROUP = {**GROUP, "required": GROUP["required"] + ["customers"],
                "properties": {**GROUP["properties"], "customers": {
                    **s.INTEGER, "description": "how many active customers are in it"}}}
GROUP_BODY = s.obj({"name": {"type": "string", "minLength": 1, "maxLength": 200}},
                   {"description": {"type": "string", "maxLength": 2000},
                    "discount_percent": {"type": ["string", "number", "null"]},
                    "free_shipping_threshold": {"type": ["integer", "null"], "minimum": 0},
                    "payment_terms_days": {"type": ["integer", "null"], "minimum": 0}},
                   additionalProperties=False)
SLUG_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
CONDITION = s.obj({"field": {"anyOf": [
                       {"enum": ["orders_count", "total_spent", "average_order_value",
                                 "days_since_last_order", "avg_days_between_orders",
                                 "segment", "tags", "country", "email_domain",
                                 "largest_order", "last_order_month", "groups"]},
                       {"type": "string", "pattern": "^custom\\.[a-z][a-z0-9_]{0,39}$",
                        "description": "one of the store's custom fields, by its key"}]},
                   "op": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in",
                                   "contains", "not_contains", "ends_with", "before", "after",
                                   "on", "is_set", "is_not_set"]}},
                  {"value": {"description": "a number (money in minor units), a string, a "
                                            "boolean (custom fields), or a list of them for in "
                                            "and not_in; absent or null for is_set and "
                                            "is_not_set"}},
                  description="segmentation checks each field's operators and value type")
CONDITIONS = {"type": "array", "minItems": 1, "maxItems": 50, "items": CONDITION}
ACTION = s.obj({"type": {"enum": ["add_tag", "remove_tag", "join_group", "leave_group"]},
                "value": {"type": "string", "minLength": 1}})
MATCH = {"enum": ["all", "any"]}
RULE = s.obj({"rule_id": s.STRING, "name": s.STRING, "position": s.INTEGER,
              "enabled": s.BOOLEAN, "match": MATCH, "conditions": CONDITIONS,
              "actions": {"type": "array", "items": ACTION}})
RULE_BODY = s.obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                   "conditions": CONDITIONS,
                   "actions": {"type": "array", "minItems": 1, "maxItems": 50, "items": ACTION}},
                  {"rule_id": {**SLUG_ID, "description": "replace this rule (absent: a new one)"},
                   "position": {**s.INTEGER, "description": "rules apply in this order"},
                   "enabled": s.BOOLEAN, "match": MATCH},
                  additionalProperties=False,
                  description="see docs/services/segmentation.md for conditions and actions")
SEGMENT = s.obj({"segment_id": s.STRING, "name": s.STRING, "match": MATCH,
                 "conditions": CONDITIONS})
LISTED_SEGMENT = {**SEGMENT, "required": SEGMENT["required"] + ["customers"],
                  "properties": {**SEGMENT["properties"], "customers": {
                      **s.INTEGER, "description": "how many active customers are in it now"}}}
SEGMENT_BODY = s.obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                      "conditions": CONDITIONS},
                     {"segment_id": {**SLUG_ID, "description": "replace this segment"},
                      "match": MATCH}, additionalProperties=False,
                     description="a saved filter; see docs/services/segmentation.md")
SEGMENT_EDIT_BODY = s.obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                           "conditions": CONDITIONS},
                          {"match": MATCH}, additionalProperties=False,
                          description="the whole segment, checked as on create")
_WHOLE = {"type": "integer", "minimum": 0}
THRESHOLD_FIELDS = {
    "new_days": {**_WHOLE, "description": "New: first order within this many days"},
    "new_max_orders": {**_WHOLE, "description": "New: fewer orders than this"},
    "one_time_days": {**_WHOLE, "description": "One-time: one order, older than this"},
    "vip_min_spent": {"type": ["integer", "null"], "minimum": 0,
                      "description": "VIP: total spent over this, minor units (null: off)"},
    "vip_top_share": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "VIP: in the top share of spenders (0: off)"},
    "at_risk_days": {**_WHOLE, "description": "At risk: no order for this many days"},
    "at_risk_min_orders": {**_WHOLE, "description": "At risk: at least this many orders"},
    "at_risk_min_spent": {**_WHOLE, "description": "At risk: spent at least this, minor units"},
}
THRESHOLDS = s.obj(THRESHOLD_FIELDS, description="the store's built-in segment thresholds")
THRESHOLDS_BODY = s.obj({}, THRESHOLD_FIELDS, additionalProperties=False, minProperties=1,
                        description="the thresholds to change; the others keep theirs")
REPORT = s.obj(
    {"store_id": s.STRING, "period": {"enum": ["day", "week", "month"]},
     "currency": s.NULLABLE_STRING, "customers": s.INTEGER, "buyers": s.INTEGER,
     "new_customers": {"type": "array", "items": s.obj({"period": s.STRING,
                                                        "count": s.INTEGER})},
     "repeat_purchase_rate": {"type": ["number", "null"]},
     "churn_rate": {"type": ["number", "null"]},
     "segment_sizes": {"type": "object", "additionalProperties": s.INTEGER},
     "lifetime_value": s.obj({"total": s.INTEGER},
                             {k: {"type": ["integer", "null"]}
                              for k in ("p25", "median", "p75", "p90", "max")}),
     "top_10_percent_revenue_share": {"type": ["number", "null"]},
     "average_order_value_by_group": {"type": "object",
                                      "additionalProperties": {"type": ["integer", "null"]}}},
    description="money in minor units of `currency`; rates from 0 to 1")

ROUTES = [
    Route("GET", "/tags", list_tags, "The tag catalogue: every tag created or carried, with "
          "its description and how many active customers carry it", "tags",
          responses={200: {"type": "array", "items": TAG}}),
    Route("POST", "/tags", create_tag, "Create a tag (with an optional description)", "tags",
          scope="write", body=s.obj({"tag": s.SLUG},
                                    {"description": {"type": "string", "maxLength": 500}},
                                    additionalProperties=False),
          responses={201: TAG}),
    Route("PATCH", "/tags/<tag>", update_tag, "Rename a tag (every customer carrying it "
          "follows, publishing their untagging and tagging; onto an existing tag the two "
          "merge) and/or change its description", "tags", scope="write",
          body=s.obj({}, {"new_tag": s.SLUG,
                          "description": {"type": "string", "maxLength": 500}},
                     additionalProperties=False, minProperties=1),
          responses={200: {**TAG, "required": TAG["required"] + ["renamed"],
                           "properties": {**TAG["properties"], "renamed": {
                               **s.INTEGER, "description": "customers moved to the new name"}}}}),
    Route("DELETE", "/tags/<tag>", delete_tag, "Delete a tag: taken off every customer "
          "carrying it and out of the catalogue", "tags", scope="write",
          responses={200: s.obj({"deleted": s.STRING, "customers": {
              **s.INTEGER, "description": "how many customers it was taken off"}})}),
    Route("GET", "/groups", list_groups, "Customer groups", "groups",
          responses={200: {"type": "array", "items": LISTED_GROUP}}),
    Route("PUT", "/groups/<slug>", save_group, "Create or change a group", "groups",
          scope="write", body=GROUP_BODY, responses={200: GROUP}),
    Route("GET", "/segments", list_segments, "Saved segments, with their member counts",
          "segments", responses={200: {"type": "array", "items": LISTED_SEGMENT}}),
    Route("POST", "/segments", save_segment, "Save a segment", "segments", scope="write",
          body=SEGMENT_BODY, responses={201: SEGMENT}),
    Route("GET", "/segments/<segment_id>", get_segment, "A saved segment", "segments",
          responses={200: SEGMENT}),
    Route("PUT", "/segments/<segment_id>", update_segment, "Change a saved segment's name, "
          "match or conditions", "segments", scope="write", body=SEGMENT_EDIT_BODY,
          responses={200: SEGMENT}),
    Route("DELETE", "/segments/<segment_id>", delete_segment, "Delete a saved segment (409 "
          "naming the workflows it triggers, while any does)", "segments", scope="write",
          responses={200: s.DELETED}),
    Route("GET", "/segments/<segment_id>/members", segment_members, "A segment's customers "
          "(a saved segment's id, or a built-in segment: prospect, new, regular, vip, "
          "one_time, at_risk)", "segments", query=PAGE_PARAMS,
          responses={200: s.page_of(s.PROFILE)}),
    Route("GET", "/segment-thresholds", get_thresholds, "The built-in segments' thresholds",
          "segments", responses={200: THRESHOLDS}),
    Route("PUT", "/segment-thresholds", set_thresholds, "Change built-in segment thresholds "
          "(every customer is re-classified)", "segments", scope="admin", body=THRESHOLDS_BODY,
          responses={200: THRESHOLDS}),
    Route("GET", "/rules", list_rules, "Tagging rules, in the order they apply", "rules",
          responses={200: {"type": "array", "items": RULE}}),
    Route("POST", "/rules", save_rule, "Create or replace a rule", "rules", scope="admin",
          body=RULE_BODY, responses={201: RULE}),
    Route("DELETE", "/rules/<rule_id>", delete_rule, "Delete a rule", "rules", scope="admin",
          responses={200: s.DELETED}),
    Route("GET", "/reports", report, "New customers, repeat rate, revenue share of the top "
          "10%, segment sizes", "reports",
          query=[Param("period", "bucket size of the series", enum=("day", "week", "month"),
                       default="month")],
          responses={200: REPORT}),
]
