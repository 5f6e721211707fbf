"""Customers: the list (segmentation's directory), one customer's page composed from every
service, staff edits and deletion (customer_sync, written back to the shop), tags and groups."""
from __future__ import annotations

import re
from typing import Iterable

from services.gateway import schemas as s
from services.gateway.problems import Problem
from services.gateway.routing import (COMPANY_ID_PATTERN, CURSOR_PATTERN, SLUG_PATTERN,
                                     Context, Param, Reply, Route)

SORTS = ("name", "total_spent", "orders", "last_order", "registered")
SORT_VALUES = tuple(v for f in SORTS for v in (f, f"-{f}"))

FILTER_PARAMS = [
    Param("q", "name or email contains this (case-insensitive)"),
    Param("segment", "segment name, e.g. VIP, Regular, New, At Risk"),
    Param("saved_segment", "a saved segment's id: its current members (see GET /segments)",
          max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"),
    Param("tag", "has every one of these tags (repeat or comma-separate)", kind="list",
          max_length=64, pattern=SLUG_PATTERN),
    Param("group", "is in every one of these groups (repeat or comma-separate)", kind="list",
          max_length=64, pattern=SLUG_PATTERN),
    Param("status", "the customer's standing in the companion", enum=("active", "inactive")),
    Param("total_spent_min", "total spent at least this, in minor units (cents)", "integer",
          minimum=0),
    Param("total_spent_max", "total spent at most this, in minor units (cents)", "integer",
          minimum=0),
    Param("orders_min", "at least this many orders", "integer", minimum=0),
    Param("last_order_after", "last order at or after this time", "date-time"),
    Param("last_order_before", "last order before this time", "date-time"),
    Param("registered_after", "registered at or after this time", "date-time"),
    Param("registered_before", "registered before this time", "date-time"),
    Param("country", "billing country, ISO 3166-1 alpha-2", max_length=2),
    Param("state", "billing state or region"),
    Param("city", "billing city"),
    Param("company_id", "belongs to this company (GET /companies)", max_length=27,
          pattern=COMPANY_ID_PATTERN),
]
CUSTOM_FILTER_TEXT = ("`custom.<key>=value` (up to 10, each a key of the store's custom fields) "
                      "keeps customers whose field holds the value: as text, or the number "
                      "or boolean it spells (`custom.visits=3`, `custom.vip=true`).")
_FILTER_KEYS = {"tag": "tags", "group": "groups", "status": "account_status"}
PAGE_PARAMS = [
    Param("limit", "page size", "integer", default=50, minimum=1, maximum=500),
    Param("cursor", "the previous page's next_cursor (opaque)", max_length=2000,
          pattern=CURSOR_PATTERN),
]


def directory_filters(query: dict) -> dict:
    filters = {}
    for param in FILTER_PARAMS:
        value = query.get(param.name)
        if value is not None:
            filters[_FILTER_KEYS.get(param.name, param.name)] = value
    return filters


CUSTOM_FILTER_PREFIX = "custom."
MAX_CUSTOM_FILTERS = 10
_CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")


def custom_filters(ctx: Context) -> dict:
    """The list's `custom.<key>=value` parameters (names the route table cannot declare), each
    the key of one of the store's custom fields: {key: value}, checked and bounded."""
    asked = [(name, value) for name, value in ctx.request.args.items(multi=True)
             if name.startswith(CUSTOM_FILTER_PREFIX)]
    if not asked:
        return {}
    if len(asked) > MAX_CUSTOM_FILTERS:
        raise Problem(400, f"at most {MAX_CUSTOM_FILTERS} custom.<key> filters",
                      kind="invalid-parameter", errors={"custom": ["too many filters"]})
    defined = {f["key"] for f in s.fields_of(
        ctx.call("customer_sync", "list_custom_fields", ctx.store_id), "customer")}
    filters = {}
    for name, value in asked:
        key, shown = name[len(CUSTOM_FILTER_PREFIX):], name[:60]
        if not _CUSTOM_KEY.fullmatch(key) or key not in defined:
            raise Problem(400, f"query parameter {shown} names no custom field of this store",
                          kind="invalid-parameter", errors={shown: ["no such custom field"]})
        if not value.strip() or len(value) > 200:
            raise Problem(400, f"query parameter {shown} must be 1-200 characters",
                          kind="invalid-parameter", errors={shown: ["1-200 characters"]})
        if key in filters:
            raise Problem(400, f"query parameter {shown} is given twice",
                          kind="invalid-parameter", errors={shown: ["given twice"]})
        filters[key] = value
    return filters


def list_filters(ctx: Context) -> dict:
    """The directory's filters from the declared parameters and the custom field ones."""
    filters = directory_filters(ctx.query)
    custom = custom_filters(ctx)
    if custom:
        filters["custom"] = custom
    return filters


def directory_sort(value: str) -> dict:
    return {"field": value.lstrip("-"), "direction": "desc" if value.startswith("-") else "asc"}


# customer_sync's company_names takes at most this many ids a call.
COMPANY_NAMES_BATCH = 200


def company_names(ctx: Context, company_ids: Iterable[str]) -> dict[str, str]:
    """{company_id: name} of the ids that still name a company, asked in bounded batches."""
    wanted = sorted({i for i in company_ids if i})
    names: dict[str, str] = {}
    for start in range(0, len(wanted), COMPANY_NAMES_BATCH):
        names.update(ctx.call("customer_sync", "company_names", ctx.store_id,
                              wanted[start:start + COMPANY_NAMES_BATCH]))
    return names


def with_company_names(ctx: Context, rows: list[dict]) -> list[dict]:
    """The list's rows, each with its `company_id` and its company's name (null without one):
    one company_names call for a page's companies (200 at most a call; none when no row has
    a company)."""
    names = company_names(ctx, (row.get("company_id") for row in rows))
    for row in rows:
        row["company_id"] = row.get("company_id") or None
        row["company_name"] = names.get(row["company_id"]) if row["company_id"] else None
    return rows


def list_customers(ctx: Context) -> Reply:
    answer = ctx.call("segmentation", "search_customers", ctx.store_id,
                      list_filters(ctx), directory_sort(ctx.query["sort"]),
                      {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]})
    with_company_names(ctx, answer["items"])
    headers = ctx.next_page(answer.get("next_cursor"))
    return Reply({"items": answer["items"], "next_cursor": answer.get("next_cursor"),
                  "total": answer.get("total", len(answer["items"]))}, headers=headers)


def customer_detail(ctx: Context) -> Reply:
    store, customer = ctx.store_id, ctx.path["customer_id"]
    parts = ctx.backends.gather([
        ("customer_sync", "get_customer", (store, customer), {}),
        ("segmentation", "get_profile", (store, customer), {}),
        ("loyalty", "get_account", (store, customer), {}),
        ("customer_sync", "list_orders", (store, customer, {"size": 5}), {}),
        ("customer_sync", "list_notes", (store, customer), {}),
        ("customer_sync", "list_reminders", (store, customer, "open"), {}),
        ("customer_sync", "timeline", (store, customer, {"size": 20}), {}),
    ])
    names = ["customer", "profile", "loyalty", "orders", "notes", "reminders", "timeline"]
    if isinstance(parts[0], Problem):
        raise parts[0]
    unavailable = []
    got = {}
    for name, part in zip(names, parts):
        if isinstance(part, Problem):
            if part.status != 404:
                unavailable.append(name)
            part = None
        got[name] = part
    profile = got["profile"] or {}
    company = None
    company_id = (got["customer"] or {}).get("company_id")
    if company_id:
        try:
            name = company_names(ctx, [company_id]).get(company_id)
        except Problem:
            unavailable.append("company")
            name = None
        company = {"company_id": company_id, "name": name}
    return Reply({
        "customer": got["customer"],
        "segment": profile.get("segment"), "tags": profile.get("tags") or [],
        "groups": profile.get("groups") or [], "stats": profile.get("stats"),
        "loyalty": got["loyalty"],
        "recent_orders": (got["orders"] or {}).get("items") or [],
        "notes": got["notes"] or [], "reminders": got["reminders"] or [],
        "timeline": (got["timeline"] or {}).get("items") or [],
        "unavailable": unavailable, "company": company,
    })


def edit_customer(ctx: Context) -> Reply:
    store, customer = ctx.store_id, ctx.path["customer_id"]
    changes = dict(ctx.body)
    status = changes.pop("account_status", None)
    if changes:
        ctx.call("customer_sync", "update_customer", store, customer, changes, ctx.actor)
    if status is not None:
        [result] = ctx.call("customer_sync", "set_account_status", store, [customer], status,
                            ctx.actor)["results"]
        if result["outcome"] == "not_found":
            raise Problem(404, f"no customer {customer}")
    return Reply(ctx.call("customer_sync", "get_customer", store, customer))


def delete_customer(ctx: Context) -> Reply:
    customer = ctx.path["customer_id"]
    answer = ctx.call("customer_sync", "delete_customers", ctx.store_id, [customer],
                      ctx.query["orders"], ctx.actor)
    [result] = answer["results"]
    if result["outcome"] == "not_found":
        raise Problem(404, f"no customer {customer}")
    if result["outcome"] == "failed":
        raise Problem(502, f"the customer could not be deleted: {result.get('error')}",
                      kind="delete-failed")
    return Reply(result)


def list_orders(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "list_orders", ctx.store_id, ctx.path["customer_id"],
                          {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]}))


def add_tags(ctx: Context) -> Reply:
    # segmentation refuses a customer the store does not have (404), asking customer_sync.
    return Reply(ctx.call("segmentation", "tag", ctx.store_id, ctx.path["customer_id"],
                          ctx.body["tags"], ctx.actor))


def remove_tag(ctx: Context) -> Reply:
    return Reply(ctx.call("segmentation", "untag", ctx.store_id, ctx.path["customer_id"],
                          [ctx.path["tag"]], ctx.actor))


def add_to_groups(ctx: Context) -> Reply:
    customer_id = ctx.path["customer_id"]
    for group in ctx.body["groups"]:
        outcome = ctx.call("segmentation", "add_to_group", ctx.store_id, [customer_id], group,
                           ctx.actor)
        if outcome["results"].get(customer_id) == "not found":
            raise Problem(404, f"no customer {customer_id} in store {ctx.store_id}",
                          errors={"customer_id": ["not found"]})
    return Reply(ctx.call("segmentation", "get_profile", ctx.store_id, customer_id))


def remove_from_group(ctx: Context) -> Reply:
    ctx.call("segmentation", "remove_from_group", ctx.store_id, [ctx.path["customer_id"]],
             ctx.path["group"], ctx.actor)
    return Reply(ctx.call("segmentation", "get_profile", ctx.store_id, ctx.path["customer_id"]))


TAG_NAME = s.SLUG
_CID = "/customers/<customer_id>"

ROUTES = [
    Route("GET", "/customers", list_customers, "List and search customers", "customers",
          query=FILTER_PARAMS + [Param("sort", "sort field; a leading - sorts descending",
                                       enum=SORT_VALUES, default="-registered")] + PAGE_PARAMS,
          responses={200: s.page_of(s.CUSTOMER_ROW, with_total=True)},
          description=CUSTOM_FILTER_TEXT),
    Route("GET", _CID, customer_detail, "A customer's page: profile, stats, segment, tags, "
          "groups, loyalty, recent orders, notes, reminders and timeline", "customers",
          responses={200: s.CUSTOMER_DETAIL}),
    Route("PATCH", _CID, edit_customer, "Edit a customer (written back to the shop)",
          "customers", scope="write", body=s.CUSTOMER_EDIT, responses={200: s.CUSTOMER}),
    Route("DELETE", _CID, delete_customer, "Delete a customer, at the shop too", "customers",
          scope="write",
          query=[Param("orders", "keep the orders anonymised, or delete them",
                       enum=("anonymise", "delete"), default="anonymise")],
          responses={200: s.obj({"customer_id": s.STRING, "outcome": {"enum": ["deleted"]}},
                                {"orders": {**s.INTEGER, "description": "orders deleted or "
                                            "anonymised"}})}),
    Route("GET", _CID + "/orders", list_orders, "A customer's orders, newest first", "customers",
          query=PAGE_PARAMS, responses={200: s.page_of(s.ORDER)}),
    Route("POST", _CID + "/tags", add_tags, "Tag a customer", "tags", scope="write",
          body=s.obj({"tags": {"type": "array", "minItems": 1, "maxItems": 50,
                               "items": TAG_NAME}}, additionalProperties=False),
          responses={200: s.PROFILE}),
    Route("DELETE", _CID + "/tags/<tag>", remove_tag, "Remove a tag", "tags", scope="write",
          responses={200: s.PROFILE}),
    Route("POST", _CID + "/groups", add_to_groups, "Add a customer to groups", "groups",
          scope="write",
          body=s.obj({"groups": {"type": "array", "minItems": 1, "maxItems": 50,
                                 "items": TAG_NAME}}, additionalProperties=False),
          responses={200: s.PROFILE}),
    Route("DELETE", _CID + "/groups/<group>", remove_from_group, "Remove from a group", "groups",
          scope="write", responses={200: s.PROFILE}),
]
