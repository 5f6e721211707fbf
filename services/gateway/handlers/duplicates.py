"""Possible duplicates among a store's customers (customer_sync's duplicate search): groups of
live records sharing an email, a phone or a name and postcode, scored, with what a merge
screen compares of each record."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import CURSOR_PATTERN, Context, Param, Reply, Route

MATCH_KINDS = ("email", "phone", "name_postcode")

QUERY = [
    Param("limit", "groups per page", "integer", default=50, minimum=1, maximum=200),
    Param("cursor", "the previous page's next_cursor (opaque)", max_length=2000,
          pattern=CURSOR_PATTERN),
    Param("match", "only groups found by this key (each group then listed by it)",
          enum=MATCH_KINDS),
]

DUPLICATE_RECORD = s.obj({
    "customer_id": s.STRING, "kind": {"enum": ["registered", "guest"]},
    "first_name": s.STRING, "last_name": s.STRING, "email": s.STRING, "phone": s.STRING,
    "postcode": s.STRING, "country": s.STRING, "orders_count": s.INTEGER,
    "date_created": s.NULLABLE_TIME})
DUPLICATE_GROUP = s.obj({
    "group_id": s.STRING,
    "match": {"enum": list(MATCH_KINDS), "description": "the key the group was found by"},
    "matched": {"type": "array", "items": {"enum": list(MATCH_KINDS)},
                "description": "every key all its records share, strongest first"},
    "score": {**s.INTEGER, "description": "email 100, phone 80, name and postcode 60, "
              "plus 5 for each further key they share"},
    "size": {**s.INTEGER, "description": "records sharing the key (at most 25 listed)"},
    "customers": {"type": "array", "items": DUPLICATE_RECORD}})
DUPLICATES_PAGE = s.obj({"store_id": s.STRING,
                         "groups": {"type": "array", "items": DUPLICATE_GROUP},
                         "next_cursor": s.CURSOR})


def find_duplicates(ctx: Context) -> Reply:
    answer = ctx.call("customer_sync", "find_duplicates", ctx.store_id, ctx.query["cursor"],
                      ctx.query["limit"], ctx.query["match"])
    headers = ctx.next_page(answer.get("next_cursor"))
    return Reply(answer, headers=headers)


ROUTES = [
    Route("GET", "/duplicates", find_duplicates,
          "Possible duplicate customers, grouped and scored (strongest first)", "customers",
          query=QUERY, responses={200: DUPLICATES_PAGE}),
]
