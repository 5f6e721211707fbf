"""The loyalty card over the API. Point and credit movements take an `Idempotency-Key` header
(or `request_id` in the body): the same key twice moves points once. Redeemed points and store
credit become single-use WooCommerce coupons (rewards): listed, quoted before a redemption, and
cancelled while unused."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.handlers.customers import PAGE_PARAMS
from services.gateway.problems import Problem
from services.gateway.routing import Context, Param, Reply, Route


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


def list_rewards(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "list_rewards", ctx.store_id, ctx.path["customer_id"]))


def cancel_reward(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "cancel_reward", ctx.store_id, ctx.path["customer_id"],
                          ctx.path["reward_id"], ctx.actor))


def redemption_quote(ctx: Context) -> Reply:
    return Reply(ctx.call("loyalty", "quote_redemption", ctx.store_id, ctx.path["customer_id"],
                          ctx.query["points"]))


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
REWARD_KINDS = ["points", "credit"]
REWARD_STATES = ["pending", "issued", "used", "closing", "returned", "expired"]
CREDIT_REASONS = ["goodwill", "refund_alternative"]
REWARD = s.obj(
    {"reward_id": s.STRING, "kind": {"enum": REWARD_KINDS},
     "state": {"enum": REWARD_STATES, "description": "pending: the coupon is not at the shop "
               "yet (retried); issued: usable; used: an order used it; closing: being taken "
               "back; returned: cancelled or refused, points given back; expired"},
     "code": {**s.STRING, "description": "the coupon code the customer types at checkout"},
     "amount": s.MONEY,
     "points": {"type": ["integer", "null"], "description": "points spent (kind points)"},
     "created_at": s.TIME, "expires_at": s.TIME, "issued_at": s.NULLABLE_TIME,
     "order_id": s.NULLABLE_STRING, "attempts": s.INTEGER, "next_attempt_at": s.NULLABLE_TIME,
     "last_error": s.NULLABLE_STRING, "reason": s.NULLABLE_STRING, "note": s.NULLABLE_STRING},
    description="a reward: one single-use WooCommerce coupon, bought with points or issued "
                "as store credit")
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
REWARD_MOVEMENT = s.obj({**MOVEMENT["properties"], "reward": REWARD},
                        description="the ledger entries the request made and the reward it "
                                    "created; asked again with the same Idempotency-Key, the "
                                    "same answer and no new entry or coupon")
QUOTE = s.obj({"points": s.INTEGER, "amount": s.MONEY, "balance": s.INTEGER,
               "allowed": s.BOOLEAN,
               "reason": {**s.NULLABLE_STRING, "description": "why not, when not allowed"},
               "expires_at": {**s.NULLABLE_TIME, "description": "until when the coupon would "
                              "be valid"}},
              description="what redeeming these points would give, without redeeming them")
PROGRAMME_BODY = s.obj({}, _PROGRAMME_FIELDS, additionalProperties=False,
                       description="the whole programme: a field left out takes its default")

ROUTES = [
    Route("GET", _CID, account, "A customer's loyalty card: balance, cash value, tier, "
          "member since, store credit", "loyalty", responses={200: s.LOYALTY_ACCOUNT}),
    Route("GET", _CID + "/history", history, "The points ledger, newest first", "loyalty",
          query=PAGE_PARAMS, responses={200: s.page_of(LEDGER_ENTRY)}),
    Route("POST", _CID + "/redeem", redeem, "Redeem points for a coupon", "loyalty",
          scope="write",
          body=s.obj({"points": {"type": "integer", "minimum": 1}},
                     {"request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: REWARD_MOVEMENT},
          description="The points are taken at once and the coupon is created at the shop; "
                      "while the shop does not answer, the reward stays pending and is "
                      "retried. Ask the redemption quote first to show its value."),
    Route("GET", _CID + "/redemption-quote", redemption_quote,
          "What redeeming some points would give", "loyalty",
          query=[Param("points", "the points to redeem", "integer", minimum=1,
                       maximum=1_000_000_000, required=True)],
          responses={200: QUOTE}),
    Route("GET", _CID + "/rewards", list_rewards, "A customer's rewards (coupons), newest "
          "first", "loyalty", responses={200: s.obj({"items": {"type": "array",
                                                               "items": REWARD}})}),
    Route("POST", _CID + "/rewards/<reward_id>/cancel", cancel_reward,
          "Cancel an unused reward", "loyalty", scope="write", responses={200: REWARD},
          description="A pending or issued reward: its coupon is deleted at the shop and its "
                      "points go back; a used or closed one is refused (409)."),
    Route("POST", _CID + "/adjust", adjust, "Add or remove points by hand, with a reason",
          "loyalty", scope="write",
          body=s.obj({"points": {"type": "integer"},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 500}},
                     {"request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: MOVEMENT}),
    Route("POST", _CID + "/credit", issue_credit, "Issue store credit as a coupon (minor "
          "units)", "loyalty", scope="write",
          body=s.obj({"amount": {"type": "integer", "minimum": 1,
                                 "description": "minor units of the store's currency"},
                      "reason": {"enum": CREDIT_REASONS}},
                     {"note": {"type": "string", "maxLength": 2000}, "expires_at": s.TIME,
                      "request_id": REQUEST_ID}, additionalProperties=False),
          responses={200: REWARD_MOVEMENT},
          description="The credit is a single-use coupon for the amount; it is spent at the "
                      "shop's checkout, not here."),
    Route("GET", "/loyalty/programme", get_programme, "The store's loyalty programme",
          "loyalty", responses={200: PROGRAMME}),
    Route("PUT", "/loyalty/programme", save_programme, "Change the loyalty programme",
          "loyalty", scope="admin", body=PROGRAMME_BODY, responses={200: PROGRAMME},
          description="Tiers must start at 0 and neither overlap nor leave gaps; a refused "
                      "programme names the field."),
]
