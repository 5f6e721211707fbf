"""The admin console against the gateway's real pipeline (GatewayApp, Backends, routes) with
stand-in services: sign-in, the session cookie, CSRF, scopes, escaping and the list's filters.
The same flows run end to end in a browser in tests/browser/."""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request

from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.backends import Backends
from services.gateway.console import present
from services.gateway.console.app import COOKIE_NAME, ConsoleApp
from services.gateway.console.session import Session, SessionCodec
from services.gateway.console.views import _safe_next
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from shared.config import Config
from shared.errors import NotFound

KEYS = {"wcc_read": ["read"], "wcc_write": ["write"], "wcc_gdpr": ["write", "gdpr"]}
EVIL = "<script>alert(1)</script>"


class Reply:
    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def result(self):
        return self.fn(*self.args, **self.kwargs)


class Method:
    def __init__(self, service, name, calls):
        self.service, self.name, self.calls = service, name, calls

    def call_async(self, *args, **kwargs):
        self.calls.append((self.service.name, self.name, args))
        return Reply(getattr(self.service, self.name), args, kwargs)


class Proxy:
    def __init__(self, service, calls):
        self.service, self.calls = service, calls

    def __getattr__(self, name):
        return Method(self.service, name, self.calls)


class CustomerSync:
    name = "customer_sync"

    def authenticate_api_key(self, key):
        if key not in KEYS:
            raise NotFound("no such key")
        return {"key_id": key[4:], "store_id": "shop", "name": f"{key} key",
                "scopes": KEYS[key], "rate_limit_per_minute": None}

    def get_customer(self, store, customer_id):
        if customer_id != "c1":
            raise NotFound(f"no customer {customer_id}")
        return {"customer_id": "c1", "store_id": store, "email": "ada@example.com",
                "first_name": EVIL, "last_name": "Lovelace", "registered": True,
                "billing": {"city": "London", "country": "GB", "address_1": "1 Road"}}

    def list_orders(self, store, customer_id, page):
        return {"items": [], "next_cursor": None}

    def list_notes(self, store, customer_id, category=None):
        return [{"note_id": "n1", "customer_id": customer_id, "category": "complaint",
                 "text": EVIL, "created_at": "2026-01-02T00:00:00+00:00"}]

    def list_reminders(self, store, customer_id, status=None, due_before=None):
        return []

    def timeline(self, store, customer_id, page):
        return {"items": [], "next_cursor": None}

    def delete_customers(self, store, ids, orders, actor):
        return {"results": [{"customer_id": i, "outcome": "deleted", "orders": 1} for i in ids]}

    def add_note(self, store, customer_id, body, actor):
        return {"note_id": "n2", "customer_id": customer_id, **body,
                "created_at": "2026-01-03T00:00:00+00:00"}


class Segmentation:
    name = "segmentation"

    def search_customers(self, store, filters, sort, page):
        return {"items": [{"customer_id": "c1", "name": f"{EVIL} Lovelace", "email": "a@x.io",
                           "account_status": "active", "segment": "vip", "tags": ["gold"],
                           "groups": [], "stats": {"orders_count": 2, "total_spent": {
                               "amount": 12345, "currency": "EUR"},
                               "last_order_at": None}}],
                "next_cursor": "abc", "total": 7}

    def list_tags(self, store):
        return [{"tag": "gold", "customers": 1}]

    def list_groups(self, store):
        return []

    def get_profile(self, store, customer_id):
        return {"customer_id": customer_id, "status": "active", "segment": "vip",
                "stats": {"orders_count": 3, "total_spent": 30000, "average_order_value": 10000,
                          "currency": "EUR", "first_order_at": "2026-01-01T00:00:00+00:00",
                          "last_order_at": "2026-02-01T00:00:00+00:00",
                          "avg_days_between_orders": 15.5},
                "tags": [{"tag": "gold", "source": "manual"}], "groups": []}


class Loyalty:
    name = "loyalty"

    def get_account(self, store, customer_id):
        return {"customer_id": customer_id, "status": "active", "balance": 120,
                "negative_balance": False, "debt": 0,
                "cash_value": {"amount": 120, "currency": "EUR"}, "tier": "silver",
                "points_in_window": 120, "member_since": "2026-01-01T00:00:00+00:00",
                "next_expiry": None, "store_credit": {"amount": 0, "currency": "EUR"}}


class World:
    def __init__(self, secret="s" * 32, clock=None, **settings):
        self.calls = []
        self.now = [1_000_000.0]
        config = Config({}, CONSOLE_SESSION_SECRET=secret or "", **settings)
        self.gateway = GatewayApp(Router(build_routes()), Authenticator(0), RateLimiter(600),
                                  max_body_bytes=1 << 20)
        self.console = ConsoleApp(self.gateway, config, clock=clock or (lambda: self.now[0]))
        services = [CustomerSync(), Segmentation(), Loyalty()]
        self.backends = Backends({s.name: Proxy(s, self.calls) for s in services}, 5)
        self.client = Client(self.wsgi)

    def wsgi(self, environ, start_response):
        return self.console.handle(Request(environ), self.backends)(environ, start_response)

    def called(self, method):
        return [c for c in self.calls if c[1] == method]

    def csrf(self, url="/console/customers"):
        page = self.client.get(url).get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def login(self, key="wcc_write"):
        token = self.csrf("/console/login")
        return self.client.post("/console/login", data={"api_key": key, "csrf_token": token,
                                                        "next": "/console/customers"})


def test_a_wrong_key_is_refused_and_a_right_one_signs_in_with_a_safe_cookie():
    world = World()
    refused = world.login("wcc_nope")
    assert refused.status_code == 401 and "unknown or revoked" in refused.get_data(as_text=True)
    answer = world.login("wcc_read")
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/customers"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http, auto
    assert "wcc_read" not in cookie  # the key is sealed, not readable
    assert world.client.get("/console/customers").status_code == 200


def test_the_cookie_is_secure_behind_a_tls_proxy_or_when_configured():
    world = World()
    token = world.csrf("/console/login")
    answer = world.client.post("/console/login", headers={"X-Forwarded-Proto": "https"},
                               data={"api_key": "wcc_read", "csrf_token": token})
    assert "Secure" in answer.headers["Set-Cookie"]
    always = World(CONSOLE_COOKIE_SECURE="true")
    assert "Secure" in always.client.get("/console/login").headers["Set-Cookie"]


def test_pages_need_a_session_and_the_login_returns_only_to_console_pages():
    world = World()
    answer = world.client.get("/console/customers/c1")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/console/login?next=%2Fconsole%2Fcustomers%2Fc1"
    for evil in ("https://evil.example/console/", "//evil.example/console/x",
                 "/console\\..\\x", "/elsewhere", None):
        assert _safe_next(evil) == "/console/customers"
    assert _safe_next("/console/customers/c1?x=1") == "/console/customers/c1?x=1"


def test_a_post_without_the_sessions_csrf_token_is_refused_and_does_nothing():
    world = World()
    world.login("wcc_write")
    forged = world.client.post("/console/customers/c1/notes",
                               data={"category": "general", "text": "forged"})
    wrong = world.client.post("/console/customers/c1/notes",
                              data={"category": "general", "text": "forged",
                                    "csrf_token": "x" * 43})
    assert forged.status_code == 403 and wrong.status_code == 403
    assert world.called("add_note") == []
    ok = world.client.post("/console/customers/c1/notes", data={
        "category": "general", "text": "called back", "csrf_token": world.csrf()})
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/console/customers/c1#notes")
    [(_, _, args)] = world.called("add_note")
    assert args[2] == {"category": "general", "text": "called back"}
    assert "Note added." in world.client.get("/console/customers/c1").get_data(as_text=True)


def test_signing_in_changes_the_csrf_token_and_the_login_form_is_protected_too():
    world = World()
    before = world.csrf("/console/login")
    assert world.client.post("/console/login", data={"api_key": "wcc_read"}).status_code == 403
    world.client.post("/console/login", data={"api_key": "wcc_read", "csrf_token": before})
    assert world.csrf() != before


def test_every_page_has_strict_security_headers_and_escapes_what_it_shows():
    world = World()
    pages = [world.client.get("/console/login")]
    world.login("wcc_write")
    pages += [world.client.get(url) for url in ("/console/customers", "/console/customers/c1")]
    for answer, url in zip(pages, ("login", "list", "customer")):
        assert answer.status_code == 200, url
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        html = answer.get_data(as_text=True)
        assert "<script>alert" not in html
        assert "<script>" not in html.replace('<script src="/console/static/console.js" defer>',
                                              "")
        assert "style=" not in html  # no inline style either: the policy would block it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in world.client.get(
        "/console/customers/c1").get_data(as_text=True)


def test_a_read_key_sees_no_write_forms_and_the_api_refuses_it_anyway():
    world = World()
    world.login("wcc_read")
    page = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert "Points to redeem" in page or "120 points" in page
    for action in ("/notes", "/tags", "/redeem", "/reminders", "/gdpr"):
        assert f'action="/console/customers/c1{action}"' not in page, action
    assert 'id="bulk-bar"' not in world.client.get("/console/customers").get_data(as_text=True)
    answer = world.client.post("/console/customers/c1/notes", data={
        "category": "general", "text": "sneaky", "csrf_token": world.csrf()})
    assert answer.status_code == 303 and world.called("add_note") == []
    assert "lacks the &#39;write&#39; scope" in world.client.get(
        "/console/customers/c1").get_data(as_text=True)


def test_a_bulk_delete_asks_first_and_then_keeps_the_chosen_orders():
    world = World()
    world.login("wcc_write")
    form = {"action": "delete", "orders": "delete", "customer_id": ["c1", "c2"],
            "label:c1": EVIL, "back": "https://evil.example/", "csrf_token": world.csrf()}
    asked = world.client.post("/console/customers/bulk", data=form)
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Delete 2 customers" in html
    assert "orders are <strong>deleted</strong>" in html and "&lt;script&gt;" in html
    assert 'href="/console/customers">Cancel' in html  # not the foreign "back"
    assert world.called("delete_customers") == []
    done = world.client.post("/console/customers/bulk", data={**form, "confirm": "yes"})
    [(_, _, (store, ids, orders, actor))] = world.called("delete_customers")
    assert (ids, orders, actor) == (["c1", "c2"], "delete", "api-key:write")
    assert "deleted: 2" in done.get_data(as_text=True)


def test_an_unknown_customer_is_a_404_page():
    world = World()
    world.login("wcc_read")
    answer = world.client.get("/console/customers/nobody")
    assert answer.status_code == 404 and "no customer nobody" in answer.get_data(as_text=True)


def test_gdpr_actions_only_with_the_gdpr_scope():
    world = World()
    world.login("wcc_write")
    assert 'id="gdpr"' not in world.client.get("/console/customers/c1").get_data(as_text=True)
    other = World()
    other.login("wcc_gdpr")
    page = other.client.get("/console/customers/c1").get_data(as_text=True)
    assert 'id="gdpr"' in page and 'action="/console/customers/c1/gdpr"' in page


def test_the_list_turns_quick_and_advanced_filters_into_the_apis():
    world = World()
    world.login("wcc_read")
    world.client.get("/console/customers?view=vip&total_spent_min=12.50&last_order_after="
                     "2026-01-31&tag=Gold,%20b&sort=name")
    [(_, _, (store, filters, sort, page))] = world.called("search_customers")
    assert store == "shop" and sort == {"field": "name", "direction": "asc"}
    assert filters == {"segment": "vip", "total_spent_min": 1250, "tags": ["gold", "b"],
                       "last_order_after": "2026-01-31T00:00:00+00:00"}
    world.calls.clear()
    html = world.client.get("/console/customers?view=wholesale").get_data(as_text=True)
    assert world.called("search_customers")[0][2][1] == {"groups": ["wholesale"]}
    assert 'href="/console/customers?view=wholesale&amp;cursor=abc"' in html  # next page
    assert "7 customers match" in html and "123.45 EUR" in html
    world.calls.clear()
    html = world.client.get("/console/customers?total_spent_min=lots").get_data(as_text=True)
    assert world.called("search_customers") == [] and "must be an amount" in html


def test_sort_links_flip_the_direction_of_the_sorted_column():
    state, _, _ = present.list_state({"sort": "-total_spent"})
    href, aria = present.sort_link(state, "total_spent")
    assert aria == "descending" and "sort=total_spent" in href and "sort=-" not in href
    assert present.sort_link(state, "name") == ("/console/customers?sort=name", None)


def test_the_session_cookie_cannot_be_forged_and_ends_when_idle_or_old():
    clock = [1000.0]
    codec = SessionCodec("x" * 20, idle_seconds=60, max_age_seconds=3600, clock=lambda: clock[0])
    token = codec.dumps(Session(api_key="k", signed_in_at=1000.0))
    assert codec.loads(token).api_key == "k"
    assert codec.loads(token[:-2] + ("AA" if not token.endswith("AA") else "BB")) is None
    assert SessionCodec("y" * 20, 60, 3600, lambda: clock[0]).loads(token) is None
    clock[0] += 61
    assert codec.loads(token) is None  # idle
    clock[0] = 1000 + 3601
    assert codec.loads(codec.dumps(Session(api_key="k", signed_in_at=1000.0))) is None  # old
    with pytest.raises(ValueError):
        SessionCodec("short", 60, 3600)


def test_without_a_configured_secret_each_process_makes_its_own_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        first, second = World(secret=""), World(secret="")
    assert "sessions end when the gateway restarts" in caplog.text
    first.login("wcc_read")
    cookie = first.client.get_cookie(COOKIE_NAME, path="/console").value
    assert second.console.codec.loads(cookie) is None


def test_idle_sessions_end_and_send_you_back_to_sign_in():
    world = World()
    world.login("wcc_read")
    world.now[0] += 31 * 60
    answer = world.client.get("/console/customers")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/console/login")


def test_presentation_helpers():
    now = datetime(2026, 4, 1, tzinfo=timezone.utc)
    assert present.orders_per_month({"orders_count": 2, "first_order_at": (
        now - timedelta(days=7)).isoformat()}, now) == 2.0
    assert present.orders_per_month({"orders_count": 6, "first_order_at": (
        now - timedelta(days=365.25 / 2)).isoformat()}, now) == 1.0
    assert present.orders_per_month({"orders_count": 0}, now) is None
    assert present.to_minor_units("1,234.5") == 123450
    for bad in ("-1", "1.234", "abc", "NaN"):
        with pytest.raises(ValueError):
            present.to_minor_units(bad)
    assert present.money({"amount": 123456, "currency": "EUR"}) == "1,234.56 EUR"
    assert present.money(5, None) == "0.05"
    assert present.split_names(" VIP, gold ,,") == ["vip", "gold"]
