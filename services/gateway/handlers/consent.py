"""Consent at the source: the store's checkout consent capture rules, and one consent change
for many customers at once, with a reason (the gdpr scope)."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.routing import Context, Reply, Route
from shared.events.consent_capture import CAPTURED_PURPOSES
from shared.events.notifications import CONSENT_PURPOSES

# Kept equal to gdpr's bound (services/gdpr/consent_bulk.py), which refuses more as well.
MAX_BULK_CONSENT = 500
MAX_CAPTURE_RULES = 20


def get_capture(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "get_consent_capture", ctx.store_id))


def set_capture(ctx: Context) -> Reply:
    return Reply(ctx.call("customer_sync", "set_consent_capture", ctx.store_id, ctx.body,
                          ctx.actor))


def bulk_consent(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("gdpr", "set_consent_bulk", ctx.store_id, body["customer_ids"],
                          body["purpose"], body["granted"], body["reason"], ctx.actor))


CAPTURE_RULE = s.obj(
    {"scope": {"enum": ["order", "customer"], "description": "whose meta_data holds the box"},
     "key": {"type": "string", "minLength": 1, "maxLength": 100,
             "description": "the meta key the opt-in plugin writes"},
     "yes_values": {"type": "array", "minItems": 1, "maxItems": 10,
                    "items": {"type": "string", "minLength": 1, "maxLength": 100},
                    "description": "values meaning yes (compared without case or spaces); "
                                   "any other value, or no key, is no signal"},
     "purpose": {"enum": list(CAPTURED_PURPOSES)}},
    additionalProperties=False)
CAPTURE_SETTINGS = s.obj(
    {"store_id": s.STRING, "rules": {"type": "array", "items": CAPTURE_RULE}},
    {"updated_at": s.NULLABLE_TIME, "updated_by": s.NULLABLE_STRING})
BULK_RESULT = s.obj(
    {"purpose": s.STRING, "granted": s.BOOLEAN, "reason": s.STRING,
     "results": {"type": "array", "items": s.obj(
         {"customer_id": s.STRING,
          "outcome": {"enum": ["changed", "unchanged", "not_found"]}})},
     "summary": s.obj({"changed": s.INTEGER, "unchanged": s.INTEGER, "not_found": s.INTEGER})})

ROUTES = [
    Route("GET", "/consent/capture", get_capture, "Which checkout opt-in meta data means "
          "consent, per purpose", "gdpr", scope="gdpr", responses={200: CAPTURE_SETTINGS}),
    Route("PUT", "/consent/capture", set_capture, "Replace the checkout consent capture rules",
          "gdpr", scope="gdpr",
          body=s.obj({"rules": {"type": "array", "maxItems": MAX_CAPTURE_RULES,
                                "items": CAPTURE_RULE}}, additionalProperties=False),
          responses={200: CAPTURE_SETTINGS},
          description="Orders and customers already held are captured when the next "
                      "backfill or reconciliation reads them."),
    Route("POST", "/consent/bulk", bulk_consent, "Turn one consent purpose on or off for many "
          "customers, with a reason", "gdpr", scope="gdpr",
          body=s.obj({"customer_ids": {"type": "array", "minItems": 1,
                                       "maxItems": MAX_BULK_CONSENT,
                                       "items": {"type": "string", "minLength": 1,
                                                 "maxLength": 64}},
                      "purpose": {"enum": list(CONSENT_PURPOSES)}, "granted": s.BOOLEAN,
                      "reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
                     additionalProperties=False),
          responses={200: BULK_RESULT},
          description=f"At most {MAX_BULK_CONSENT} customers; each answers `changed`, "
                      "`unchanged` (already so) or `not_found`."),
]
