"""Scopes, attacked: every route of the gateway's table, called with a key that lacks the scope
the route needs, answers 403 and changes nothing.

The scope each route needs is written out here, not read back from the table: a route whose
scope is loosened (the redeem route made to need only `read`, say) fails this file, and a new
route fails it until its scope is stated. The matrix itself walks the route table, so every
route is covered. In-process first (the gateway app with recording stand-ins for the services:
a refused request reaches no service but the key check), then over HTTP against the running
system (a refused request changes no service's database)."""
from __future__ import annotations

import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.problems import Problem
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import API_PREFIX, Router
from tests.gateway_system import shop, system  # noqa: F401 - fixtures
from tests.security.gateway_requests import (SAMPLE_BODIES, body_of, database_counts,
                                             path_of, store_a_records)
from tests.support import SystemBarrier

ROUTES = build_routes()

# The scope every route needs: the policy, stated once, checked against the table.
REQUIRED_SCOPE: dict[str, str | None] = {
    "GET /customers": "read",
    "GET /customers/<customer_id>": "read",
    "PATCH /customers/<customer_id>": "write",
    "DELETE /customers/<customer_id>": "write",
    "GET /customers/<customer_id>/orders": "read",
    "GET /duplicates": "read",
    "POST /customers/merge": "write",
    "GET /merges": "read",
    "GET /merges/<merge_id>": "read",
    "POST /merges/<merge_id>/unmerge": "write",
    "POST /customers/<customer_id>/tags": "write",
    "DELETE /customers/<customer_id>/tags/<tag>": "write",
    "POST /customers/<customer_id>/groups": "write",
    "DELETE /customers/<customer_id>/groups/<group>": "write",
    "POST /customers/bulk": "write",
    "POST /imports/customers": "write",
    "GET /exports/customers": "read",
    "GET /customers/<customer_id>/notes": "read",
    "POST /customers/<customer_id>/notes": "write",
    "PATCH /notes/<note_id>": "write",
    "DELETE /notes/<note_id>": "write",
    "GET /customers/<customer_id>/reminders": "read",
    "POST /customers/<customer_id>/reminders": "write",
    "GET /reminders": "read",
    "POST /reminders/<reminder_id>/complete": "write",
    "DELETE /reminders/<reminder_id>": "write",
    "GET /customers/<customer_id>/timeline": "read",
    "GET /tags": "read",
    "POST /tags": "write",
    "PATCH /tags/<tag>": "write",
    "DELETE /tags/<tag>": "write",
    "GET /groups": "read",
    "PUT /groups/<slug>": "write",
    "GET /segments": "read",
    "POST /segments": "write",
    "GET /segments/<segment_id>": "read",
    "PUT /segments/<segment_id>": "write",
    "DELETE /segments/<segment_id>": "write",
    "GET /segment-thresholds": "read",
    "PUT /segment-thresholds": "admin",
    "GET /segments/<segment_id>/members": "read",
    "GET /rules": "read",
    "POST /rules": "admin",
    "DELETE /rules/<rule_id>": "admin",
    "GET /reports": "read",
    "GET /customers/<customer_id>/loyalty": "read",
    "GET /customers/<customer_id>/loyalty/history": "read",
    "POST /customers/<customer_id>/loyalty/redeem": "write",
    "POST /customers/<customer_id>/loyalty/adjust": "write",
    "POST /customers/<customer_id>/loyalty/credit": "write",
    "GET /customers/<customer_id>/loyalty/redemption-quote": "read",
    "GET /customers/<customer_id>/loyalty/rewards": "read",
    "POST /customers/<customer_id>/loyalty/rewards/<reward_id>/cancel": "write",
    "GET /loyalty/programme": "read",
    "PUT /loyalty/programme": "admin",
    "GET /notifications/templates": "read",
    "GET /notifications/templates/<slug>": "read",
    "PUT /notifications/templates/<slug>": "write",
    "DELETE /notifications/templates/<slug>": "write",
    "POST /notifications/preview": "read",
    "GET /notifications/workflows": "read",
    "POST /notifications/workflows": "write",
    "DELETE /notifications/workflows/<workflow_id>": "write",
    "GET /customers/<customer_id>/messages": "read",
    "GET /notifications/sends": "read",
    "POST /notifications/bulk-sends": "write",
    "GET /notifications/bulk-sends/<bulk_id>": "read",
    "GET /notifications/settings": "read",
    "PUT /notifications/settings": "admin",
    "GET /notifications/suppressions": "read",
    "POST /notifications/suppressions/lift": "admin",
    "POST /gdpr/requests": "gdpr",
    "GET /gdpr/requests": "gdpr",
    "GET /gdpr/requests/<request_id>": "gdpr",
    "POST /gdpr/requests/<request_id>/verify": "gdpr",
    "POST /gdpr/requests/<request_id>/reject": "gdpr",
    "GET /gdpr/requests/<request_id>/export": "gdpr",
    "GET /customers/<customer_id>/consent": "gdpr",
    "PUT /customers/<customer_id>/consent": "gdpr",
    "GET /consent/capture": "gdpr",
    "PUT /consent/capture": "gdpr",
    "POST /consent/bulk": "gdpr",
    "GET /keys": "admin",
    "POST /keys": "admin",
    "DELETE /keys/<key_id>": "admin",
    "GET /webhooks/quarantine": "admin",
    "GET /webhooks/quarantine/<quarantine_id>": "admin",
    "POST /webhooks/quarantine/replay": "admin",
    "GET /custom-fields": "read",
    "POST /custom-fields": "write",
    "PUT /custom-fields/<key>": "write",
    "DELETE /custom-fields/<key>": "write",
    "PUT /customers/<customer_id>/custom-fields": "write",
    "GET /companies": "read",
    "POST /companies": "write",
    "GET /companies/<company_id>": "read",
    "PUT /companies/<company_id>": "write",
    "DELETE /companies/<company_id>": "write",
    "GET /companies/<company_id>/members": "read",
    "PUT /customers/<customer_id>/company": "write",
    "GET /settings/companies": "read",
    "PUT /settings/companies": "admin",
    "GET /openapi.json": None,
}
# Requests that change nothing although they are not GETs: a preview renders a template.
READ_ONLY_POSTS = {"POST /notifications/preview"}

# Which key scopes satisfy a route's scope: admin includes every scope, write includes read,
# gdpr stands alone (the policy of services/gateway/auth.py, stated independently of it).
SATISFIED_BY = {"read": {"read", "write", "admin"}, "write": {"write", "admin"},
                "gdpr": {"gdpr", "admin"}, "admin": {"admin"}}
KEY_SCOPES = [("read",), ("write",), ("gdpr",), ("admin",), ("read", "gdpr"), ("write", "gdpr"),
              ("read", "write", "gdpr")]
IDS = {kind: f"target-{kind}" for kind in (
    "customer_id", "note_id", "reminder_id", "tag", "group", "template", "segment_id", "rule_id",
    "workflow_id", "bulk_id", "request_id", "key_id", "quarantine_id", "reward_id", "merge_id",
    "duplicate_id")}
IDS["custom_field"] = "target_field"  # a custom field's key takes no '-'
IDS["company_id"] = "co_" + "0" * 24  # a company's id is co_ and 24 hex characters


def lacking(scope: str) -> list[tuple[str, ...]]:
    return [key for key in KEY_SCOPES if not set(key) & SATISFIED_BY[scope]]


def holding(scope: str) -> list[tuple[str, ...]]:
    return [key for key in KEY_SCOPES if set(key) & SATISFIED_BY[scope]]


SCOPED = [r for r in ROUTES if r.scope is not None]
REFUSALS = [(r, key) for r in SCOPED for key in lacking(REQUIRED_SCOPE.get(r.endpoint, "read"))]
PASSES = [(r, key) for r in SCOPED for key in holding(REQUIRED_SCOPE.get(r.endpoint, "admin"))]


def _case_id(case) -> str:
    route, key = case
    return f"{route.endpoint} as {'+'.join(key)}"


# -- the policy against the table ----------------------------------------------------------------
def test_every_route_needs_the_scope_stated_for_it():
    served = {r.endpoint: r.scope for r in ROUTES}
    assert set(served) - set(REQUIRED_SCOPE) == set(), "routes whose scope is not stated here"
    assert set(REQUIRED_SCOPE) - set(served) == set(), "stated routes the gateway does not serve"
    differing = {e: (served[e], REQUIRED_SCOPE[e]) for e in served if served[e] != REQUIRED_SCOPE[e]}
    assert differing == {}, "routes needing another scope than stated (served, stated)"


def test_no_change_needs_only_the_read_scope():
    """A second line of defence beside the list: whatever the list says, a route that changes
    something never needs only `read`, and only the document is open to anyone."""
    too_loose = [r.endpoint for r in ROUTES if r.method != "GET"
                 and r.endpoint not in READ_ONLY_POSTS and r.scope in ("read", None)]
    assert too_loose == []
    assert [r.endpoint for r in ROUTES if r.scope is None] == ["GET /openapi.json"]
    assert all(r.scope == "gdpr" for r in ROUTES if r.tag == "gdpr")
    assert all(r.scope == "admin" for r in ROUTES if r.tag == "keys")


def test_every_route_with_a_body_has_a_valid_sample():
    for route in ROUTES:
        if route.body is None:
            continue
        raw, headers = body_of(route, IDS)
        if route.body_media_type == "application/json":
            errors = [e.message for e in route.validator().iter_errors(json.loads(raw))]
            assert errors == [], f"the sample body of {route.endpoint} is invalid: {errors}"
        else:
            assert raw and headers["Content-Type"] == route.body_media_type
    assert set(SAMPLE_BODIES) == {r.endpoint for r in ROUTES if r.body is not None}


def test_the_matrix_refuses_something_for_every_scoped_route():
    refused = {route.endpoint for route, _ in REFUSALS}
    assert refused == {r.endpoint for r in SCOPED}


# -- in process: a refused request reaches no service -------------------------------------------
class RecordingBackends:
    """The services behind the gateway as a recorder: the key check answers from `keys`,
    every other call is recorded and answered 404 (no data here)."""

    timeout = 5.0

    def __init__(self, keys: dict[str, tuple[str, ...]]) -> None:
        self.keys = keys
        self.calls: list[tuple[str, str]] = []

    def call(self, service: str, method: str, *args, **kwargs):
        self.calls.append((service, method))
        if (service, method) == ("customer_sync", "authenticate_api_key"):
            scopes = self.keys.get(args[0])
            if scopes is None:
                raise Problem(404, "unknown key")
            return {"key_id": "k-" + "-".join(scopes), "store_id": "store-a", "name": "test",
                    "scopes": list(scopes), "rate_limit_per_minute": None}
        raise Problem(404, f"{service}.{method}: nothing here")

    def gather(self, calls, timeout=None):
        results = []
        for service, method, args, kwargs in calls:
            try:
                results.append(self.call(service, method, *args, **kwargs))
            except Problem as problem:
                results.append(problem)
        return results


@pytest.fixture(scope="module")
def app() -> GatewayApp:
    return GatewayApp(Router(ROUTES), Authenticator(0), RateLimiter(10 ** 9),
                      max_body_bytes=1 << 20)


def send(app: GatewayApp, route, key_scopes: tuple[str, ...]):
    key = "key-" + "-".join(key_scopes)
    backends = RecordingBackends({key: key_scopes})
    body, headers = body_of(route, IDS)
    environ = EnvironBuilder(path=API_PREFIX + path_of(route, IDS), method=route.method,
                             data=body, headers={"Authorization": f"Bearer {key}", **headers},
                             environ_base={"REMOTE_ADDR": "192.0.2.10"}).get_environ()
    return app.handle(Request(environ), backends), backends.calls


@pytest.mark.parametrize("case", REFUSALS, ids=_case_id)
def test_a_key_lacking_the_scope_is_refused_and_reaches_no_service(app, case):
    route, key_scopes = case
    response, calls = send(app, route, key_scopes)
    assert response.status_code == 403, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/problem+json"
    problem = json.loads(response.get_data())
    assert problem["required_scope"] == REQUIRED_SCOPE[route.endpoint]
    assert calls == [("customer_sync", "authenticate_api_key")], "a refused request went on"


@pytest.mark.parametrize("case", PASSES, ids=_case_id)
def test_a_key_holding_the_scope_gets_past_the_check(app, case):
    """The other half of the matrix, so it cannot pass by refusing everyone: a key with the
    scope reaches the route's handler (here answered 404 by the stand-ins), never 401 or 403."""
    route, key_scopes = case
    response, calls = send(app, route, key_scopes)
    assert response.status_code not in (401, 403), response.get_data(as_text=True)[:300]
    assert len(calls) > 1 or response.status_code < 300, "the handler never ran"


# -- over HTTP against the running system -------------------------------------------------------
def test_refused_over_http_and_no_database_changes(system):
    """The real stack, naming the store's real records: each route, with the widest key that
    still lacks its scope, answers 403 and leaves every service's database as it was. A refused
    request does its work (none) before it answers, and a wrongly accepted one has made its
    direct change by then, so the databases are compared right after the last answer."""
    settled = SystemBarrier(system.services)
    ids = store_a_records(system)["ids"]
    widest = {scope: max(lacking(scope), key=len) for scope in SATISFIED_BY}
    clients = {key: system.client(*key, rate_limit_per_minute=100_000)
               for key in set(widest.values())}
    settled.quiet()
    before = database_counts(system.services)
    refused = {}
    for route in SCOPED:
        key = widest[REQUIRED_SCOPE[route.endpoint]]
        body, headers = body_of(route, ids)
        response = clients[key].request(route.method, path_of(route, ids), data=body,
                                        headers=headers)
        refused[route.endpoint] = response.status_code
    assert {e: s for e, s in refused.items() if s != 403} == {}
    assert database_counts(system.services) == before
