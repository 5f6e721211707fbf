"""GDPR requests and consent (the gdpr scope). gdpr's request RPCs are addressed by request id
alone, so the gateway checks that a request belongs to the key's store before acting on it."""
from __future__ import annotations

from services.gateway import schemas as s
from services.gateway.problems import Problem
from services.gateway.routing import Context, Param, Reply, Route
from shared.events.gdpr import REQUEST_STATES as STATES
from shared.events.gdpr import REQUEST_TYPES as TYPES
from shared.events.notifications import CONSENT_PURPOSES, CONSENT_SOURCES


def _own_request(ctx: Context) -> dict:
    request_id = ctx.path["request_id"]
    found = ctx.call("gdpr", "get_request", request_id)
    if found.get("store_id") != ctx.store_id:
        raise Problem(404, f"no GDPR request {request_id}")
    return found


def submit(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("gdpr", "submit_request", ctx.store_id, body["type"], body["email"],
                          body.get("details"), ctx.actor), 201)


def list_requests(ctx: Context) -> Reply:
    return Reply(ctx.call("gdpr", "list_requests", ctx.store_id, ctx.query["state"]))


def get_request(ctx: Context) -> Reply:
    return Reply(_own_request(ctx))


def verify(ctx: Context) -> Reply:
    _own_request(ctx)
    return Reply(ctx.call("gdpr", "verify_identity", ctx.path["request_id"], ctx.actor,
                          (ctx.body or {}).get("note", "")))


def reject(ctx: Context) -> Reply:
    _own_request(ctx)
    return Reply(ctx.call("gdpr", "reject_request", ctx.path["request_id"], ctx.body["reason"],
                          ctx.actor))


def download(ctx: Context) -> Reply:
    _own_request(ctx)
    return Reply(ctx.call("gdpr", "download_export", ctx.path["request_id"]))


def get_consent(ctx: Context) -> Reply:
    return Reply(ctx.call("gdpr", "get_consent", ctx.store_id, ctx.path["customer_id"]))


def set_consent(ctx: Context) -> Reply:
    body = ctx.body
    return Reply(ctx.call("gdpr", "set_consent", ctx.store_id, ctx.path["customer_id"],
                          body["purpose"], body["granted"], body.get("source", "operator"),
                          ctx.actor, body.get("note", "")))


AUDIT_ENTRY = s.obj({"at": s.TIME, "actor": s.STRING, "action": s.STRING},
                    {"detail": s.NULLABLE_STRING})
GDPR_REQUEST = s.obj(
    {"request_id": s.STRING, "store_id": s.STRING, "type": {"enum": list(TYPES)},
     "email": s.STRING, "details": s.ANY_OBJECT, "state": {"enum": list(STATES)},
     "received_at": s.TIME, "due_at": s.TIME, "overdue": s.BOOLEAN,
     "customer_ids": {"type": "array", "items": s.STRING},
     "audit": {"type": "array", "items": AUDIT_ENTRY}},
    {"completed_at": s.NULLABLE_TIME, "verified_at": s.NULLABLE_TIME,
     "rejection_reason": s.STRING, "result": {"type": ["object", "null"]},
     "needs_review": {**s.BOOLEAN, "description": "a completed erasure whose proof found the "
                      "person's phone or name only in records that name no customer "
                      "(`result.ambiguous` says where): an operator should look"}})
GDPR_EXPORT = s.obj(
    {"request_id": s.STRING, "store_id": s.STRING, "type": {"enum": ["access", "portability"]},
     "generated_at": s.TIME,
     "subject": s.obj({"email": s.STRING, "customer_ids": {"type": "array", "items": s.STRING}}),
     "manifest": {"type": "array", "items": s.obj({"service": s.STRING, "status": s.STRING},
                                                  {"answered_at": s.NULLABLE_TIME})},
     "data": {"type": "object", "additionalProperties": s.ANY_OBJECT,
              "description": "each service's answer, by service name"}})
_PENDING = {**s.BOOLEAN, "description": "given, but waiting for the customer's confirmation "
                                        "(email double opt-in); not granted meanwhile"}
CONSENT_STATE = s.obj({"granted": s.BOOLEAN, "at": s.TIME, "source": s.STRING},
                      {"actor": s.NULLABLE_STRING, "pending": _PENDING})
CONSENT = s.obj(
    {"customer_id": s.STRING,
     "purposes": {"type": "object", "additionalProperties": CONSENT_STATE,
                  "description": "the current state of each purpose ever recorded"},
     "history": {"type": "array", "items": s.obj(
         {"purpose": s.STRING, "granted": s.BOOLEAN, "at": s.TIME, "source": s.STRING},
         {"change_id": s.STRING, "actor": s.NULLABLE_STRING, "note": s.NULLABLE_STRING,
          "pending": _PENDING})}},
    {"store_id": s.STRING})
_R = "/gdpr/requests"

ROUTES = [
    Route("POST", _R, submit, "Record a data subject's request (due in 30 days; work starts "
          "once their identity is verified)", "gdpr", scope="gdpr",
          body=s.obj({"type": {"enum": list(TYPES)},
                      "email": {"type": "string", "minLength": 3, "maxLength": 320}},
                     {"details": {"type": "object"}}, additionalProperties=False),
          responses={201: GDPR_REQUEST}),
    Route("GET", _R, list_requests, "The store's requests, overdue first", "gdpr", scope="gdpr",
          query=[Param("state", "only requests in this state", enum=STATES)],
          responses={200: {"type": "array", "items": GDPR_REQUEST}}),
    Route("GET", _R + "/<request_id>", get_request, "A request with its audit trail", "gdpr",
          scope="gdpr", responses={200: GDPR_REQUEST}),
    Route("POST", _R + "/<request_id>/verify", verify, "Confirm the requester's identity",
          "gdpr", scope="gdpr", body=s.obj({}, {"note": {"type": "string", "maxLength": 2000}},
                                           additionalProperties=False),
          body_required=False, responses={200: GDPR_REQUEST}),
    Route("POST", _R + "/<request_id>/reject", reject, "Refuse a request, with the reason",
          "gdpr", scope="gdpr",
          body=s.obj({"reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
                     additionalProperties=False),
          responses={200: GDPR_REQUEST}),
    Route("GET", _R + "/<request_id>/export", download, "The assembled access or portability "
          "document", "gdpr", scope="gdpr", responses={200: GDPR_EXPORT},
          description="A 409 until the request has completed."),
    Route("GET", "/customers/<customer_id>/consent", get_consent, "Consent per purpose, with "
          "its history", "gdpr", scope="gdpr", responses={200: CONSENT}),
    Route("PUT", "/customers/<customer_id>/consent", set_consent, "Record a consent change",
          "gdpr", scope="gdpr",
          body=s.obj({"purpose": {"enum": list(CONSENT_PURPOSES)}, "granted": s.BOOLEAN},
                     {"source": {"enum": list(CONSENT_SOURCES), "default": "operator"},
                      "note": {"type": "string", "maxLength": 2000}}, additionalProperties=False),
          responses={200: CONSENT}),
]
