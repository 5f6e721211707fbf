"""Merging duplicate customer records and undoing a merge (customer_sync owns merges; every
data owner follows them by events: docs/merging.md)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.routing import Context, Param, Reply, Route
from shared.customers import CONTACT_FIELDS, MAX_MERGED

_ID = {"type": "string", "minLength": 1, "maxLength": 64}

MERGE_REQUEST = {
    "type": "object", "additionalProperties": False, "required": ["primary_id", "merged_ids"],
    "properties": {
        "primary_id": {**_ID, "description": "the record that stays"},
        "merged_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": MAX_MERGED,
                       "uniqueItems": True,
                       "description": "the records merged into the primary"},
        "field_choices": {
            "type": "object", "additionalProperties": False,
            "maxProperties": len(CONTACT_FIELDS) + s.CUSTOM_VALUES["maxProperties"],
            "properties": {name: _ID for name in CONTACT_FIELDS},
            "patternProperties": {r"^custom_fields\.[a-z][a-z0-9_]{0,39}$": _ID},
            "description": "contact field, or `custom_fields.<key>` of one of the store's "
                           "custom fields, to the record whose value wins; unnamed fields keep "
                           "the primary's, or a merged record's where the primary's is empty"},
    },
}
SHOP_ACCOUNT = s.obj({"customer_id": s.STRING, "woo_customer_id": s.INTEGER})
MERGE_SUMMARY = s.obj({
    "merge_id": s.STRING, "kind": {"enum": ["guest", "manual"]},
    "state": {"enum": ["pending", "merged", "unmerging", "unmerged"]},
    "primary_id": s.STRING, "merged_ids": {"type": "array", "items": s.STRING},
    "created_at": s.TIME, "created_by": s.NULLABLE_STRING,
    "unmerged_at": s.NULLABLE_TIME, "unmerged_by": s.NULLABLE_STRING,
    "shop_accounts": {"type": "array", "items": SHOP_ACCOUNT,
                      "description": "registered records of the merge: WooCommerce has no "
                                     "merge, so each keeps its account in the shop"}})
ORDER_STAYED = s.obj({"order_id": s.STRING, "customer_id": s.STRING, "reason": s.STRING})
UNMERGE_ANSWER = s.obj({
    "merge_id": s.STRING, "primary_id": s.STRING,
    "restored": {"type": "array", "items": s.obj({
        "customer_id": s.STRING, "orders_back": {"type": "array", "items": s.STRING},
        "orders_since": {"type": "array", "items": s.STRING,
                         "description": "orders since the merge for this record's own account"},
        "notes_back": s.INTEGER, "reminders_back": s.INTEGER, "timeline_back": s.INTEGER},
        {"values_dropped": {"type": "array", "items": s.STRING,
                            "description": "custom field keys of the merge's snapshot that "
                                           "today's definitions refuse: not restored"}})},
    "orders_stayed": {"type": "array", "items": ORDER_STAYED},
    "fields_back": {"type": "array", "items": s.STRING},
    "fields_kept": {"type": "array", "items": s.STRING,
                    "description": "primary fields edited since the merge: the edit stays"}},
    {"values_dropped": {"type": "array", "items": s.STRING,
                        "description": "custom field keys whose pre-merge value the primary "
                                       "did not get back: today's definitions refuse it"}})
MERGE_DETAIL = {**MERGE_SUMMARY,
                "required": MERGE_SUMMARY["required"] + ["field_choices", "changed_fields",
                                                         "moved", "snapshots"],
                "properties": {**MERGE_SUMMARY["properties"],
                               "field_choices": {"type": "object",
                                                 "additionalProperties": s.STRING},
                               "changed_fields": {"type": "array", "items": s.STRING},
                               "moved": {"type": "object", "additionalProperties": {
                                   "type": "array", "items": s.STRING}},
                               "snapshots": {"type": "object",
                                             "additionalProperties": s.ANY_OBJECT},
                               "unmerge": UNMERGE_ANSWER}}


def merge_customers(ctx: Context) -> Reply:
    body = ctx.body
    answer = ctx.call("customer_sync", "merge_customers", ctx.store_id, body["primary_id"],
                      body["merged_ids"], body.get("field_choices") or {}, ctx.actor)
    return Reply(answer, 201)


def list_merges(ctx: Context) -> Reply:
    answer = ctx.call("customer_sync", "list_merges", ctx.store_id, ctx.query["customer_id"],
                      {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]})
    headers = ctx.next_page(answer.get("next_cursor"))
    return Reply(answer, headers=headers)


def get_merge(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "get_merge", ctx.store_id, ctx.path["merge_id"]))


def unmerge(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "unmerge_customers", ctx.store_id,
                          ctx.path["merge_id"], ctx.actor))


ROUTES = [
    Route("POST", "/customers/merge", merge_customers,
          "Merge duplicate records into a primary record", "customers", scope="write",
          body=MERGE_REQUEST, responses={201: MERGE_DETAIL},
          description="404 names an unknown record; 409 one not active (merged, deleted) or "
                      "being merged. Each registered record keeps its shop account."),
    Route("GET", "/merges", list_merges, "Merges, newest first", "customers",
          query=[Param("customer_id", "only merges naming this record", max_length=64)]
          + PAGE_PARAMS, responses={200: s.page_of(MERGE_SUMMARY)}),
    Route("GET", "/merges/<merge_id>", get_merge,
          "A merge: the records as they were, the field choices and what moved", "customers",
          responses={200: MERGE_DETAIL}),
    Route("POST", "/merges/<merge_id>/unmerge", unmerge,
          "Undo a merge: what moved goes back, what arrived since stays by docs/merging.md",
          "customers", scope="write", responses={200: UNMERGE_ANSWER},
          description="409 when the merge was undone already."),
]
