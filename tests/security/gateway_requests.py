"""One valid request for every route of the gateway's table: its path filled with ids a test
names, and a body its own schema accepts. Authorization tests send these, so that the only
reason left to refuse one is who asks (a scope, a store), never the input."""
from __future__ import annotations

import json
import re
import urllib.parse
from datetime import datetime, timezone

from services.customer_sync.door.inbox import InboxProcessor
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.core.sync import CustomerSync
from services.gateway.routing import Route
from services.notifications.repository import NotificationsStorage
from services.notifications.suppression import Change, Suppressions
from shared import mongo
from tests import payloads
from tests.gateway_system import STORE
from tests.support import wait_until

_CONDITIONS = [{"field": "orders_count", "op": "gte", "value": 1}]

# Valid bodies by endpoint: `test_every_route_with_a_body_has_a_valid_sample` keeps this list
# complete and correct as routes are added or their schemas change.
SAMPLE_BODIES: dict[str, object] = {
    "PATCH /customers/<customer_id>": {"first_name": "Mallory"},
    "POST /customers/<customer_id>/tags": {"tags": ["intruder"]},
    "POST /customers/<customer_id>/groups": {"groups": ["intruders"]},
    "POST /customers/bulk": {"action": "add_tags", "customer_ids": ["{customer_id}"],
                             "tags": ["intruder"]},
    "POST /customers/merge": {"primary_id": "{customer_id}", "merged_ids": ["{duplicate_id}"],
                              "field_choices": {"phone": "{duplicate_id}"}},
    "POST /imports/customers": "email,first_name\nmallory@example.com,Mallory\n",
    "POST /customers/<customer_id>/notes": {"category": "general", "text": "intruder's note"},
    "PATCH /notes/<note_id>": {"text": "rewritten by an intruder"},
    "POST /customers/<customer_id>/reminders": {"due_at": "2030-01-01T09:00:00Z",
                                                "text": "intruder's reminder"},
    "PUT /groups/<slug>": {"name": "Intruders"},
    "POST /tags": {"tag": "intruders", "description": "made by an intruder"},
    "PATCH /tags/<tag>": {"new_tag": "intruded", "description": "renamed by an intruder"},
    "POST /segments": {"name": "Intruders", "conditions": _CONDITIONS},
    "PUT /segments/<segment_id>": {"name": "Intruders", "conditions": _CONDITIONS},
    "PUT /segment-thresholds": {"new_days": 14},
    "POST /rules": {"name": "Intruders", "conditions": _CONDITIONS,
                    "actions": [{"type": "add_tag", "value": "intruder"}]},
    "POST /customers/<customer_id>/loyalty/redeem": {"points": 1},
    "POST /customers/<customer_id>/loyalty/adjust": {"points": 1000, "reason": "intruder"},
    "POST /customers/<customer_id>/loyalty/credit": {"amount": 1000, "reason": "goodwill"},
    "PUT /loyalty/programme": {"points_per_unit": 1},
    "PUT /notifications/templates/<slug>": {"channel": "sms", "body": "Hi from an intruder"},
    "POST /notifications/preview": {"template": "{slug}", "customer_id": "{customer_id}"},
    "POST /notifications/workflows": {"name": "Intruders", "trigger": {"event": "customer.tagged",
                                                                       "tag": "intruder"},
                                      "channel": "sms", "template": "{slug}",
                                      "purpose": "transactional"},
    "POST /notifications/bulk-sends": {"audience": {"customer_ids": ["{customer_id}"]},
                                       "template": "{slug}", "purpose": "transactional"},
    "PUT /notifications/settings": {"name": "Intruder's shop"},
    "POST /notifications/suppressions/lift": {"channel": "email", "address": "{email}",
                                              "reason": "an intruder wants to send"},
    "POST /gdpr/requests": {"type": "access", "email": "mallory@example.com"},
    "POST /gdpr/requests/<request_id>/verify": {"note": "intruder"},
    "POST /gdpr/requests/<request_id>/reject": {"reason": "intruder"},
    "PUT /customers/<customer_id>/consent": {"purpose": "email_marketing", "granted": True},
    "PUT /consent/capture": {"rules": [{"scope": "order", "key": "_intruder", "yes_values": ["yes"],
                                        "purpose": "email_marketing"}]},
    "POST /consent/bulk": {"customer_ids": ["{customer_id}"], "purpose": "email_marketing",
                           "granted": False, "reason": "intruder"},
    "POST /keys": {"name": "intruder", "scopes": ["admin"]},
    "POST /webhooks/quarantine/replay": {"quarantine_ids": ["{quarantine_id}"]},
    "POST /custom-fields": {"key": "intruder_field", "label": "Intruder", "type": "text"},
    "PUT /custom-fields/<key>": {"label": "Renamed by an intruder"},
    "PUT /customers/<customer_id>/custom-fields": {"a_tier": "intruded"},
    "POST /companies": {"name": "Intruders Ltd", "domain": "intruders.example"},
    "PUT /companies/<company_id>": {"name": "Renamed by an intruder"},
    "PUT /customers/<customer_id>/company": {"company_id": "{company_id}"},
    "PUT /settings/companies": {"match_email_domain": True},
}

# What a path parameter names, for the ids a test hands in (`ids` below).
_PARAM_KIND = {"customer_id": "customer_id", "note_id": "note_id", "reminder_id": "reminder_id",
               "tag": "tag", "group": "group", "slug": "slug", "segment_id": "segment_id",
               "rule_id": "rule_id", "workflow_id": "workflow_id", "bulk_id": "bulk_id",
               "request_id": "request_id", "key_id": "key_id",
               "quarantine_id": "quarantine_id", "reward_id": "reward_id",
               "merge_id": "merge_id", "key": "custom_field", "company_id": "company_id"}
# Query parameters a route requires, so that its sample request is valid.
SAMPLE_QUERIES: dict[str, str] = {
    "GET /customers/<customer_id>/loyalty/redemption-quote": "points=100",
}


def param_kind(route: Route, name: str) -> str:
    """What a path parameter names; a template's slug and a group's slug are different things."""
    if name == "slug":
        return "template" if route.path.startswith("/notifications/templates/") else "group"
    return _PARAM_KIND[name]


def _fill(value, ids: dict[str, str]):
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def path_of(route: Route, ids: dict[str, str]) -> str:
    """The route's path below the API prefix, each parameter the id of its kind in `ids`, and
    the query the route requires."""
    path = route.path
    for name in route.path_params:
        value = ids[param_kind(route, name)]
        path = re.sub(r"<(?:\w+:)?" + name + ">", urllib.parse.quote(value, safe=""), path)
    query = SAMPLE_QUERIES.get(route.endpoint)
    return f"{path}?{query}" if query else path


def body_of(route: Route, ids: dict[str, str]) -> tuple[bytes | None, dict]:
    """The sample body, encoded, and its Content-Type header (none for a route without one)."""
    if route.body is None:
        return None, {}
    body = _fill(SAMPLE_BODIES[route.endpoint], {**ids, "slug": ids.get("template", "")})
    if route.body_media_type == "application/json":
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    return body.encode(), {"Content-Type": route.body_media_type}


# Every service's database: what a refused request must leave as it was.
DATABASES = ("companion_customer_sync", "companion_segmentation", "companion_loyalty",
             "companion_notifications", "companion_gdpr")


def database_counts(services) -> dict[str, int]:
    """How many documents each collection of each service holds."""
    client = mongo.connect(services.mongo_uri)
    return {f"{db}.{name}": client[db][name].count_documents({})
            for db in DATABASES for name in client[db].list_collection_names()}


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    return response.json()


def quarantined_delivery(system) -> str:
    """A webhook delivery of store A's that cannot be applied (an order with a NaN total, as a
    door older than the field checks recorded it), quarantined by customer_sync's own inbox
    processing; whichever of this and the running service's sweep claims it quarantines it."""
    storage = CustomerSyncStorage(
        mongo.connect(system.services.mongo_uri)["companion_customer_sync"])
    key = f"{STORE}:order:61:unappliable"
    body = payloads.order(61, customer_id=0, total="NaN")
    storage.inbox.record(key, {"store_id": STORE, "topic": "order.created", "resource": "order",
                               "action": "created", "resource_id": 61,
                               "body": json.dumps(body)})
    InboxProcessor(storage, CustomerSync(storage)).process(key)
    doc = wait_until(lambda: storage.inbox.collection.find_one({"_id": key,
                                                                "status": "quarantined"}),
                     timeout=20, message="store A's unappliable delivery quarantined")
    return doc["quarantine_id"]


def store_a_records(system) -> dict:
    """Store A's records, made over the API: a customer, its tag, group, points, a reward
    (coupon), consent, note and reminder, a custom field and its value, a template, segment,
    rule, workflow, bulk send, GDPR request and key, a duplicate merged into it; a webhook
    delivery in quarantine, and the customer's address suppressed."""
    admin = system.client("admin", rate_limit_per_minute=100_000)
    woo, customer_id = system.shop_customer(orders=0)
    cid = f"/customers/{customer_id}"
    ok(admin.post(cid + "/tags", json={"tags": ["vip-a"]}))
    ok(admin.put("/groups/trade-a", json={"name": "Trade A"}))
    ok(admin.post(cid + "/groups", json={"groups": ["trade-a"]}))
    ok(admin.post(cid + "/loyalty/adjust", json={"points": 500, "reason": "welcome"}))
    # The customer has no order, so no currency yet: the programme's makes the coupon's.
    programme = ok(admin.get("/loyalty/programme"))
    ok(admin.put("/loyalty/programme", json={**programme, "currency": "EUR"}))
    reward = ok(admin.post(cid + "/loyalty/redeem", json={"points": 100}))["reward"]
    ok(admin.put(cid + "/consent", json={"purpose": "email_marketing", "granted": True}))
    ok(admin.put("/consent/capture", json={"rules": [{
        "scope": "order", "key": "_a_newsletter", "yes_values": ["yes"],
        "purpose": "email_marketing"}]}))
    ok(admin.put("/notifications/templates/a-sale", json={"channel": "sms", "body": "Hi A"}))
    ok(admin.post("/custom-fields", json={"key": "a_tier", "label": "A's tier", "type": "text"}),
       201)
    ok(admin.put(cid + "/custom-fields", json={"a_tier": "gold"}))
    ids = {
        "customer_id": customer_id, "tag": "vip-a", "group": "trade-a", "template": "a-sale",
        "note_id": ok(admin.post(cid + "/notes", json={"category": "general",
                                                        "text": "A's note"}), 201)["note_id"],
        "reminder_id": ok(admin.post(cid + "/reminders", json={
            "due_at": "2030-01-01T09:00:00Z", "text": "A's reminder"}), 201)["reminder_id"],
        "segment_id": ok(admin.post("/segments", json={"name": "A's segment", "conditions": [
            {"field": "orders_count", "op": "gte", "value": 0}]}), 201)["segment_id"],
        "rule_id": ok(admin.post("/rules", json={
            "name": "A's rule", "conditions": [{"field": "orders_count", "op": "gte", "value": 9}],
            "actions": [{"type": "add_tag", "value": "a-regular"}]}), 201)["rule_id"],
        "workflow_id": ok(admin.post("/notifications/workflows", json={
            "workflow_id": "a-flow", "name": "A's flow", "trigger": {
                "event": "customer.tagged", "tag": "never-a"}, "channel": "sms",
            "template": "a-sale", "purpose": "transactional"}), 201)["workflow_id"],
        "bulk_id": ok(admin.post("/notifications/bulk-sends", json={
            "audience": {"customer_ids": [customer_id]}, "template": "a-sale",
            "purpose": "transactional"}), 202)["bulk_id"],
        "request_id": ok(admin.post("/gdpr/requests", json={
            "type": "access", "email": woo["email"]}), 201)["request_id"],
        "key_id": ok(admin.post("/keys", json={"name": "A's other key", "scopes": ["read"]}),
                      201)["key_id"],
        "quarantine_id": quarantined_delivery(system),
        "reward_id": reward["reward_id"],
        "custom_field": "a_tier",
        "email": suppressed_address(system, woo["email"]),
    }
    _, ids["duplicate_id"] = system.shop_customer(orders=0)
    ids["merge_id"] = ok(admin.post("/customers/merge", json={
        "primary_id": customer_id, "merged_ids": [ids["duplicate_id"]]}), 201)["merge_id"]
    ids["company_id"] = ok(admin.post("/companies", json={"name": "A's company",
                                                          "domain": "a-company.example"}),
                           201)["company_id"]
    ok(admin.put(cid + "/company", json={"company_id": ids["company_id"]}))
    return {"ids": ids, "email": woo["email"], "admin": admin}


def suppressed_address(system, email: str) -> str:
    """Store A's customer's address, suppressed by a bounce (as the report door records one),
    so that store B's lift of it can be tried."""
    storage = NotificationsStorage(
        mongo.connect(system.services.mongo_uri)["companion_notifications"])
    Suppressions(storage.suppressions).suppress(STORE, "bounce", email, Change(
        "suppressed", datetime.now(timezone.utc), "bounce", "report", key="tenancy-sample"))
    return email
