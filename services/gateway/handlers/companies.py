"""Companies (B2B): customer_sync keeps a store's companies and which customers belong to
them; segmentation rolls up their members' stats and holds the groups whose B2B terms a
company's members get (docs/api.md)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS, directory_sort
from services.gateway.problems import Problem
from services.gateway.routing import Context, Param, Reply, Route

# segmentation's company_stats takes at most this many ids a call, as the list's page does.
MAX_COMPANY_PAGE = 100
GROUP_TERMS = ("name", "discount_percent", "free_shipping_threshold", "payment_terms_days")
_NO_STATS = {"members": 0, "orders_count": 0, "total_spent": {"amount": 0, "currency": None},
             "last_order_at": None}


def _known_group(ctx: Context, body: dict) -> None:
    """A group segmentation does not know is refused, naming `group`, before customer_sync
    is asked: a company would otherwise promise its members terms that do not exist."""
    group = body.get("group")
    if group is None:
        return
    if not any(g["slug"] == group for g in ctx.call("segmentation", "list_groups",
                                                     ctx.store_id)):
        raise Problem(400, f"no group {group} in this store: create it first (PUT /groups/"
                           f"{group})", kind="invalid-body",
                      errors={"group": ["no such group"]})


def _with_stats(ctx: Context, companies: list[dict]) -> list[dict]:
    """Each company with `stats`: one company_stats call for them all (none for none)."""
    if not companies:
        return companies
    stats = ctx.call("segmentation", "company_stats", ctx.store_id,
                     [c["company_id"] for c in companies])
    return [{**c, "stats": stats.get(c["company_id"]) or _NO_STATS} for c in companies]


def _group_terms(ctx: Context, group: str | None) -> dict | None:
    if not group:
        return None
    for saved in ctx.call("segmentation", "list_groups", ctx.store_id):
        if saved["slug"] == group:
            return {k: saved.get(k) for k in GROUP_TERMS}
    return None  # deleted since it was chosen: the company promises no terms now


def list_companies(ctx: Context) -> Reply:
    filters = {"q": ctx.query["q"]} if ctx.query["q"] else None
    answer = ctx.call("customer_sync", "list_companies", ctx.store_id, filters,
                      {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]})
    cursor = answer.get("next_cursor")
    items = (_with_stats(ctx, answer["items"]) if ctx.query["stats"]
             else [{**c, "stats": None} for c in answer["items"]])
    return Reply({"items": items, "next_cursor": cursor}, headers=ctx.next_page(cursor))


def company_detail(ctx: Context, company: dict) -> dict:
    """A company as its page shows it: with its members' stats and its group's terms."""
    [listed] = _with_stats(ctx, [company])
    return {**listed, "group_terms": _group_terms(ctx, company.get("group"))}


def get_company(ctx: Context) -> Reply:
    company = ctx.call("customer_sync", "get_company", ctx.store_id, ctx.path["company_id"])
    return Reply(company_detail(ctx, company))


def create_company(ctx: Context) -> Reply:
    _known_group(ctx, ctx.body)
    company = ctx.call("customer_sync", "create_company", ctx.store_id, dict(ctx.body),
                       ctx.actor)
    return Reply(company_detail(ctx, company), 201)


def update_company(ctx: Context) -> Reply:
    _known_group(ctx, ctx.body)
    company = ctx.call("customer_sync", "update_company", ctx.store_id, ctx.path["company_id"],
                       dict(ctx.body), ctx.actor)
    return Reply(company_detail(ctx, company))


def delete_company(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "delete_company", ctx.store_id,
                          ctx.path["company_id"], ctx.actor))


def company_members(ctx: Context) -> Reply:
    """The customer list filtered by the company; an unknown company (or another store's) is
    a 404 rather than an empty page."""
    company = ctx.call("customer_sync", "get_company", ctx.store_id, ctx.path["company_id"])
    answer = ctx.call("segmentation", "search_customers", ctx.store_id,
                      {"company_id": company["company_id"]}, directory_sort("name"),
                      {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]})
    items = [{**row, "company_id": company["company_id"], "company_name": company["name"]}
             for row in answer["items"]]
    cursor = answer.get("next_cursor")
    return Reply({"items": items, "next_cursor": cursor,
                  "total": answer.get("total", len(items))}, headers=ctx.next_page(cursor))


def set_customer_company(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "set_customer_company", ctx.store_id,
                          ctx.path["customer_id"], ctx.body["company_id"], ctx.actor))


def get_company_matching(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "get_company_matching", ctx.store_id))


def set_company_matching(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "set_company_matching", ctx.store_id,
                          dict(ctx.body), ctx.actor))


_CO = "/companies/<company_id>"
COMPANY_PAGE_PARAMS = [
    Param("limit", "page size", "integer", default=50, minimum=1, maximum=MAX_COMPANY_PAGE),
    PAGE_PARAMS[1],
]

ROUTES = [
    Route("GET", "/companies", list_companies, "Companies, by name, with their members' stats",
          "companies",
          query=[Param("q", "name or domain contains this (case-insensitive)"),
                 Param("stats", "each company's members' stats (false: null, and segmentation "
                       "is not asked, for a list to choose from)", "boolean", default=True)]
          + COMPANY_PAGE_PARAMS,
          responses={200: s.page_of(s.LISTED_COMPANY)}),
    Route("POST", "/companies", create_company, "Create a company", "companies", scope="write",
          body=s.NEW_COMPANY, responses={201: s.COMPANY_DETAIL},
          description="400 names the failing field (a `group` the store has not saved too); "
                      "409 (field `domain`) when another company has the domain."),
    Route("GET", _CO, get_company, "A company with its members' stats and its group's B2B "
          "terms", "companies", responses={200: s.COMPANY_DETAIL}),
    Route("PUT", _CO, update_company, "Change a company (null clears an optional field)",
          "companies", scope="write", body=s.COMPANY_CHANGES,
          responses={200: s.COMPANY_DETAIL}),
    Route("DELETE", _CO, delete_company, "Delete a company: its members belong to none",
          "companies", scope="write",
          responses={200: s.COMPANY_DELETION}),
    Route("GET", _CO + "/members", company_members, "A company's members (the customer list "
          "filtered by the company), by name", "companies", query=PAGE_PARAMS,
          responses={200: s.page_of(s.CUSTOMER_ROW, with_total=True)}),
    Route("PUT", "/customers/<customer_id>/company", set_customer_company,
          "Put a customer in a company, or in none", "companies", scope="write",
          body=s.obj({"company_id": {"anyOf": [s.COMPANY_ID, {"type": "null"}]}},
                     additionalProperties=False),
          responses={200: s.CUSTOMER_COMPANY},
          description="404 names the unknown `customer_id` or `company_id`."),
    Route("GET", "/settings/companies", get_company_matching, "How customers join companies",
          "companies", responses={200: s.COMPANY_MATCHING}),
    Route("PUT", "/settings/companies", set_company_matching, "Change how customers join "
          "companies", "companies", scope="admin",
          body=s.obj({"match_email_domain": s.BOOLEAN}, additionalProperties=False),
          responses={200: s.COMPANY_MATCHING},
          description="With match_email_domain on, a customer without a company joins the "
                      "company whose domain is their email's: at their next change, and those "
                      "already held by a background sweep."),
]
