"""The loyalty card over the API. Point and credit movements take an `Idempotency-Key` header
(or `request_id` in the body): the same key twice moves points once."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.problems import Problem
from services.gateway.routing import Context, Reply, Route


def _request_id(ctx: Context) -> str | None:
    return (ctx.body or {}).get("request_id") or ctx.request.headers.get("Idempotency-Key")


def account(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "get_account", ctx.store_id, ctx.path["customer_id"]))


def history(ctx: Context) -> Reply:
    """loyalty pages its ledger by entry number (an integer); over HTTP every cursor is an
    opaque string, so it goes out as one and comes back in as the number."""
    cursor = ctx.query["cursor"]
    if cursor is not None:
        if not cursor.isdigit():
            raise Problem(400, "query parameter cursor must be the next_cursor of a previous "
                               "page", kind="invalid-parameter",
                          errors={"cursor": ["not a cursor of this list"]})
        cursor = int(cursor)
    page = ctx.call("loyalty", "history", ctx.store_id, ctx.path["customer_id"],
                    {"size": ctx.query["limit"], "cursor": cursor})
    if page.get("next_cursor") is not None:
        page["next_cursor"] = str(page["next_cursor"])
    return Reply(page)


def redeem(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "redeem", ctx.store_id, ctx.path["customer_id"],
                          ctx.body["points"], _request_id(ctx), ctx.actor))


def adjust(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "adjust", ctx.store_id, ctx.path["customer_id"],
                          ctx.body["points"], ctx.body["reason"], ctx.actor, _request_id(ctx)))


def issue_credit(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("loyalty", "issue_credit", ctx.store_id, ctx.path["customer_id"],
                          body["amount"], body["reason"], body.get("note", ""), ctx.actor,
                          body.get("expires_at"), _request_id(ctx)))


def use_credit(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("loyalty", "use_credit", ctx.store_id, ctx.path["customer_id"],
                          body["amount"], body.get("reference", ""), ctx.actor, _request_id(ctx)))


def get_programme(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "get_programme", ctx.store_id))


def save_programme(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "save_programme", ctx.store_id, ctx.body))


REQUEST_ID = {"type": "string", "minLength": 1, "maxLength": 100}
_CID = "/customers/<customer_id>/loyalty"
MOVEMENT = {"type": "object", "description": "the account after the movement"}

ROUTES = [
    Route("GET", _CID, account, "A customer's loyalty card: balance, cash value, tier, "
          "member since, store credit", "loyalty", responses={200: s.LOYALTY_ACCOUNT}),
    Route("GET", _CID + "/history", history, "The points ledger, newest first", "loyalty",
          query=PAGE_PARAMS, responses={200: s.page_of(s.ANY_OBJECT)}),
    Route("POST", _CID + "/redeem", redeem, "Redeem points", "loyalty", scope="write",
          body=s.obj({"points": {"type": "integer", "minimum": 1}},
                     {"request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("POST", _CID + "/adjust", adjust, "Add or remove points by hand, with a reason",
          "loyalty", scope="write",
          body=s.obj({"points": {"type": "integer"},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                     {"request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("POST", _CID + "/credit", issue_credit, "Issue store credit (minor units)", "loyalty",
          scope="write",
          body=s.obj({"amount": {"type": "integer", "minimum": 1},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                     {"note": {"type": "string", "maxLength": 2000}, "expires_at": s.TIME,
                      "request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("POST", _CID + "/credit/use", use_credit, "Spend store credit (minor units)",
          "loyalty", scope="write",
          body=s.obj({"amount": {"type": "integer", "minimum": 1}},
                     {"reference": {"type": "string", "maxLength": 200},
                      "request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("GET", "/loyalty/programme", get_programme, "The store's loyalty programme",
          "loyalty", responses={200: s.ANY_OBJECT}),
    Route("PUT", "/loyalty/programme", save_programme, "Change the loyalty programme",
          "loyalty", scope="admin", body={"type": "object"}, responses={200: s.ANY_OBJECT}),
]
