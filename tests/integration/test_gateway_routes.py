"""Every route of the gateway, driven over HTTP against the running system, each answer
checked against the served OpenAPI document (tests/gateway_client.py): a success and at least
one error per route. The route table is the list of what must be covered, so a route added
without a test here fails `test_every_route_is_driven_by_a_test`."""
from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta, timezone

from services.gateway.routes import build_routes
from shared import mongo
from shared.paging import encode_cursor
from tests import payloads
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.security.gateway_requests import suppressed_address
from tests.support import wait_until

ROUTES = {route.endpoint: route for route in build_routes()}
# Routes that cannot answer a 4xx of their own: the document is served to anyone.
NO_ERROR_ANSWER = {"GET /openapi.json"}

CUSTOMER_ROUTES = {
    "GET /openapi.json", "GET /customers", "GET /customers/<customer_id>",
    "PATCH /customers/<customer_id>", "DELETE /customers/<customer_id>",
    "GET /customers/<customer_id>/orders", "POST /customers/<customer_id>/tags",
    "DELETE /customers/<customer_id>/tags/<tag>", "POST /customers/<customer_id>/groups",
    "DELETE /customers/<customer_id>/groups/<group>", "GET /tags", "GET /groups",
    "PUT /groups/<slug>", "GET /customers/<customer_id>/notes",
    "POST /customers/<customer_id>/notes", "PATCH /notes/<note_id>", "DELETE /notes/<note_id>",
    "GET /customers/<customer_id>/reminders", "POST /customers/<customer_id>/reminders",
    "GET /reminders", "POST /reminders/<reminder_id>/complete",
    "DELETE /reminders/<reminder_id>", "GET /customers/<customer_id>/timeline",
    "GET /keys", "POST /keys", "DELETE /keys/<key_id>",
}
STORE_ROUTES = {
    "POST /customers/bulk", "POST /imports/customers", "GET /exports/customers",
    "GET /segments", "POST /segments", "GET /segments/<segment_id>/members", "GET /rules",
    "GET /segments/<segment_id>", "PUT /segments/<segment_id>", "DELETE /segments/<segment_id>",
    "GET /segment-thresholds", "PUT /segment-thresholds",
    "POST /rules", "DELETE /rules/<rule_id>", "GET /reports",
}
LOYALTY_AND_NOTIFICATION_ROUTES = {
    "GET /customers/<customer_id>/loyalty", "GET /customers/<customer_id>/loyalty/history",
    "POST /customers/<customer_id>/loyalty/redeem", "POST /customers/<customer_id>/loyalty/adjust",
    "POST /customers/<customer_id>/loyalty/credit",
    "GET /customers/<customer_id>/loyalty/redemption-quote",
    "GET /customers/<customer_id>/loyalty/rewards",
    "POST /customers/<customer_id>/loyalty/rewards/<reward_id>/cancel", "GET /loyalty/programme",
    "PUT /loyalty/programme", "GET /notifications/templates", "GET /notifications/templates/<slug>",
    "PUT /notifications/templates/<slug>", "DELETE /notifications/templates/<slug>",
    "POST /notifications/preview", "GET /notifications/workflows", "POST /notifications/workflows",
    "DELETE /notifications/workflows/<workflow_id>", "GET /customers/<customer_id>/messages",
    "GET /notifications/sends", "POST /notifications/bulk-sends", "GET /notifications/bulk-sends/<bulk_id>",
    "GET /notifications/settings", "PUT /notifications/settings",
    "GET /notifications/suppressions", "POST /notifications/suppressions/lift",
}
GDPR_ROUTES = {
    "POST /gdpr/requests", "GET /gdpr/requests", "GET /gdpr/requests/<request_id>",
    "POST /gdpr/requests/<request_id>/verify", "POST /gdpr/requests/<request_id>/reject",
    "GET /gdpr/requests/<request_id>/export", "GET /customers/<customer_id>/consent",
    "PUT /customers/<customer_id>/consent",
}
CONSENT_ROUTES = {"GET /consent/capture", "PUT /consent/capture", "POST /consent/bulk"}
TAG_CATALOGUE_ROUTES = {"POST /tags", "PATCH /tags/<tag>", "DELETE /tags/<tag>"}

DUPLICATE_ROUTES = {"GET /duplicates"}
# Driven by tests/integration/test_merges.py.
MERGE_ROUTES = {"POST /customers/merge", "GET /merges", "GET /merges/<merge_id>",
                "POST /merges/<merge_id>/unmerge"}
CUSTOM_FIELD_ROUTES = {
    "GET /custom-fields", "POST /custom-fields", "PUT /custom-fields/<key>",
    "DELETE /custom-fields/<key>", "PUT /customers/<customer_id>/custom-fields",
}
COMPANY_ROUTES = {
    "GET /companies", "POST /companies", "GET /companies/<company_id>",
    "PUT /companies/<company_id>", "DELETE /companies/<company_id>",
    "GET /companies/<company_id>/members", "PUT /customers/<customer_id>/company",
    "GET /settings/companies", "PUT /settings/companies",
}
WEBHOOK_ROUTES = {
    "GET /webhooks/quarantine", "GET /webhooks/quarantine/<quarantine_id>",
    "POST /webhooks/quarantine/replay",
}


def test_every_route_is_driven_by_a_test():
    groups = [CUSTOMER_ROUTES, STORE_ROUTES, LOYALTY_AND_NOTIFICATION_ROUTES, GDPR_ROUTES,
              CONSENT_ROUTES, WEBHOOK_ROUTES, TAG_CATALOGUE_ROUTES, DUPLICATE_ROUTES,
              MERGE_ROUTES, CUSTOM_FIELD_ROUTES, COMPANY_ROUTES]
    driven = set().union(*groups)
    assert sum(map(len, groups)) == len(driven), "a route is listed by two tests"
    assert set(ROUTES) - driven == set(), "routes no test drives"
    assert driven - set(ROUTES) == set(), "listed routes the gateway does not serve"


def assert_driven(system, endpoints: set[str]) -> None:
    """Every one of `endpoints` answered a documented 2xx and a documented 4xx (the checker
    records only answers that matched the document)."""
    statuses: dict[str, set[int]] = {}
    for method, template, status in system.checker.checked:
        statuses.setdefault(f"{method} {template}", set()).add(status)
    missing_success, missing_error = [], []
    for endpoint in sorted(endpoints):
        route = ROUTES[endpoint]
        seen = statuses.get(f"{route.method} {route.openapi_path}", set())
        if not any(200 <= s < 300 for s in seen):
            missing_success.append(endpoint)
        if endpoint not in NO_ERROR_ANSWER and not any(400 <= s < 500 for s in seen):
            missing_error.append(endpoint)
    assert missing_success == [], f"never answered 2xx: {missing_success}"
    assert missing_error == [], f"never answered 4xx: {missing_error}"


def _ok(response, status: int = 200):
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    return response.json() if "json" in response.headers.get("Content-Type", "") else response


def _problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    problem = response.json()
    assert problem["status"] == status
    if field is not None:
        assert field in problem.get("errors", {}), problem
    return problem


def _in(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()


# -- customers, tags, groups, notes, reminders, timeline, keys ---------------------------------
def test_customer_routes(system):
    anonymous, reader = system.anonymous(), system.client("read")
    writer, admin = system.client("write"), system.client("admin")
    woo, customer_id = system.shop_customer(orders=2)
    (_, other_id) = system.shop_customer(orders=0)

    document = _ok(anonymous.get("/openapi.json"))
    assert document["openapi"] == "3.1.0"

    # the list, and one customer's page
    listed = _ok(reader.get("/customers?sort=name&limit=10"))
    assert {r["customer_id"] for r in listed["items"]} == {customer_id, other_id}
    assert listed["total"] == 2
    _problem(reader.get("/customers?limit=0"), 400, "limit")
    page = _ok(reader.get(f"/customers/{customer_id}"))
    assert page["customer"]["email"] == woo["email"] and len(page["recent_orders"]) == 2
    _problem(reader.get("/customers/nobody"), 404)

    orders = _ok(reader.get(f"/customers/{customer_id}/orders?limit=1"))
    assert len(orders["items"]) == 1 and orders["next_cursor"]
    more = _ok(reader.get(f"/customers/{customer_id}/orders?limit=1&cursor={orders['next_cursor']}"))
    assert len(more["items"]) == 1 and more["items"][0]["order_id"] != orders["items"][0]["order_id"]
    _problem(reader.get(f"/customers/{customer_id}/orders?limit=501"), 400, "limit")

    # an edit, written back to the shop
    edited = _ok(writer.patch(f"/customers/{customer_id}", json={"company": "Acme Ltd"}))
    assert edited["company"] == "Acme Ltd"
    assert system.shop.customers[woo["id"]]["billing"]["company"] == "Acme Ltd"  # written back
    _problem(writer.patch(f"/customers/{customer_id}", json={}), 400)
    _problem(writer.patch("/customers/nobody", json={"first_name": "X"}), 404)

    # tags and groups
    tagged = _ok(writer.post(f"/customers/{customer_id}/tags", json={"tags": ["wholesale", "gift"]}))
    assert {t["tag"] for t in tagged["tags"]} == {"wholesale", "gift"}
    _problem(writer.post(f"/customers/{customer_id}/tags", json={"tags": []}), 400, "tags")
    _problem(writer.post("/customers/nobody/tags", json={"tags": ["gift"]}), 404)
    untagged = _ok(writer.delete(f"/customers/{customer_id}/tags/gift"))
    assert [t["tag"] for t in untagged["tags"]] == ["wholesale"]
    _problem(writer.delete("/customers/nobody/tags/gift"), 404)
    wait_until(lambda: {t["tag"]: t["customers"] for t in _ok(reader.get("/tags"))}
               == {"wholesale": 1}, message="the tag counted")
    _problem(anonymous.get("/tags"), 401)

    group = _ok(writer.put("/groups/trade", json={"name": "Trade", "discount_percent": "12.5",
                                                  "payment_terms_days": 30}))
    assert group["slug"] == "trade" and group["discount_percent"] == "12.5"
    _problem(writer.put("/groups/trade", json={"name": "Trade", "payment_terms_days": 900}), 400)
    joined = _ok(writer.post(f"/customers/{customer_id}/groups", json={"groups": ["trade"]}))
    assert [g["group"] for g in joined["groups"]] == ["trade"]
    _problem(writer.post(f"/customers/{customer_id}/groups", json={"groups": ["nope"]}), 404)
    wait_until(lambda: [(g["slug"], g["customers"]) for g in _ok(reader.get("/groups"))]
               == [("trade", 1)], message="the group's member counted")
    _problem(reader.get("/groups", headers={"Authorization": "Bearer wcc_bad"}), 401)
    left = _ok(writer.delete(f"/customers/{customer_id}/groups/trade"))
    assert left["groups"] == []
    _problem(writer.delete(f"/customers/{customer_id}/groups/nope"), 404)

    # notes
    note = _ok(writer.post(f"/customers/{customer_id}/notes",
                           json={"category": "complaint", "text": "Parcel arrived damaged"}), 201)
    _problem(writer.post(f"/customers/{customer_id}/notes", json={"category": "gossip",
                                                                   "text": "x"}), 400)
    _problem(writer.post("/customers/nobody/notes", json={"category": "general", "text": "x"}), 404)
    assert [n["note_id"] for n in _ok(reader.get(f"/customers/{customer_id}/notes"))] == [
        note["note_id"]]
    assert _ok(reader.get(f"/customers/{customer_id}/notes?category=general")) == []
    _problem(reader.get(f"/customers/{customer_id}/notes?category=gossip"), 400, "category")
    changed = _ok(writer.patch(f"/notes/{note['note_id']}", json={"text": "Refund sent"}))
    assert changed["text"] == "Refund sent" and changed["category"] == "complaint"
    _problem(writer.patch("/notes/nonote", json={"text": "x"}), 404)
    _ok(writer.delete(f"/notes/{note['note_id']}"))
    _problem(writer.delete(f"/notes/{note['note_id']}"), 404)

    # reminders
    reminder = _ok(writer.post(f"/customers/{customer_id}/reminders",
                               json={"due_at": _in(2), "text": "Call about the refund",
                                     "assignee": "sam"}), 201)
    _problem(writer.post(f"/customers/{customer_id}/reminders",
                         json={"due_at": "tomorrow", "text": "x"}), 400)
    assert [r["reminder_id"] for r in _ok(reader.get(
        f"/customers/{customer_id}/reminders?status=open"))] == [reminder["reminder_id"]]
    _problem(reader.get(f"/customers/{customer_id}/reminders?status=later"), 400, "status")
    assert [r["reminder_id"] for r in _ok(reader.get(
        "/reminders", params={"due_before": _in(3)}))] == [reminder["reminder_id"]]
    assert _ok(reader.get("/reminders", params={"due_before": _in(1)})) == []
    _problem(reader.get("/reminders?due_before=2026-01-01T00:00:00"), 400, "due_before")
    done = _ok(writer.post(f"/reminders/{reminder['reminder_id']}/complete"))
    assert done["status"] == "done" and done["completed_at"]
    _problem(writer.post("/reminders/noreminder/complete"), 404)
    _ok(writer.delete(f"/reminders/{reminder['reminder_id']}"))
    _problem(writer.delete(f"/reminders/{reminder['reminder_id']}"), 404)

    # the timeline records what was done above
    timeline = _ok(reader.get(f"/customers/{customer_id}/timeline?limit=50"))
    assert timeline["items"], "the timeline records what happened"
    _problem(reader.get(f"/customers/{customer_id}/timeline?limit=x"), 400, "limit")

    # keys
    made = _ok(admin.post("/keys", json={"name": "warehouse", "scopes": ["read"],
                                         "rate_limit_per_minute": 600}), 201)
    assert made["api_key"].startswith("wcc_") and made["rate_limit_per_minute"] == 600
    _problem(admin.post("/keys", json={"name": "", "scopes": ["read"]}), 400)
    assert made["key_id"] in [k["key_id"] for k in _ok(admin.get("/keys"))]
    _problem(writer.get("/keys"), 403)
    revoked = _ok(admin.delete(f"/keys/{made['key_id']}"))
    assert revoked["revoked_at"]
    assert made["key_id"] in [k["key_id"] for k in _ok(admin.get("/keys?include_revoked=true"))]
    assert made["key_id"] not in [k["key_id"] for k in _ok(admin.get("/keys"))]
    _problem(admin.delete("/keys/nokey"), 404)

    # deletion, at the shop too
    deleted = _ok(writer.delete(f"/customers/{other_id}?orders=anonymise"))
    assert deleted["customer_id"] == other_id and deleted["outcome"] == "deleted"
    _problem(writer.delete("/customers/nobody"), 404)
    _problem(writer.delete(f"/customers/{customer_id}?orders=shred"), 400, "orders")

    assert_driven(system, CUSTOMER_ROUTES)


# -- bulk, import, export, segments, rules, reports --------------------------------------------
def test_store_routes(system):
    reader, writer, admin = system.client("read"), system.client("write"), system.client("admin")
    (_, first), (_, second) = system.shop_customer(orders=1), system.shop_customer(orders=3)

    tagged = _ok(writer.post("/customers/bulk", json={
        "action": "add_tags", "customer_ids": [first, second, "nobody"], "tags": ["spring"]}))
    assert {r["customer_id"]: r["outcome"] for r in tagged["results"]} == {
        first: "tagged", second: "tagged", "nobody": "not_found"}
    exported = _ok(writer.post("/customers/bulk", json={"action": "export",
                                                        "customer_ids": [first]}))
    assert exported["summary"] == {"exported": 1} and exported["customers"][0]["customer_id"] == first
    _problem(writer.post("/customers/bulk", json={"action": "set_status", "customer_ids": [first]}),
             400, "status")
    _problem(writer.post("/customers/bulk", json={"action": "shred", "customer_ids": [first]}), 400)

    csv_text = "email,first_name,last_name\r\nnew.person@example.org,New,Person\r\nbad,Bad,Row\r\n"
    headers = {"Content-Type": "text/csv"}
    preview = _ok(writer.post("/imports/customers", data=csv_text.encode(), headers=headers))
    assert [r["outcome"] for r in preview["rows"]] == ["create", "invalid"]
    applied = _ok(writer.post("/imports/customers?apply=true", data=csv_text.encode(),
                              headers=headers))
    assert applied["applied"] is True
    _problem(writer.post("/imports/customers", data=b"name\r\nx\r\n", headers=headers), 400)
    _problem(writer.post("/imports/customers?apply=maybe", data=csv_text.encode(),
                         headers=headers), 400, "apply")

    wait_until(lambda: _ok(reader.get("/customers"))["total"] == 3, message="the import listed")
    exported_csv = _ok(reader.get("/exports/customers?sort=name"))
    rows = list(csv.DictReader(io.StringIO(exported_csv.text)))
    assert len(rows) == 3 and "new.person@example.org" in {r["email"] for r in rows}
    as_json = _ok(reader.get("/exports/customers?format=json&tag=spring&sort=-orders"))
    assert [r["customer_id"] for r in as_json] == [second, first]
    _problem(reader.get("/exports/customers?sort=age"), 400, "sort")

    # saved segments
    segment = _ok(writer.post("/segments", json={
        "name": "Repeat buyers", "conditions": [{"field": "orders_count", "op": "gte",
                                                 "value": 2}]}), 201)
    _problem(writer.post("/segments", json={"name": "Bad", "conditions": [
        {"field": "shoe_size", "op": "gte", "value": 2}]}), 400)
    assert [(s["segment_id"], s["customers"]) for s in _ok(reader.get("/segments"))] == [
        (segment["segment_id"], 1)]
    _problem(system.anonymous().get("/segments"), 401)
    in_segment = _ok(reader.get(f"/customers?saved_segment={segment['segment_id']}"))
    assert [c["customer_id"] for c in in_segment["items"]] == [second]
    exported_json = _ok(reader.get(f"/exports/customers?format=json&saved_segment="
                                   f"{segment['segment_id']}"))
    assert [r["customer_id"] for r in exported_json] == [second]
    _problem(reader.get("/customers?saved_segment=nosuch"), 400)
    _problem(reader.get("/customers?saved_segment=a:b"), 400, "saved_segment")
    members = _ok(reader.get(f"/segments/{segment['segment_id']}/members"))
    assert [m["customer_id"] for m in members["items"]] == [second]
    assert _ok(reader.get("/segments/prospect/members"))["items"] != []  # the imported contact
    _problem(reader.get("/segments/nosuch/members"), 404)
    # edited: validated as on create, the path's id kept; then deleted
    path = f"/segments/{segment['segment_id']}"
    _problem(writer.put(path, json={"name": "Bad", "conditions": [
        {"field": "orders_count", "op": "contains", "value": 2}]}), 400, "conditions.0.op")
    _problem(reader.put(path, json={"name": "Anyone", "conditions": [
        {"field": "orders_count", "op": "gte", "value": 0}]}), 403)
    edited = _ok(writer.put(path, json={"name": "Any buyer", "conditions": [
        {"field": "orders_count", "op": "gte", "value": 1}]}))
    assert edited["segment_id"] == segment["segment_id"] and edited["name"] == "Any buyer"
    assert _ok(reader.get(path)) == edited
    _problem(reader.get("/segments/nosuch"), 404)
    members = _ok(reader.get(path + "/members"))
    assert sorted(m["customer_id"] for m in members["items"]) == sorted([first, second])
    _problem(writer.put("/segments/nosuch", json={"name": "New", "conditions": [
        {"field": "orders_count", "op": "gte", "value": 1}]}), 404)
    flow = _ok(admin.post("/notifications/workflows", json={
        "workflow_id": "buyer-hello", "name": "Hello buyer", "trigger": {
            "event": "customer.saved_segment_entered", "segment_id": segment["segment_id"]},
        "channel": "email", "template": "welcome", "purpose": "transactional"}), 201)
    refused = _problem(writer.delete(path), 409)
    assert "Hello buyer" in refused["detail"] and refused["workflows"] == ["buyer-hello"]
    assert [s["segment_id"] for s in _ok(reader.get("/segments"))] == [segment["segment_id"]]
    _ok(admin.delete(f"/notifications/workflows/{flow['workflow_id']}"))
    assert _ok(writer.delete(path)) == {"deleted": segment["segment_id"]}
    assert _ok(reader.get("/segments")) == []
    _problem(writer.delete(path), 404)
    _problem(reader.get(path + "/members"), 404)

    # built-in segment thresholds: admin only, checked, and every customer re-classified
    assert _ok(reader.get("/segment-thresholds"))["vip_min_spent"] == 500_000
    _problem(system.anonymous().get("/segment-thresholds"), 401)
    _problem(writer.put("/segment-thresholds", json={"vip_min_spent": 1}), 403)
    _problem(admin.put("/segment-thresholds", json={"vip_top_share": 2}), 400)
    _problem(admin.put("/segment-thresholds", json={"shoe_size": 2}), 400)
    assert _ok(reader.get("/customers?segment=vip"))["items"] == []
    lowered = _ok(admin.put("/segment-thresholds", json={"vip_min_spent": 1, "vip_top_share": 0}))
    assert lowered["vip_min_spent"] == 1 and lowered["new_days"] == 30
    assert _ok(reader.get("/segment-thresholds")) == lowered
    vips = _ok(reader.get("/customers?segment=vip"))  # over 0.01 now: VIP beats new
    assert first in [c["customer_id"] for c in vips["items"]]
    _ok(admin.put("/segment-thresholds", json={"vip_min_spent": 500_000, "vip_top_share": 0.1}))

    # rules
    rule = _ok(admin.post("/rules", json={
        "name": "Repeat buyers are regulars", "position": 1,
        "conditions": [{"field": "orders_count", "op": "gte", "value": 3}],
        "actions": [{"type": "add_tag", "value": "regular-buyer"}]}), 201)
    _problem(admin.post("/rules", json={"name": "No actions", "conditions": [
        {"field": "orders_count", "op": "gte", "value": 3}]}), 400)
    _problem(writer.post("/rules", json=rule), 403)
    assert [r["rule_id"] for r in _ok(reader.get("/rules"))] == [rule["rule_id"]]
    _problem(system.anonymous().get("/rules"), 401)
    _ok(admin.delete(f"/rules/{rule['rule_id']}"))
    _problem(admin.delete(f"/rules/{rule['rule_id']}"), 404)

    report = _ok(reader.get("/reports?period=week"))
    assert report["store_id"] == STORE
    _problem(reader.get("/reports?period=year"), 400, "period")

    deleted = _ok(writer.post("/customers/bulk", json={"action": "delete",
                                                       "customer_ids": [first]}))
    assert deleted["summary"] == {"deleted": 1}

    assert_driven(system, STORE_ROUTES)


# -- the loyalty card and programme, templates, workflows, messages, bulk sends, settings ------
def _loyal_customer(system) -> str:
    _, customer_id = system.shop_customer(orders=1)

    def has_account():
        try:
            return system.rpc.loyalty.get_account(STORE, customer_id)["balance"] >= 0
        except Exception:
            return False

    wait_until(has_account, timeout=20, message="the loyalty account")
    return customer_id


def test_loyalty_and_notification_routes(system):
    reader, writer, admin = system.client("read"), system.client("write"), system.client("admin")
    customer_id = _loyal_customer(system)
    card = f"/customers/{customer_id}/loyalty"

    account = _ok(reader.get(card))
    assert account["tier"] == "bronze" and account["store_credit"]["amount"] == 0
    _problem(reader.get("/customers/nobody/loyalty"), 404)
    start = account["balance"]

    adjusted = _ok(writer.post(card + "/adjust", json={"points": 1000, "reason": "welcome gift"},
                               headers={"Idempotency-Key": "gift-1"}))
    assert [e["delta"] for e in adjusted["entries"]] == [1000]
    _problem(writer.post(card + "/adjust", json={"points": 0, "reason": "nothing"}), 400)

    quote = _ok(reader.get(card + "/redemption-quote?points=200"))
    assert quote["allowed"] is True and quote["amount"]["amount"] == 200  # 100 points = 1.00
    assert _ok(reader.get(card))["balance"] == start + 1000, "a quote takes nothing"
    assert _ok(reader.get(card + "/redemption-quote?points=99000"))["allowed"] is False
    _problem(reader.get(card + "/redemption-quote"), 400, "points")
    _problem(reader.get("/customers/nobody/loyalty/redemption-quote?points=200"), 404)

    key = {"Idempotency-Key": f"redeem-{uuid.uuid4().hex}"}
    first = _ok(writer.post(card + "/redeem", json={"points": 200}, headers=key))
    again = _ok(writer.post(card + "/redeem", json={"points": 200}, headers=key))
    assert first == again, "the same Idempotency-Key is answered the same"
    reward = first["reward"]
    assert reward["kind"] == "points" and reward["points"] == 200
    assert reward["amount"]["amount"] == 200  # 100 points = 1.00 off at the shop
    assert reward["state"] in ("pending", "issued") and reward["code"]
    after = _ok(reader.get(card))
    assert after["balance"] == start + 1000 - 200, "one redemption, not two"
    _problem(writer.post(card + "/redeem", json={"points": 99_000}), 409)

    issued = _ok(writer.post(card + "/credit", json={"amount": 500, "reason": "goodwill",
                                                     "note": "late parcel",
                                                     "expires_at": _in(30)}))
    assert issued["entries"] == [] and issued["reward"]["kind"] == "credit"
    assert issued["reward"]["amount"]["amount"] == 500
    assert issued["reward"]["note"] == "late parcel"
    _problem(writer.post(card + "/credit", json={"amount": 500, "reason": "bribe"}), 400)

    def rewards_issued():
        items = _ok(reader.get(card + "/rewards"))["items"]
        return items if all(r["state"] == "issued" for r in items) else None
    listed = wait_until(rewards_issued, timeout=20, message="both coupons made at the shop")
    assert [r["reward_id"] for r in listed] == [issued["reward"]["reward_id"],
                                                reward["reward_id"]]  # newest first
    assert _ok(reader.get(card))["store_credit"]["amount"] == 500  # the unused credit coupon
    _problem(reader.get("/customers/nobody/loyalty/rewards"), 404)

    cancel = card + f"/rewards/{reward['reward_id']}/cancel"
    _problem(reader.post(cancel), 403)
    cancelled = _ok(writer.post(cancel))
    assert cancelled["reward_id"] == reward["reward_id"]
    assert cancelled["state"] in ("closing", "returned")
    wait_until(lambda: _ok(reader.get(card))["balance"] == start + 1000, timeout=20,
               message="the cancelled reward's points back")
    _problem(writer.post(card + "/rewards/no-such-reward/cancel"), 404)

    history = _ok(reader.get(card + "/history?limit=2"))
    assert len(history["items"]) == 2 and history["next_cursor"] is not None
    rest = _ok(reader.get(card + f"/history?limit=50&cursor={history['next_cursor']}"))
    keys = [e["key"] for e in history["items"] + rest["items"]]
    assert len(keys) == len(set(keys)) >= 3 and rest["next_cursor"] is None
    _problem(reader.get(card + "/history?cursor=abc"), 400, "cursor")
    _problem(reader.get("/customers/nobody/loyalty/history"), 404)

    programme = _ok(reader.get("/loyalty/programme"))
    assert [t["name"] for t in programme["tiers"]] == ["bronze", "silver", "gold"]
    _problem(system.anonymous().get("/loyalty/programme"), 401)
    saved = _ok(admin.put("/loyalty/programme", json={**programme, "min_redeem_points": 200}))
    assert saved["min_redeem_points"] == 200
    _problem(admin.put("/loyalty/programme", json={"tiers": [
        {"name": "bronze", "min_points": 0, "max_points": 999, "rate": 10},
        {"name": "silver", "min_points": 500, "rate": 12}]}), 400)
    _problem(writer.put("/loyalty/programme", json=programme), 403)

    # templates
    template = {"channel": "email", "name": "Spring sale",
                "subject": "Spring at {{ store.name }}, {{ customer.first_name }}",
                "html": "<p>Hello {{ customer.first_name }}, you have {{ customer.points }} "
                        "points.</p>",
                "text": "Hello {{ customer.first_name }}, you have {{ customer.points }} points."}
    saved_template = _ok(writer.put("/notifications/templates/spring-sale", json=template))
    assert saved_template["slug"] == "spring-sale"
    bad = _problem(writer.put("/notifications/templates/spring-sale", json={
        **template, "text": "Hi {{ customer.nickname }}"}), 400, "text")
    assert "nickname" in str(bad["errors"])
    slugs = [t["slug"] for t in _ok(reader.get("/notifications/templates"))]
    assert "spring-sale" in slugs and "welcome" in slugs
    _problem(system.anonymous().get("/notifications/templates"), 401)
    assert _ok(reader.get("/notifications/templates/spring-sale"))["subject"] == template["subject"]
    _problem(reader.get("/notifications/templates/nosuch"), 404)
    rendered = _ok(reader.post("/notifications/preview", json={"template": "spring-sale",
                                                               "customer_id": customer_id}))
    assert "points" in rendered["text"] and rendered["subject"].startswith("Spring at")
    sample = _ok(reader.post("/notifications/preview", json={"template": {
        "slug": "draft", "channel": "sms", "body": "Hi {{ customer.first_name }}"}}))
    assert sample == {"subject": None, "html": None, "text": "Hi Ada"}  # SMS: sample data
    _problem(reader.post("/notifications/preview", json={"template": "nosuch"}), 404)

    # workflows
    workflow = _ok(writer.post("/notifications/workflows", json={
        "workflow_id": "vip-welcome", "name": "Welcome new VIPs",
        "trigger": {"event": "customer.tagged", "tag": "vip"}, "delay_seconds": 3600,
        "channel": "email", "template": "spring-sale", "purpose": "marketing",
        "cancel": [{"if": "tag_removed", "tag": "vip"}]}), 201)
    assert workflow["workflow_id"] == "vip-welcome"
    _problem(writer.post("/notifications/workflows", json={
        "name": "Bad", "trigger": {"event": "customer.tagged"}, "channel": "email",
        "template": "spring-sale", "purpose": "marketing"}), 400, "trigger.tag")
    assert [w["workflow_id"] for w in _ok(reader.get("/notifications/workflows"))] == [
        "vip-welcome"]
    _problem(system.anonymous().get("/notifications/workflows"), 401)
    _problem(writer.delete("/notifications/templates/spring-sale"), 400, "slug")  # in use
    _ok(writer.delete("/notifications/workflows/vip-welcome"))
    _problem(writer.delete("/notifications/workflows/vip-welcome"), 404)

    # settings, then a bulk send and its progress
    settings = _ok(reader.get("/notifications/settings"))
    assert settings["timezone"] == "UTC"
    _problem(system.anonymous().get("/notifications/settings"), 401)
    changed = _ok(admin.put("/notifications/settings", json={
        **settings, "name": "Acme", "timezone": "Europe/Berlin", "quiet_start": "22:00",
        "quiet_end": "07:00", "weekly_marketing_cap": 2}))
    assert changed["timezone"] == "Europe/Berlin"
    _problem(admin.put("/notifications/settings", json={"timezone": "Mars/Olympus"}), 400,
             "timezone")
    bulk_key = {"Idempotency-Key": f"spring-{uuid.uuid4().hex[:8]}"}
    sent = _ok(writer.post("/notifications/bulk-sends", headers=bulk_key, json={
        "audience": {"customer_ids": [customer_id]}, "template": "spring-sale",
        "purpose": "transactional"}), 202)
    assert sent["total"] == 1
    _problem(writer.post("/notifications/bulk-sends", json={
        "audience": {"planet": "mars"}, "template": "spring-sale"}), 400, "audience")
    status = _ok(reader.get(f"/notifications/bulk-sends/{sent['bulk_id']}"))
    assert status["bulk_id"] == sent["bulk_id"] and status["total"] == 1
    _problem(reader.get("/notifications/bulk-sends/nosuch"), 404)
    wait_until(lambda: _ok(reader.get(f"/customers/{customer_id}/messages")) != [],
               message="the send in the customer's log")
    log_entry = _ok(reader.get(f"/customers/{customer_id}/messages?limit=1"))[0]
    assert log_entry["template"] == "spring-sale" and log_entry["send_id"].startswith("bulk:")
    assert "_id" not in log_entry and "lease_until" not in log_entry
    _problem(reader.get(f"/customers/{customer_id}/messages?limit=0"), 400, "limit")
    # the store's whole log, filtered and paged
    store_log = _ok(reader.get("/notifications/sends?template=spring-sale&limit=1"))
    assert [e["send_id"] for e in store_log["items"]] == [log_entry["send_id"]]
    assert "_id" not in store_log["items"][0] and "lease_until" not in store_log["items"][0]
    assert _ok(reader.get("/notifications/sends?channel=sms"))["items"] == []
    if store_log["next_cursor"]:
        after = _ok(reader.get(f"/notifications/sends?limit=1&cursor={store_log['next_cursor']}"
                               "&template=spring-sale"))
        assert log_entry["send_id"] not in [e["send_id"] for e in after["items"]]
    _problem(reader.get("/notifications/sends?cursor=not-one-of-ours"), 400, "cursor")
    _problem(reader.get("/notifications/sends?channel=pigeon"), 400, "channel")

    _problem(reader.get("/notifications/sends?held_reason=bored"), 400, "held_reason")
    assert _ok(reader.get("/notifications/sends?held_reason=suppressed"))["items"] == []

    # suppressed addresses: listed and filtered; an admin lifts one, giving the reason
    suppressed_address(system, "bounced@example.com")
    listed = _ok(reader.get("/notifications/suppressions?channel=email"))
    assert [(s["address"], s["kinds"], s["blocks"]) for s in listed["items"]] == [
        ("bounced@example.com", ["bounce"], "all")]
    assert _ok(reader.get("/notifications/suppressions?channel=sms"))["items"] == []
    _problem(reader.get("/notifications/suppressions?channel=pigeon"), 400, "channel")
    lift = "/notifications/suppressions/lift"
    body = {"channel": "email", "address": "Bounced@Example.com"}
    _problem(writer.post(lift, json={**body, "reason": "a writer may not"}), 403)
    _problem(admin.post(lift, json={**body, "reason": "   "}), 400, "reason")
    lifted = _ok(admin.post(lift, json={**body, "reason": "the mailbox works again"}))
    assert lifted["active"] is False and lifted["history"][-1]["detail"] == (
        "the mailbox works again") and lifted["history"][-1]["actor"]
    _problem(admin.post(lift, json={**body, "reason": "twice"}), 404)
    assert _ok(reader.get("/notifications/suppressions"))["items"] == []
    assert len(_ok(reader.get("/notifications/suppressions?include_lifted=true"))["items"]) == 1

    _ok(writer.delete("/notifications/templates/spring-sale"))
    _problem(writer.delete("/notifications/templates/spring-sale"), 404)

    assert_driven(system, LOYALTY_AND_NOTIFICATION_ROUTES)


# -- GDPR requests and consent --------------------------------------------------------------------
def test_gdpr_routes(system):
    officer, reader = system.client("gdpr"), system.client("read")
    woo, customer_id = system.shop_customer(orders=1)

    access = _ok(officer.post("/gdpr/requests", json={"type": "access", "email": woo["email"]}),
                 201)
    assert access["state"] == "received" and access["store_id"] == STORE
    _problem(officer.post("/gdpr/requests", json={"type": "forget-me", "email": woo["email"]}),
             400, "type")
    _problem(reader.post("/gdpr/requests", json={"type": "access", "email": woo["email"]}), 403)
    objection = _ok(officer.post("/gdpr/requests", json={
        "type": "objection", "email": woo["email"], "details": {"channel": "phone"}}), 201)

    elsewhere = system.rpc.gdpr.submit_request("another-store", "access", woo["email"], None,
                                               "test")
    _problem(officer.get(f"/gdpr/requests/{elsewhere['request_id']}"), 404)
    _problem(officer.post(f"/gdpr/requests/{elsewhere['request_id']}/verify"), 404)
    _problem(officer.post(f"/gdpr/requests/{elsewhere['request_id']}/reject",
                          json={"reason": "no"}), 404)
    _problem(officer.get(f"/gdpr/requests/{elsewhere['request_id']}/export"), 404)

    listed = _ok(officer.get("/gdpr/requests?state=received"))
    assert {r["request_id"] for r in listed} == {access["request_id"], objection["request_id"]}
    _problem(officer.get("/gdpr/requests?state=lost"), 400, "state")
    got = _ok(officer.get(f"/gdpr/requests/{access['request_id']}"))
    assert got["type"] == "access" and got["audit"]

    rejected = _ok(officer.post(f"/gdpr/requests/{objection['request_id']}/reject",
                                json={"reason": "the requester's identity could not be confirmed"}))
    assert rejected["state"] == "rejected"
    _problem(officer.post(f"/gdpr/requests/{objection['request_id']}/reject",
                          json={"reason": ""}), 400)
    _problem(officer.post(f"/gdpr/requests/{objection['request_id']}/verify"), 409)
    _problem(officer.get(f"/gdpr/requests/{objection['request_id']}/export"), 400)

    _problem(officer.get(f"/gdpr/requests/{access['request_id']}/export"), 409)  # not ready
    verified = _ok(officer.post(f"/gdpr/requests/{access['request_id']}/verify",
                                json={"note": "passport seen"}))
    assert verified["state"] in ("in_progress", "completed")
    wait_until(lambda: _ok(officer.get(f"/gdpr/requests/{access['request_id']}"))["state"]
               == "completed", timeout=30, message="the access request completed")
    export = _ok(officer.get(f"/gdpr/requests/{access['request_id']}/export"))
    assert {m["service"] for m in export["manifest"]} >= {"customer_sync", "segmentation",
                                                          "loyalty", "notifications"}
    assert export["data"]["customer_sync"]["customer"]["email"] == woo["email"]

    consent = _ok(officer.put(f"/customers/{customer_id}/consent", json={
        "purpose": "email_marketing", "granted": True, "source": "checkout", "note": "newsletter box"}))
    assert consent["purposes"]["email_marketing"]["granted"] is True
    _problem(officer.put(f"/customers/{customer_id}/consent", json={
        "purpose": "telepathy", "granted": True}), 400, "purpose")
    history = _ok(officer.get(f"/customers/{customer_id}/consent"))
    assert [h["purpose"] for h in history["history"]] == ["email_marketing"]
    _problem(reader.get(f"/customers/{customer_id}/consent"), 403)

    assert_driven(system, GDPR_ROUTES)


def test_consent_capture_and_bulk_routes(system):
    officer, reader = system.client("gdpr"), system.client("read")
    _, customer_id = system.shop_customer(orders=0)
    rule = {"scope": "order", "key": "_newsletter_optin", "yes_values": ["yes"],
            "purpose": "email_marketing"}
    assert _ok(officer.get("/consent/capture"))["rules"] == []
    saved = _ok(officer.put("/consent/capture", json={"rules": [rule]}))
    assert saved["rules"] == [rule] and saved["updated_by"]
    _problem(officer.put("/consent/capture", json={"rules": [{**rule, "yes_values": ["no"]}]}),
             400, "rules")
    _problem(reader.get("/consent/capture"), 403)

    bulk = _ok(officer.post("/consent/bulk", json={
        "customer_ids": [customer_id, "someone-else"], "purpose": "email_marketing",
        "granted": True, "reason": "list from the shop's old newsletter tool"}))
    assert bulk["summary"] == {"changed": 1, "unchanged": 0, "not_found": 1}
    _problem(officer.post("/consent/bulk", json={
        "customer_ids": [customer_id] * 501, "purpose": "email_marketing", "granted": True,
        "reason": "x"}), 400, "customer_ids")

    assert_driven(system, CONSENT_ROUTES)


# -- webhook deliveries in quarantine ---------------------------------------------------------
def test_webhook_quarantine_routes(system):
    admin, writer = system.client("admin"), system.client("write")
    inbox = mongo.connect(system.services.mongo_uri)["companion_customer_sync"]["webhook_inbox"]
    # What an older door recorded without judging its fields: the sweep applies it, and
    # quarantines it (a NaN total).
    key = f"{STORE}:order:77:old"
    inbox.insert_one({"_id": key, "store_id": STORE, "topic": "order.created",
                      "resource": "order", "action": "created", "resource_id": 77,
                      "body": '{"id": 77, "status": "processing", "currency": "EUR", '
                              '"total": "NaN"}',
                      "status": "pending", "attempts": 0,
                      "received_at": datetime.now(timezone.utc) - timedelta(hours=1)})
    wait_until(lambda: inbox.find_one({"_id": key, "status": "quarantined"}), timeout=30,
               message="the delivery quarantined")

    page = _ok(admin.get("/webhooks/quarantine?limit=10"))
    [item] = page["items"]
    assert (item["topic"], item["resource_id"], page["next_cursor"]) == ("order.created", 77, None)
    assert "total" in item["error"] and "payload" not in item
    _problem(admin.get("/webhooks/quarantine?limit=0"), 400, "limit")
    _problem(writer.get("/webhooks/quarantine"), 403)

    shown = _ok(admin.get(f"/webhooks/quarantine/{item['quarantine_id']}"))
    assert shown["payload"]["total"] == "NaN"
    _problem(admin.get("/webhooks/quarantine/wh-nothing"), 404)

    _problem(admin.post("/webhooks/quarantine/replay", json={}), 400)
    _problem(admin.post("/webhooks/quarantine/replay", json={"quarantine_ids": "all"}), 400,
             "quarantine_ids")
    replayed = _ok(admin.post("/webhooks/quarantine/replay",
                              json={"quarantine_ids": [item["quarantine_id"], "wh-nothing"]}))
    assert (replayed["replayed"], replayed["not_found"]) == ([item["quarantine_id"]],
                                                              ["wh-nothing"])
    wait_until(lambda: inbox.find_one({"_id": key, "status": "quarantined", "replays": 1}),
               timeout=30, message="the replayed delivery quarantined again (still NaN)")
    assert_driven(system, WEBHOOK_ROUTES)


def test_tag_catalogue_routes(system):
    writer = system.client("write")
    made = _ok(writer.post("/tags", json={"tag": "spring", "description": "Spring buyers"}), 201)
    assert made["customers"] == 0 and made["catalogued"] is True
    _problem(writer.post("/tags", json={"tag": "spring"}), 409)
    _problem(writer.post("/tags", json={"tag": "Spring Sale"}), 400, "tag")
    _problem(writer.post("/tags", json={"tag": "x", "colour": "red"}), 400)
    renamed = _ok(writer.patch("/tags/spring", json={"new_tag": "spring-sale"}))
    assert (renamed["tag"], renamed["description"], renamed["renamed"]) == (
        "spring-sale", "Spring buyers", 0)
    _problem(writer.patch("/tags/spring", json={"description": "gone"}), 404)
    _problem(writer.patch("/tags/spring-sale", json={}), 400)
    _problem(writer.patch("/tags/spring-sale", json={"new_tag": "Not A Slug"}), 400, "new_tag")
    assert _ok(writer.delete("/tags/spring-sale")) == {"deleted": "spring-sale", "customers": 0}
    _problem(writer.delete("/tags/spring-sale"), 404)
    assert_driven(system, TAG_CATALOGUE_ROUTES)


def test_custom_field_routes(system, events):
    """Fields defined, a customer's values set and seen in the customer's page and in the
    customer.updated event; refusals name the field and store nothing."""
    events.listen("customer_sync")
    _, customer_id = system.shop_customer(orders=0)
    writer, reader = system.client("write"), system.client("read")
    tier = _ok(writer.post("/custom-fields", json={
        "key": "tier", "label": "Tier", "type": "choice", "options": ["gold", "silver"]}), 201)
    assert (tier["key"], tier["options"], tier["required"]) == ("tier", ["gold", "silver"], False)
    _ok(writer.post("/custom-fields", json={"key": "visits", "label": "Visits",
                                            "type": "number", "min": 0}), 201)
    _problem(writer.post("/custom-fields", json={"key": "tier", "label": "T", "type": "text"}),
             409)
    _problem(writer.post("/custom-fields", json={"key": "Tier!", "label": "T", "type": "text"}),
             400, "key")
    _problem(reader.post("/custom-fields", json={"key": "x", "label": "X", "type": "text"}), 403)
    assert [f["key"] for f in _ok(reader.get("/custom-fields"))] == ["tier", "visits"]
    _problem(system.anonymous().get("/custom-fields"), 401)

    values = f"/customers/{customer_id}/custom-fields"
    problem = _problem(writer.put(values, json={"tier": "bronze", "colour": "red"}), 400)
    assert set(problem["errors"]) == {"custom_fields.tier", "custom_fields.colour"}
    assert _ok(reader.get(f"/customers/{customer_id}"))["customer"]["custom_fields"] == {}
    answer = _ok(writer.put(values, json={"tier": "gold", "visits": 4}))
    assert answer == {"customer_id": customer_id, "custom_fields": {"tier": "gold", "visits": 4},
                      "changed": True}
    page = _ok(reader.get(f"/customers/{customer_id}"))
    assert page["customer"]["custom_fields"] == {"tier": "gold", "visits": 4}
    def fields_changed(got=None) -> list[dict]:
        return [e for e in events.of_type("customer.updated")
                if e["data"]["customer_id"] == customer_id
                and e["data"]["changed_fields"] == ["custom_fields"]]
    events.wait_for(fields_changed)
    [event] = fields_changed()
    assert event["data"]["custom_fields"] == {"tier": "gold", "visits": 4}
    _problem(writer.put("/customers/nobody/custom-fields", json={}), 404)

    csv_text = ("email,custom.tier,custom.visits\r\nnew@example.com,silver,2\r\n"
                "bad@example.com,bronze,x\r\n")
    imported = _ok(writer.post("/imports/customers?apply=true", data=csv_text.encode(),
                               headers={"Content-Type": "text/csv"}))
    good, bad = imported["rows"]
    assert (good["outcome"], bad["outcome"]) == ("create", "invalid")
    assert set(bad["errors"]) == {"custom.tier", "custom.visits"}
    assert _ok(reader.get(f"/customers/{good['customer_id']}"))["customer"]["custom_fields"] == {
        "tier": "silver", "visits": 2}

    # The list and the export, from segmentation's copy of the values.
    wait_until(lambda: _ok(reader.get("/customers?custom.tier=gold"))["total"] == 1,
               message="the list filters by the custom field")
    [listed] = _ok(reader.get("/customers?custom.tier=gold&custom.visits=4"))["items"]
    assert (listed["customer_id"], listed["custom_fields"]) == (customer_id,
                                                               {"tier": "gold", "visits": 4})
    assert _ok(reader.get("/customers?custom.visits=5"))["total"] == 0
    _problem(reader.get("/customers?custom.colour=red"), 400, "custom.colour")
    exported = _ok(reader.get("/exports/customers?custom.tier=gold")).text.splitlines()
    assert exported[0].endswith(",custom.tier,custom.visits")
    assert exported[1].endswith(",gold,4") and len(exported) == 2

    _problem(writer.put("/custom-fields/tier", json={"type": "text"}), 409)
    renamed = _ok(writer.put("/custom-fields/tier", json={"label": "Loyalty tier"}))
    assert (renamed["label"], renamed["type"]) == ("Loyalty tier", "choice")
    _problem(writer.put("/custom-fields/nothing", json={"label": "x"}), 404)
    assert _ok(writer.delete("/custom-fields/tier")) == {
        "key": "tier", "deleted": True, "values_removed": 2}
    _problem(writer.delete("/custom-fields/tier"), 404)
    assert _ok(reader.get(f"/customers/{customer_id}"))["customer"]["custom_fields"] == {
        "visits": 4}
    # The deletion told everyone: each holder's customer.updated, and segmentation's list drops
    # the value, so a field defined again under the key matches none of the old values.
    events.wait_for(lambda got=None: [e for e in fields_changed()
                                      if e["data"]["custom_fields"] == {"visits": 4}])
    wait_until(lambda: [r["custom_fields"] for r in _ok(reader.get("/customers"))["items"]
                        if r["customer_id"] == customer_id] == [{"visits": 4}],
               message="segmentation drops the deleted field's value")
    _ok(writer.post("/custom-fields", json={"key": "tier", "label": "Tier again",
                                            "type": "text"}), 201)
    assert _ok(reader.get("/customers?custom.tier=gold"))["total"] == 0
    assert _ok(reader.get("/customers?custom.tier=silver"))["total"] == 0
    assert_driven(system, CUSTOM_FIELD_ROUTES)


def test_company_routes(system):
    """A company made with a group's terms, a customer joined to it and seen as a member, in
    the list, on their page and in the export; refusals name the field and store nothing."""
    _, customer_id = system.shop_customer(orders=0)
    writer, reader, admin = system.client("write"), system.client("read"), system.client("admin")
    _ok(writer.put("/groups/wholesale", json={"name": "Wholesale", "discount_percent": "10",
                                              "payment_terms_days": 30}))
    _problem(writer.post("/companies", json={"name": "Acme", "group": "nosuch"}), 400, "group")
    acme = _ok(writer.post("/companies", json={
        "name": "Acme GmbH", "domain": "acme.example", "vat_id": "de 123456789",
        "address": {"city": "Berlin", "country": "DE"}, "group": "wholesale"}), 201)
    assert (acme["vat_id"], acme["group_terms"]["payment_terms_days"]) == ("DE123456789", 30)
    _problem(writer.post("/companies", json={"name": "Copy", "domain": "acme.example"}), 409,
             "domain")
    _problem(writer.post("/companies", json={"name": "Mail", "domain": "gmail.com"}), 400,
             "domain")
    _problem(reader.post("/companies", json={"name": "X"}), 403)
    company = f"/companies/{acme['company_id']}"
    assert _ok(reader.get(company))["name"] == "Acme GmbH"
    _problem(reader.get("/companies/co_" + "0" * 24), 404)
    _problem(reader.get("/companies/acme"), 400, "company_id")
    assert _ok(writer.put(company, json={"domain": None}))["domain"] is None
    _problem(writer.put(company, json={"name": ""}), 400)

    _ok(writer.put(f"/customers/{customer_id}/company", json={"company_id": acme["company_id"]}))
    _problem(writer.put(f"/customers/{customer_id}/company", json={"company_id": "acme"}), 400)
    _problem(writer.put("/customers/nobody/company", json={"company_id": None}), 404)
    assert _ok(reader.get(f"/customers/{customer_id}"))["company"] == {
        "company_id": acme["company_id"], "name": "Acme GmbH"}
    wait_until(lambda: _ok(reader.get(company + "/members"))["items"],
               message="segmentation holds the customer's company")
    [member] = _ok(reader.get(company + "/members"))["items"]
    assert (member["customer_id"], member["company_name"]) == (customer_id, "Acme GmbH")
    _problem(reader.get(company + "/members?limit=0"), 400, "limit")
    [listed] = _ok(reader.get(f"/customers?company_id={acme['company_id']}"))["items"]
    assert listed["company_name"] == "Acme GmbH"
    [row] = list(csv.DictReader(io.StringIO(_ok(reader.get(
        f"/exports/customers?company_id={acme['company_id']}")).text)))
    assert (row["company_id"], row["company_name"]) == (acme["company_id"], "Acme GmbH")
    [in_list] = _ok(reader.get("/companies?q=ACME"))["items"]
    assert in_list["stats"]["members"] == 1
    _problem(reader.get("/companies?limit=101"), 400, "limit")

    assert _ok(reader.get("/settings/companies")) == {"match_email_domain": False}
    _problem(system.anonymous().get("/settings/companies"), 401)
    _problem(writer.put("/settings/companies", json={"match_email_domain": True}), 403)
    _problem(admin.put("/settings/companies", json={"match_email_domain": "yes"}), 400)
    assert _ok(admin.put("/settings/companies", json={"match_email_domain": True})) == {
        "match_email_domain": True}
    assert _ok(writer.delete(company)) == {"company_id": acme["company_id"], "deleted": True,
                                           "members_released": 1}
    _problem(writer.delete(company), 404)
    assert _ok(reader.get(f"/customers/{customer_id}"))["company"] is None
    assert_driven(system, COMPANY_ROUTES)


def test_duplicate_routes(system):
    """Webhooks make a registered customer and two guests who overlap: one guest has the
    registered customer's phone (written nationally) and name and postcode, the other only the
    name and postcode. The API answers both groups, the stronger first."""
    kim = dict(first_name="Kim", last_name="Weber", postcode="10115", country="DE")
    system.webhook("customer.created", payloads.customer(
        9001, "kim@example.com", first_name="Kim", last_name="Weber",
        billing=payloads.address("kim@example.com", phone="+49 30 1234567", **kim)))
    system.webhook("order.created", payloads.order(
        9101, 0, email="kim.w@example.net",
        billing=payloads.address("kim.w@example.net", phone="030 123 45 67", **kim)))
    system.webhook("order.created", payloads.order(
        9102, 0, email="k.weber@example.org",
        billing=payloads.address("k.weber@example.org", phone="", **{**kim, "postcode": "101 15",
                                                                     "first_name": "KIM"})))
    reader = system.client("read")

    def both_groups():
        groups = _ok(reader.get("/duplicates"))["groups"]
        return groups if len(groups) == 2 else None
    by_phone, by_name = wait_until(both_groups, timeout=30, message="two duplicate groups")
    emails = lambda group: sorted(c["email"] for c in group["customers"])  # noqa: E731
    assert (by_phone["match"], by_phone["matched"], by_phone["score"]) == (
        "phone", ["phone", "name_postcode"], 85)
    assert emails(by_phone) == ["kim.w@example.net", "kim@example.com"]
    assert (by_name["match"], by_name["score"], by_name["size"]) == ("name_postcode", 60, 3)
    assert emails(by_name) == ["k.weber@example.org", "kim.w@example.net", "kim@example.com"]
    kinds = {c["email"]: (c["kind"], c["orders_count"]) for c in by_name["customers"]}
    assert kinds == {"kim@example.com": ("registered", 0), "kim.w@example.net": ("guest", 1),
                     "k.weber@example.org": ("guest", 1)}

    first = _ok(reader.get("/duplicates?limit=1"))
    assert [g["group_id"] for g in first["groups"]] == [by_phone["group_id"]]
    second = _ok(reader.get("/duplicates", params={"limit": 1, "cursor": first["next_cursor"]}))
    assert [g["group_id"] for g in second["groups"]] == [by_name["group_id"]]
    assert second["next_cursor"] is None
    only_names = _ok(reader.get("/duplicates?match=name_postcode"))["groups"]
    assert [g["group_id"] for g in only_names] == [by_name["group_id"]]

    _problem(reader.get("/duplicates?limit=201"), 400, "limit")
    _problem(reader.get("/duplicates?match=zip"), 400, "match")
    elsewhere = encode_cursor(["another-store", None, "phone", ""])
    _problem(reader.get("/duplicates", params={"cursor": elsewhere}), 400, "cursor")
    _problem(system.client("gdpr").get("/duplicates"), 403)
    assert_driven(system, DUPLICATE_ROUTES)
