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


def get_programme(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "get_programme", ctx.store_id))


def save_programme(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "save_programme", ctx.store_id, ctx.body))


REQUEST_ID = {"type": "string", "minLength": 1, "maxLength": 100}
_CID = "/customers/<customer_id>/loyalty"
LEDGER_ENTRY = s.obj(
    {"key": {**s.STRING, "description": "the entry's natural key, e.g. earn:<order>, "
             "redeem:<request>"},
     "book": {"enum": ["points", "credit"]}, "kind": s.STRING,
     "delta": {**s.INTEGER, "description": "points, or minor units on the credit book"},
     "balance": {**s.INTEGER, "description": "the book's balance after this entry"},
     "at": s.TIME, "seq": s.INTEGER},
    {"reason": s.NULLABLE_STRING, "order_id": s.NULLABLE_STRING, "actor": s.NULLABLE_STRING,
     "expires_at": s.NULLABLE_TIME, "details": s.ANY_OBJECT, "store_id": s.STRING,
     "customer_id": s.STRING})
REWARD = s.obj(
    {"reward_id": s.STRING, "kind": {"enum": ["points", "credit"]},
     "state": {"enum": ["pending", "issued", "used", "closing", "returned", "expired"]},
     "code": {**s.STRING, "description": "the coupon code to enter at checkout"},
     "amount": s.MONEY, "points": {"type": ["integer", "null"]}, "created_at": s.TIME,
     "expires_at": s.TIME, "issued_at": s.NULLABLE_TIME, "order_id": s.NULLABLE_STRING,
     "attempts": s.INTEGER, "next_attempt_at": s.NULLABLE_TIME,
     "last_error": s.NULLABLE_STRING, "reason": s.NULLABLE_STRING, "note": s.NULLABLE_STRING})
MOVEMENT = s.obj({"request_key": s.STRING,
                  "entries": {"type": "array", "items": LEDGER_ENTRY}},
                 {"reward": REWARD},
                 description="the ledger entries the request made; asked again with the same "
                             "Idempotency-Key, the same answer and no new entry")
TIER = s.obj({"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
              "min_points": {"type": "integer", "minimum": 0},
              "max_points": {"type": ["integer", "null"], "minimum": 0},
              "rate": {"type": "integer", "minimum": 1, "maximum": 10000,
                       "description": "points per 1.00 of the order"}}, additionalProperties=False)
_PROGRAMME_FIELDS = {
    "earning_statuses": {"type": "array", "minItems": 1, "items": s.STRING},
    "exclude_shipping": s.BOOLEAN, "exclude_tax": s.BOOLEAN, "guests_earn": s.BOOLEAN,
    "starts_at": s.NULLABLE_TIME,
    "tiers": {"type": "array", "minItems": 1, "maxItems": 20, "items": TIER},
    "tier_window_days": {"type": "integer", "minimum": 1, "maximum": 3660},
    "points_per_unit": {"type": "integer", "minimum": 1, "maximum": 1000000,
                        "description": "this many points are 1.00 of store credit"},
    "min_redeem_points": {"type": "integer", "minimum": 1},
    "max_redeem_points": {"type": ["integer", "null"], "minimum": 1},
    "expiry_months": {"type": "integer", "minimum": 0, "maximum": 120,
                      "description": "0: points never expire"},
    "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$"},
    "coupon_prefix": {"type": "string", "pattern": "^[a-z2-9]{1,12}$",
                      "description": "reward coupon codes read <prefix>-<10 characters>"},
    "reward_expiry_days": {"type": "integer", "minimum": 1, "maximum": 3660},
    "reward_individual_use": s.BOOLEAN,
    "expired_rewards_return_points": s.BOOLEAN,
    "credit_expiry_days": {"type": "integer", "minimum": 1, "maximum": 3660},
    "expiry_warning_days": {"type": "integer", "minimum": 0, "maximum": 365,
                            "description": "0: no warning before points expire"},
}
PROGRAMME = s.obj(_PROGRAMME_FIELDS)
PROGRAMME_BODY = s.obj({}, _PROGRAMME_FIELDS, additionalProperties=False,
                       description="the whole programme: a field left out takes its default")

ROUTES = [
    Route("GET", _CID, account, "A customer's loyalty card: balance, cash value, tier, "
          "member since, store credit", "loyalty", responses={200: s.LOYALTY_ACCOUNT}),
    Route("GET", _CID + "/history", history, "The points ledger, newest first", "loyalty",
          query=PAGE_PARAMS, responses={200: s.page_of(LEDGER_ENTRY)}),
    Route("POST", _CID + "/redeem", redeem, "Redeem points for a single-use coupon", "loyalty",
          scope="write",
          body=s.obj({"points": {"type": "integer", "minimum": 1}},
                     {"request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("POST", _CID + "/adjust", adjust, "Add or remove points by hand, with a reason",
          "loyalty", scope="write",
          body=s.obj({"points": {"type": "integer"},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                     {"request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("POST", _CID + "/credit", issue_credit, "Issue store credit as a single-use coupon "
          "(minor units)", "loyalty",
          scope="write",
          body=s.obj({"amount": {"type": "integer", "minimum": 1},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                     {"note": {"type": "string", "maxLength": 2000}, "expires_at": s.TIME,
                      "request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("GET", "/loyalty/programme", get_programme, "The store's loyalty programme",
          "loyalty", responses={200: PROGRAMME}),
    Route("PUT", "/loyalty/programme", save_programme, "Change the loyalty programme",
          "loyalty", scope="admin", body=PROGRAMME_BODY, responses={200: PROGRAMME},
          description="Tiers must start at 0 and neither overlap nor leave gaps; a refused "
                      "programme names the field."),
]
