"""Suppressed addresses over the API: which of the store's email addresses and numbers are
not sent to and why, and an operator lifting one with the reason (notifications keeps both)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import CURSOR_PATTERN, Context, Param, Reply, Route

_S = "/notifications/suppressions"
CHANNEL = {"enum": ["email", "sms"]}
KINDS = {"type": "array", "items": {"enum": ["smtp_refusal", "bounce", "complaint",
                                             "sms_unsubscribed"]}}
CHANGE = s.obj({"action": {"enum": ["suppressed", "lifted", "reported"]}, "at": s.TIME},
               {"kind": s.STRING, "source": {**s.STRING, "description": "send, report, "
                                             "twilio_status or operator"},
                "detail": {**s.STRING, "description": "the provider's words, or the "
                           "operator's reason for a lift"},
                "actor": {**s.STRING, "description": "who lifted it"}})
SUPPRESSION = s.obj(
    {"channel": CHANNEL, "active": s.BOOLEAN, "kinds": KINDS,
     "blocks": {"enum": ["all", "marketing", "nothing"],
                "description": "a complaint stops marketing only; a bounce, a refusal by the "
                               "mail server or Twilio's 21610 stops every message"},
     "history": {"type": "array", "items": CHANGE}},
    {"address": {**s.NULLABLE_STRING, "description": "the email lower-cased, or the number's "
                 "digits; null once the person was erased (still suppressed)"},
     "address_erased": s.BOOLEAN, "suppressed_at": s.NULLABLE_TIME,
     "lifted_at": s.NULLABLE_TIME, "updated_at": s.NULLABLE_TIME})


def list_suppressions(ctx: Context) -> Reply:
    filters = {k: ctx.query[k] for k in ("channel", "address") if ctx.query[k]}
    filters["include_lifted"] = bool(ctx.query["include_lifted"])
    return Reply(ctx.call("notifications", "list_suppressions", ctx.store_id, filters,
                          {"size": ctx.query["limit"], "cursor": ctx.query["cursor"]}))


def lift_suppression(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("notifications", "lift_suppression", ctx.store_id, body["channel"],
                          body["address"], body["reason"], ctx.actor))


ROUTES = [
    Route("GET", _S, list_suppressions, "Addresses and numbers not sent to, and why",
          "notifications",
          query=[Param("channel", "only this channel", enum=("email", "sms")),
                 Param("address", "only this email address or number (any case, any "
                       "spacing)", max_length=254),
                 Param("include_lifted", "lifted ones too (their history stays)", "boolean",
                       default=False),
                 Param("limit", "page size", "integer", default=100, minimum=1, maximum=500),
                 Param("cursor", "the previous page's next_cursor (opaque)", max_length=2000,
                       pattern=CURSOR_PATTERN)],
          responses={200: s.page_of(SUPPRESSION)}),
    Route("POST", _S + "/lift", lift_suppression, "Send to a suppressed address again, saying "
          "why", "notifications", scope="admin",
          body=s.obj({"channel": CHANNEL,
                      "address": {"type": "string", "minLength": 1, "maxLength": 254},
                      "reason": {"type": "string", "minLength": 1, "maxLength": 500,
                                 "description": "kept in the address's history"}},
                     additionalProperties=False),
          responses={200: SUPPRESSION},
          description="404 when the address is not suppressed. The history keeps the lift, "
                      "who did it and why; a bounce or complaint dated before the lift does "
                      "not suppress it again, a later one does."),
]
