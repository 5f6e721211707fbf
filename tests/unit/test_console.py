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

from devdoubles import mongomock_adapter
from services import registry
from services.customer_sync.api_keys import ApiKeys
from services.customer_sync.console_sessions import ConsoleSessions
from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.backends import Backends
from services.gateway.console import charts, forms, present
from services.gateway.console.app import COOKIE_NAME, ConsoleApp
from services.gateway.console.session import Session, SessionCodec
from services.gateway.console.views import _safe_next
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from shared.config import (CONSOLE_SESSION_IDLE_MINUTES_MAX, CONSOLE_SESSION_MAX_HOURS_MAX,
                           Config)
from shared.errors import Conflict, NotFound, ValidationError

KEYS = {"wcc_read": ["read"], "wcc_write": ["write"], "wcc_gdpr": ["write", "gdpr"],
        "wcc_admin": ["admin"], "wcc_gdpronly": ["gdpr"]}
EVIL = "<script>alert(1)</script>"
# Companies of the stand-in customer_sync: one of this store, one of another store's.
COMPANY_ID = "co_" + "a" * 24
OTHER_STORES_COMPANY = "co_" + "b" * 24
FREE_MAIL = {"gmail.com", "outlook.com", "yahoo.com", "hotmail.com", "icloud.com", "gmx.de",
             "web.de", "proton.me"}
_BLANK_ADDRESS = {k: "" for k in ("address_1", "address_2", "city", "state", "postcode",
                                  "country")}


def company_record(company_id, store="shop", **fields):
    """A COMPANY as customer_sync answers it (the contract's shape)."""
    return {"company_id": company_id, "store_id": store, "name": "Acme GmbH", "domain": None,
            "vat_id": None, "address": dict(_BLANK_ADDRESS), "custom_fields": {},
            "group": None, "member_count": 0, "created_at": "2026-01-01T00:00:00+00:00",
            "updated_at": "2026-01-01T00:00:00+00:00", "created_by": "api-key:write",
            "updated_by": "api-key:write", **fields}


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

    def __init__(self):
        self.sessions = {}  # token -> the key it was opened with, while open
        self.companies = {
            COMPANY_ID: company_record(
                COMPANY_ID, name=f"{EVIL} Acme", domain="acme.example", vat_id="DE123456789",
                address={**_BLANK_ADDRESS, "city": f"{EVIL} Berlin", "postcode": "10115",
                         "country": "DE"},
                custom_fields={"tier": EVIL}, group="wholesale", member_count=1),
            OTHER_STORES_COMPANY: company_record(OTHER_STORES_COMPANY, store="other",
                                                 name="Other store's company")}
        self.customer_companies = {}  # customer id -> company id
        self.company_matching = {"match_email_domain": False}

    def open_console_session(self, key, idle_seconds, max_age_seconds):
        view = self.authenticate_api_key(key)
        token = f"wcs_{len(self.sessions):032x}_" + "s" * 43
        self.sessions[token] = view
        return {"session": token, "session_id": token[4:36], "key": view,
                "expires_at": "2099-01-01T00:00:00+00:00"}

    def console_session(self, token):
        if self.sessions.get(token) is None:
            raise NotFound("no open console session")
        return {"session_id": token[4:36], "key": self.sessions[token],
                "expires_at": "2099-01-01T00:00:00+00:00"}

    def end_console_session(self, token):
        return {"ended": self.sessions.pop(token, None) is not None}

    def get_customer(self, store, customer_id):
        if customer_id != "c1":
            raise NotFound(f"no customer {customer_id}")
        return {"customer_id": "c1", "store_id": store, "email": "ada@example.com",
                "first_name": EVIL, "last_name": "Lovelace", "registered": True,
                "billing": {"city": "London", "country": "GB", "address_1": "1 Road"},
                "custom_fields": {"tier": EVIL, "vip": True, "retired_key": 7},
                "company_id": self.customer_companies.get(customer_id)}

    def list_custom_fields(self, store):
        return [{"key": "vip", "label": "VIP", "type": "boolean", "required": False},
                {"key": "tier", "label": "Loyalty tier", "type": "text", "required": False},
                {"key": "unset", "label": "Never set", "type": "text", "required": False}]

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

    # -- companies, as companies-contract's customer_sync RPCs answer -------------------------

    def _company(self, store, company_id):
        company = self.companies.get(company_id)
        if company is None or company["store_id"] != store:
            raise NotFound(f"no company {company_id}", {"fields": {"company_id": ["not found"]}})
        return company

    def _check_company(self, store, data, company_id=None):
        errors = {}
        if "name" in data and not 1 <= len(data["name"] or "") <= 200:
            errors["name"] = ["1-200 characters"]
        domain = data.get("domain")
        if domain and domain in FREE_MAIL:
            errors["domain"] = ["a free-mail domain would join strangers"]
        if data.get("vat_id") and not re.fullmatch(r"[A-Z]{2}[A-Z0-9]{2,13}",
                                                   data["vat_id"].replace(" ", "").upper()):
            errors["vat_id"] = ["a 2-letter country prefix and 2-13 letters or digits"]
        if errors:
            raise ValidationError("the company is not valid", {"fields": errors})
        if domain and any(c["domain"] == domain and c["store_id"] == store
                          and c["company_id"] != company_id for c in self.companies.values()):
            raise Conflict(f"the domain {domain} is another company's",
                           {"fields": {"domain": ["taken"]}})

    def list_companies(self, store, filters=None, page=None):
        q = ((filters or {}).get("q") or "").casefold()
        size = (page or {}).get("size") or 50
        start = int((page or {}).get("cursor") or 0)
        rows = sorted((c for c in self.companies.values() if c["store_id"] == store and (
            q in c["name"].casefold() or q in (c["domain"] or ""))),
            key=lambda c: (c["name"].casefold(), c["company_id"]))
        more = len(rows) > start + size
        return {"items": rows[start:start + size], "next_cursor": str(start + size) if more
                else None}

    def get_company(self, store, company_id):
        return self._company(store, company_id)

    def create_company(self, store, data, actor):
        self._check_company(store, data)
        company_id = f"co_{len(self.companies) + 1:024x}"
        address = {**_BLANK_ADDRESS, **(data.get("address") or {})}
        self.companies[company_id] = company_record(
            company_id, store, **{**data, "address": address, "custom_fields":
                                  data.get("custom_fields") or {}, "created_by": actor})
        return self.companies[company_id]

    def update_company(self, store, company_id, changes, actor):
        company = self._company(store, company_id)
        self._check_company(store, changes, company_id)
        company.update({**changes, "updated_by": actor})
        if "address" in changes:
            company["address"] = {**_BLANK_ADDRESS, **(changes["address"] or {})}
        return company

    def delete_company(self, store, company_id, actor):
        self._company(store, company_id)
        del self.companies[company_id]
        members = [c for c, co in self.customer_companies.items() if co == company_id]
        for customer_id in members:
            self.customer_companies[customer_id] = None
        return {"company_id": company_id, "deleted": True, "members_released": len(members)}

    def set_customer_company(self, store, customer_id, company_id, actor):
        if customer_id != "c1":
            raise NotFound(f"no customer {customer_id}",
                           {"fields": {"customer_id": ["not found"]}})
        if company_id is not None:
            self._company(store, company_id)
        changed = self.customer_companies.get(customer_id) != company_id
        self.customer_companies[customer_id] = company_id
        return {"customer_id": customer_id, "company_id": company_id, "changed": changed}

    def company_names(self, store, company_ids):
        assert len(company_ids) <= 200, "company_names takes at most 200 ids"
        return {i: self.companies[i]["name"] for i in company_ids
                if i in self.companies and self.companies[i]["store_id"] == store}

    def get_company_matching(self, store):
        return dict(self.company_matching)

    def set_company_matching(self, store, settings, actor):
        self.company_matching = {"match_email_domain": bool(settings["match_email_domain"])}
        return dict(self.company_matching)


class Segmentation:
    name = "segmentation"

    row_company_id = None  # the company_id segmentation keeps for c1's row

    def search_customers(self, store, filters, sort, page):
        row = {"customer_id": "c1", "name": f"{EVIL} Lovelace", "email": "a@x.io",
               "account_status": "active", "segment": "vip", "tags": ["gold"],
               "groups": [], "stats": {"orders_count": 2, "total_spent": {
                   "amount": 12345, "currency": "EUR"}, "last_order_at": None},
               "company_id": self.row_company_id}
        if "company_id" in (filters or {}) and filters["company_id"] != row["company_id"]:
            return {"items": [], "next_cursor": None, "total": 0}
        return {"items": [row], "next_cursor": "abc", "total": 7}

    def company_stats(self, store, company_ids):
        assert len(company_ids) <= 100, "company_stats takes at most 100 ids"
        return {i: {"members": 1, "orders_count": 2,
                    "total_spent": {"amount": 12345, "currency": "EUR"},
                    "last_order_at": "2026-02-01T00:00:00+00:00"} for i in company_ids}

    def list_tags(self, store):
        return [{"tag": "gold", "customers": 1, "description": EVIL, "catalogued": True}]

    def create_tag(self, store, tag, description, actor):
        if tag == "gold":
            raise Conflict("the tag gold exists already")
        return {"tag": tag, "customers": 0, "description": description or "",
                "catalogued": True}

    def update_tag(self, store, tag, changes, actor):
        return {"tag": changes.get("new_tag", tag), "customers": 1, "catalogued": True,
                "description": changes.get("description", ""),
                "renamed": 1 if "new_tag" in changes else 0}

    def delete_tag(self, store, tag, actor):
        return {"deleted": tag, "customers": 1}

    def list_groups(self, store):
        return [{"slug": "wholesale", "name": f"{EVIL} Wholesale", "description": "",
                 "discount_percent": "12.5", "free_shipping_threshold": 50000,
                 "payment_terms_days": 30, "customers": 1}]

    def list_segments(self, store):
        return [{"segment_id": "gifts", "name": f"{EVIL} gifts", "match": "any", "customers": 2,
                 "conditions": [{"field": "tags", "op": "contains", "value": "gift"}]}]

    def get_segment(self, store, segment_id):
        if segment_id != "gifts":
            raise NotFound(f"no saved segment {segment_id}")
        return self.list_segments(store)[0]

    def report(self, store, period):
        return {"store_id": store, "period": period, "currency": "EUR", "customers": 10,
                "buyers": 8, "new_customers": [{"period": "2026-01", "count": 3},
                                               {"period": "2026-02", "count": 5}],
                "repeat_purchase_rate": 0.375, "churn_rate": 0.25,
                "segment_sizes": {"vip": 2, "new": 5, "prospect": 3},
                "lifetime_value": {"total": 100000, "p25": 1000, "median": 5000,
                                   "p75": 9000, "p90": 20000, "max": 40000},
                "top_10_percent_revenue_share": 0.4, "average_order_value_by_group": {}}

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
                "next_expiry": None, "store_credit": {"amount": 0, "currency": "EUR"},
                "rewards_pending": 1}

    # A customer's rewards (coupons), newest first; tests change `shop_answers` and `rewards`.
    shop_answers = True
    rewards = [
        {"reward_id": "r-pending", "kind": "points", "state": "pending",
         "code": "reward-7kq2mnp4xz", "amount": {"amount": 500, "currency": "EUR"},
         "points": 500, "created_at": "2026-03-02T10:00:00+00:00",
         "expires_at": "2026-06-01T00:00:00+00:00", "issued_at": None, "order_id": None,
         "attempts": 3, "next_attempt_at": "2026-03-02T10:05:00+00:00",
         "last_error": f"shop answered 503 {EVIL}", "reason": None, "note": None},
        {"reward_id": "r-credit", "kind": "credit", "state": "issued", "code": f"credit-{EVIL}",
         "amount": {"amount": 1250, "currency": "EUR"}, "points": None,
         "created_at": "2026-03-01T10:00:00+00:00", "expires_at": None,
         "issued_at": "2026-03-01T10:00:01+00:00", "order_id": None, "attempts": 1,
         "next_attempt_at": None, "last_error": None, "reason": "goodwill", "note": EVIL},
        {"reward_id": "r-used", "kind": "points", "state": "used", "code": "reward-usedusedus",
         "amount": {"amount": 100, "currency": "EUR"}, "points": 100,
         "created_at": "2026-02-01T10:00:00+00:00", "expires_at": None,
         "issued_at": "2026-02-01T10:00:01+00:00", "order_id": "77", "attempts": 1,
         "next_attempt_at": None, "last_error": None, "reason": None, "note": None},
    ]

    def list_rewards(self, store, customer_id):
        return {"items": [dict(r) for r in self.rewards]}

    def quote_redemption(self, store, customer_id, points):
        allowed = 100 <= points <= 120
        return {"points": points, "amount": {"amount": points, "currency": "EUR"},
                "balance": 120, "allowed": allowed,
                "reason": None if allowed else "at least 100 and at most the balance of 120",
                "expires_at": "2026-06-01T00:00:00+00:00"}

    def _reward(self, kind, amount, points=None, **extra):
        issued = self.shop_answers
        return {"reward_id": "r-new", "kind": kind, "state": "issued" if issued else "pending",
                "code": "reward-7kq2newcod", "amount": {"amount": amount, "currency": "EUR"},
                "points": points, "created_at": "2026-03-03T10:00:00+00:00",
                "expires_at": "2026-06-01T00:00:00+00:00", "issued_at": None,
                "order_id": None, "attempts": 1, "next_attempt_at": None,
                "last_error": None if issued else "the shop did not answer", **extra}

    def redeem(self, store, customer_id, points, request_id=None, actor=None):
        return {"request_key": f"redeem:{request_id}", "entries": [],
                "reward": self._reward("points", points, points)}

    def issue_credit(self, store, customer_id, amount, reason, note="", actor=None,
                     expires_at=None, request_id=None):
        return {"request_key": f"credit:{request_id}", "entries": [],
                "reward": self._reward("credit", amount, reason=reason, note=note)}

    def cancel_reward(self, store, customer_id, reward_id, actor):
        from shared.errors import Conflict

        reward = next((r for r in self.rewards if r["reward_id"] == reward_id), None)
        if reward is None:
            raise NotFound(f"no reward {reward_id}")
        if reward["state"] not in ("pending", "issued"):
            raise Conflict(f"reward {reward_id} is {reward['state']}: it cannot be cancelled")
        return {**reward, "state": "returned" if self.shop_answers else "closing"}

    programme = {"earning_statuses": ["processing", "completed"], "exclude_shipping": True,
                 "exclude_tax": True, "guests_earn": False, "starts_at": None,
                 "tiers": [{"name": "bronze", "min_points": 0, "max_points": 999, "rate": 10},
                           {"name": "gold", "min_points": 1000, "max_points": None,
                            "rate": 12}],
                 "tier_window_days": 365, "points_per_unit": 100, "min_redeem_points": 100,
                 "max_redeem_points": 100000, "expiry_months": 12, "currency": "EUR"}

    def get_programme(self, store):
        return dict(self.programme)

    def save_programme(self, store, data):
        from shared.errors import ValidationError

        tiers = data["tiers"]
        if tiers[0]["min_points"] != 0:
            raise ValidationError("invalid programme: tiers.0.min_points: the first tier must "
                                  "start at 0 points",
                                  {"fields": {"tiers.0.min_points": [
                                      "the first tier must start at 0 points"]}})
        Loyalty.programme = {**self.programme, **data}
        return Loyalty.programme


class Notifications:
    name = "notifications"
    templates = {"welcome": {"slug": "welcome", "channel": "email", "name": "Welcome",
                             "description": EVIL, "subject": "Hi {{ customer.first_name }}",
                             "html": "<p>Hi</p>", "text": "Hi"}}
    workflows = [{"workflow_id": "cart", "name": "Abandoned cart", "enabled": True,
                  "trigger": {"event": "customer.tagged", "tag": "abandoned-cart"},
                  "delay_seconds": 7200, "channel": "email", "template": "welcome",
                  "purpose": "marketing", "cancel": [{"if": "order_placed"}]}]
    sends = [{"_id": f"s{i}", "store_id": "shop", "customer_id": "c1", "channel": "email",
              "template": "welcome", "purpose": "marketing", "status": "sent",
              "to": f"{EVIL}@x.io", "attempts": [], "created_at": f"2026-01-0{i + 1}T00:00:00+00:00"}
             for i in range(3)]

    def list_templates(self, store):
        return list(self.templates.values())

    def get_template(self, store, slug):
        if slug not in self.templates:
            raise NotFound(f"no template {slug}")
        return self.templates[slug]

    def save_template(self, store, data):
        return data

    def preview(self, store, template, customer_id=None):
        from shared.errors import ValidationError

        if "{{" in template.get("subject", "") and "customer" not in template["subject"]:
            raise ValidationError("subject line 1: unknown variable",
                                  {"fields": {"subject": ["line 1: unknown variable"]}})
        return {"subject": template.get("subject", "").replace("{{ customer.first_name }}",
                                                               "Ada"),
                "html": template.get("html"), "text": template.get("text") or template.get(
                    "body", "")}

    def list_workflows(self, store):
        return [dict(w) for w in self.workflows]

    def save_workflow(self, store, data):
        return {**data, "workflow_id": data.get("workflow_id") or "new1"}

    suppressions = [{"channel": "email", "address": f"{EVIL}@x.io", "address_erased": False,
                     "active": True, "kinds": ["bounce"], "blocks": "all",
                     "suppressed_at": "2026-01-01T00:00:00+00:00", "lifted_at": None,
                     "updated_at": "2026-01-01T00:00:00+00:00",
                     "history": [{"action": "suppressed", "at": "2026-01-01T00:00:00+00:00",
                                  "kind": "bounce", "source": "report", "detail": EVIL}]}]

    def list_suppressions(self, store, filters, page):
        return {"items": [dict(s) for s in self.suppressions], "next_cursor": None}

    def lift_suppression(self, store, channel, address, reason, actor):
        return {**self.suppressions[0], "active": False, "kinds": [], "blocks": "nothing"}

    def list_sends(self, store, filters, page):
        items = [s for s in self.sends if all(s.get(k) == v for k, v in filters.items())]
        start = int(page["cursor"]) if page.get("cursor") else 0
        chunk = items[start:start + page["size"]]
        more = start + page["size"] < len(items)
        return {"items": chunk, "next_cursor": str(start + page["size"]) if more else None}


class Gdpr:
    name = "gdpr"

    def list_requests(self, store, state=None):
        base = {"store_id": "shop", "details": {}, "customer_ids": ["c1"], "audit": [
            {"at": "2026-01-01T00:00:00+00:00", "actor": "ops", "action": "received",
             "detail": EVIL}]}
        return [{**base, "request_id": "r-late", "type": "erasure", "email": "late@x.io",
                 "state": "received", "received_at": "2025-01-01T00:00:00+00:00",
                 "due_at": "2025-01-31T00:00:00+00:00", "overdue": True},
                {**base, "request_id": "r-new", "type": "access", "email": EVIL,
                 "state": "received", "received_at": "2099-01-01T00:00:00+00:00",
                 "due_at": "2099-01-31T00:00:00+00:00", "overdue": False}]

    def get_request(self, request_id):
        return {"request_id": request_id, "store_id": "shop"}

    def verify_identity(self, request_id, actor, note=""):
        return {"request_id": request_id}


class World:
    def __init__(self, secret="s" * 32, clock=None, **settings):
        self.calls = []
        self.now = [1_000_000.0]
        config = Config({}, registry.settings(), CONSOLE_SESSION_SECRET=secret or "", **settings)
        self.gateway = GatewayApp(Router(build_routes()), Authenticator(0), RateLimiter(600),
                                  max_body_bytes=1 << 20)
        self.console = ConsoleApp(self.gateway, config, clock=clock or (lambda: self.now[0]))
        services = [CustomerSync(), Segmentation(), Loyalty(), Notifications(), Gdpr()]
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


def test_the_console_takes_the_longest_sessions_customer_sync_keeps_and_no_longer():
    longest = {"CONSOLE_SESSION_IDLE_MINUTES": CONSOLE_SESSION_IDLE_MINUTES_MAX,
               "CONSOLE_SESSION_MAX_HOURS": CONSOLE_SESSION_MAX_HOURS_MAX}
    codec = World(**{name: str(value) for name, value in longest.items()}).console.codec
    database = mongomock_adapter.client()["console"]
    keys = ApiKeys(database["api_keys"])
    key = keys.create("shop", "desk", ["read"], "test")
    opened = ConsoleSessions(database["console_sessions"], keys).open(
        key["api_key"], int(codec.idle_seconds), int(codec.max_age_seconds))
    assert opened["key"]["key_id"] == key["key_id"]
    for name, value in longest.items():
        with pytest.raises(ValueError, match=name):
            World(**{name: str(value + 1)})


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
        assert _safe_next(evil) == "/console/"
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


def test_the_customer_page_lists_custom_fields_labelled_in_the_stores_order():
    world = World()
    world.login("wcc_read")
    page = world.client.get("/console/customers/c1").get_data(as_text=True)
    card = page[page.index('id="custom-fields"'):page.index('id="h-addresses"')]
    shown = re.findall(r"<dt>(.*?)</dt><dd id=\"custom-(\w+)\">(.*?)</dd>", card)
    assert shown == [("VIP", "vip", "yes"),
                     ("Loyalty tier", "tier", "&lt;script&gt;alert(1)&lt;/script&gt;"),
                     ("retired_key", "retired_key", "7")]


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
    # the next page, with the way back to this one
    assert 'href="/console/customers?view=wholesale&amp;cursor=abc&amp;back=~"' in html
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


# -- the store pages ----------------------------------------------------------------------------

STORE_PAGES = ("/console/loyalty", "/console/templates", "/console/templates/welcome",
               "/console/templates/new", "/console/workflows", "/console/workflows/new",
               "/console/workflows/cart", "/console/messages", "/console/gdpr",
               "/console/reports", "/console/suppressions", "/console/tags",
               "/console/segments", "/console/segments/new", "/console/segments/gifts",
               "/console/custom-fields", "/console/custom-fields/tier")


def test_the_navigation_shows_only_what_the_keys_scopes_allow():
    world = World()
    world.login("wcc_write")
    nav = world.client.get("/console/customers").get_data(as_text=True).split("</nav>")[0]
    for page in ("customers", "segments", "custom-fields", "loyalty", "templates",
                 "workflows", "messages", "reports"):
        assert f'href="/console/{page}"' in nav, page
    assert 'href="/console/gdpr"' not in nav
    assert world.client.get("/console/gdpr").status_code == 403
    world = World()
    world.login("wcc_gdpronly")
    assert world.client.get("/console/").headers["Location"].endswith("/console/gdpr")
    nav = world.client.get("/console/gdpr").get_data(as_text=True).split("</nav>")[0]
    assert 'href="/console/gdpr"' in nav and 'aria-current="page"' in nav
    assert 'href="/console/customers"' not in nav and 'href="/console/reports"' not in nav


def test_the_tag_page_lists_creates_renames_and_deletes_through_the_api():
    world = World()
    world.login("wcc_read")
    page = world.client.get("/console/tags").get_data(as_text=True)
    assert 'id="tag-gold"' in page and "tag-create" not in page  # a reader changes nothing
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/tags")
    created = world.client.post("/console/tags/create", data={
        "csrf_token": token, "tag": "Spring", "description": "Spring buyers"})
    assert created.status_code == 303
    assert world.called("create_tag")[-1][2][1:3] == ("spring", "Spring buyers")
    assert "Created the tag spring" in world.client.get("/console/tags").get_data(as_text=True)
    world.client.post("/console/tags/create", data={"csrf_token": token, "tag": "gold"})
    assert "exists already" in world.client.get("/console/tags").get_data(as_text=True)
    world.client.post("/console/tags/gold/edit", data={
        "csrf_token": token, "new_tag": "golden", "description": "Best buyers"})
    assert world.called("update_tag")[-1][2][1:3] == (
        "gold", {"new_tag": "golden", "description": "Best buyers"})
    assert "Renamed gold to golden: 1 customers follow" in world.client.get(
        "/console/tags").get_data(as_text=True)
    world.client.post("/console/tags/gold/delete", data={"csrf_token": token})
    assert world.called("delete_tag")[-1][2][1] == "gold"
    assert "taken off 1 customers" in world.client.get("/console/tags").get_data(as_text=True)
    refused = world.client.post("/console/tags/gold/delete", data={})
    assert refused.status_code == 403 and len(world.called("delete_tag")) == 1


def test_every_store_page_is_escaped_labelled_and_protected():
    world = World()
    world.login("wcc_gdpr")
    for url in STORE_PAGES:
        answer = world.client.get(url)
        assert answer.status_code == 200, url
        html = answer.get_data(as_text=True)
        assert "<script>alert" not in html, url
        assert "style=" not in html, url
        assert "unsafe-inline" not in answer.headers["Content-Security-Policy"]
        # Every form that posts carries the session's token; every field has a label.
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            assert 'name="csrf_token"' in form, (url, form[:120])
        ids = set(re.findall(r'<label[^>]* for="([^"]+)"', html))
        for field in re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|checkbox|'
                                r'radio|submit)")[^>]*>', html):
            field_id = re.search(r'id="([^"]+)"', field)
            assert field_id and (field_id.group(1) in ids or "aria-label" in field), (url, field)
    assert world.client.post("/console/loyalty", data={}).status_code == 403
    assert world.client.post("/console/templates/preview", data={}).status_code == 403


def test_the_programme_form_round_trips_and_shows_the_apis_refusal_by_the_field():
    world = World()
    world.login("wcc_admin")
    page = world.client.get("/console/loyalty").get_data(as_text=True)
    assert 'id="programme-form"' in page and 'value="bronze"' in page
    form = {"csrf_token": world.csrf("/console/loyalty"), "tier_name": ["bronze", "gold", ""],
            "tier_min_points": ["5", "1000", ""], "tier_max_points": ["999", "", ""],
            "tier_rate": ["10", "15", ""], "tier_window_days": "365", "points_per_unit": "50",
            "min_redeem_points": "100", "max_redeem_points": "", "expiry_months": "0",
            "currency": "eur", "earning_statuses": ["completed"], "exclude_tax": "on"}
    refused = world.client.post("/console/loyalty", data=form)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert re.search(r'id="tier-0-min_points"[^>]*aria-invalid="true"', html)
    assert 'id="e-tiers-0-min_points">the first tier must start at 0 points' in html
    assert 'value="50"' in html  # what was typed stays
    form["tier_min_points"][0] = "0"
    saved = world.client.post("/console/loyalty", data=form)
    assert saved.status_code == 303
    [(_, _, args)] = world.called("save_programme")[-1:]
    assert args[1] == {
        "tier_window_days": 365, "points_per_unit": 50, "min_redeem_points": 100,
        "max_redeem_points": None, "expiry_months": 0, "exclude_shipping": False,
        "exclude_tax": True, "guests_earn": False, "earning_statuses": ["completed"],
        "currency": "EUR", "starts_at": None,
        "tiers": [{"name": "bronze", "min_points": 0, "max_points": 999, "rate": 10},
                  {"name": "gold", "min_points": 1000, "max_points": None, "rate": 15}]}
    # A form the console cannot read is not sent at all.
    form["points_per_unit"] = "lots"
    bad = world.client.post("/console/loyalty", data=form)
    assert bad.status_code == 400 and "must be a whole number" in bad.get_data(as_text=True)
    assert len(world.called("save_programme")) == 2


def test_a_write_key_sees_the_programme_read_only_and_the_api_would_refuse_it():
    world = World()
    world.login("wcc_write")
    page = world.client.get("/console/loyalty").get_data(as_text=True)
    assert 'id="programme-form"' not in page and "needs an admin key" in page
    answer = world.client.post("/console/loyalty", data={
        "csrf_token": world.csrf("/console/loyalty"), "tier_name": "bronze",
        "tier_min_points": "0", "tier_max_points": "", "tier_rate": "10",
        "earning_statuses": "completed", **{k: "1" for k in forms.PROGRAMME_INTEGERS}})
    assert answer.status_code == 403 and "admin" in answer.get_data(as_text=True)
    assert world.called("save_programme") == []


def test_the_template_preview_answers_json_for_the_script_and_a_page_without_it():
    world = World()
    world.login("wcc_write")
    token = world.csrf("/console/templates/new")
    draft = {"csrf_token": token, "slug": "", "channel": "email", "subject":
             "Hi {{ customer.first_name }}", "html": "<p>x</p>", "text": "x", "is_new": "1"}
    answer = world.client.post("/console/templates/preview", data=draft)
    assert answer.mimetype == "application/json"
    assert answer.get_json()["rendered"]["subject"] == "Hi Ada"
    [(_, _, args)] = world.called("preview")
    assert args[1] == {"slug": "draft", "channel": "email", "subject":
                       "Hi {{ customer.first_name }}", "html": "<p>x</p>", "text": "x"}
    broken = world.client.post("/console/templates/preview",
                               data={**draft, "subject": "Hi {{ nobody }}"}).get_json()
    assert broken["ok"] is False and "unknown variable" in broken["error"]
    page = world.client.post("/console/templates/save", data={**draft, "op": "preview"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and '<dd id="preview-subject">Hi Ada</dd>' in html
    assert 'srcdoc="&lt;p&gt;x&lt;/p&gt;"' in html  # the HTML part in a sandboxed frame
    assert world.called("save_template") == []
    bad_slug = world.client.post("/console/templates/save", data={**draft, "op": "save"})
    assert bad_slug.status_code == 400 and world.called("save_template") == []
    saved = world.client.post("/console/templates/save",
                              data={**draft, "op": "save", "slug": "hello"})
    assert saved.status_code == 303 and saved.headers["Location"].endswith("/templates/hello")


def test_workflows_are_listed_in_words_and_toggled_whole():
    world = World()
    world.login("wcc_write")
    page = world.client.get("/console/workflows").get_data(as_text=True)
    assert "A customer is tagged: abandoned-cart, after 2 hours" in page
    assert "cancelled if an order is placed" in page
    answer = world.client.post("/console/workflows/cart/toggle",
                               data={"enabled": "false", "csrf_token": world.csrf()})
    assert answer.status_code == 303
    [(_, _, args)] = world.called("save_workflow")
    assert args[1] == {**Notifications.workflows[0], "enabled": False}
    form = {"csrf_token": world.csrf(), "is_new": "1", "name": "Lapsed", "enabled": "on",
            "trigger": "date:days_since_last_order", "days": "90", "delay": "1",
            "delay_unit": "days", "channel": "email", "template": "welcome",
            "purpose": "marketing", "cancel_on_order": "on", "tag": "ignored"}
    assert world.client.post("/console/workflows/save", data=form).status_code == 303
    assert world.called("save_workflow")[-1][2][1] == {
        "name": "Lapsed", "enabled": True, "channel": "email", "template": "welcome",
        "purpose": "marketing", "trigger": {"date": "days_since_last_order", "days": 90},
        "delay_seconds": 86400, "cancel": [{"if": "order_placed"}], "coupon": None}
    bad = world.client.post("/console/workflows/save", data={**form, "days": "soon"})
    assert bad.status_code == 400 and 'id="e-trigger-days"' in bad.get_data(as_text=True)


def test_a_workflows_coupon_is_shown_kept_changed_and_removed_in_the_console():
    """The API replaces a workflow whole: a toggle sends the coupon back as it is, the edit
    form shows it in the currency's units and saves what staff set, unticking removes it."""
    coupon = {"type": "fixed", "amount": 499, "currency": "EUR", "validity_days": 30,
              "minimum_spend": 2000, "individual_use": True, "prefix": "welcome"}
    original = Notifications.workflows
    Notifications.workflows = [{**original[0], "coupon": coupon}]
    try:
        world = World()
        world.login("wcc_write")
        assert world.client.post("/console/workflows/cart/toggle", data={
            "enabled": "false", "csrf_token": world.csrf()}).status_code == 303
        assert world.called("save_workflow")[-1][2][1]["coupon"] == coupon
        page = world.client.get("/console/workflows/cart").get_data(as_text=True)
        assert 'id="w-coupon-on" name="coupon_on" checked' in page
        assert 'name="coupon_amount" value="4.99"' in page
        assert 'name="coupon_minimum" value="20.00"' in page
        assert 'name="coupon_prefix" value="welcome"' in page
        form = {"csrf_token": world.csrf(), "is_new": "0", "workflow_id": "cart",
                "name": "Cart", "enabled": "on", "trigger": "event:customer.tagged",
                "tag": "abandoned-cart", "delay": "2", "delay_unit": "hours",
                "channel": "email", "template": "welcome", "purpose": "marketing",
                "coupon_on": "on", "coupon_type": "fixed", "coupon_amount": "4.99",
                "coupon_currency": "eur", "coupon_days": "30", "coupon_minimum": "20.00",
                "coupon_individual": "on", "coupon_prefix": "welcome"}
        assert world.client.post("/console/workflows/save", data=form).status_code == 303
        assert world.called("save_workflow")[-1][2][1]["coupon"] == coupon
        jpy = {**form, "coupon_currency": "JPY", "coupon_amount": "500", "coupon_minimum": ""}
        assert world.client.post("/console/workflows/save", data=jpy).status_code == 303
        sent = world.called("save_workflow")[-1][2][1]["coupon"]
        assert (sent["amount"], sent["currency"], "minimum_spend" in sent) == (500, "JPY", False)
        percent = {**form, "coupon_type": "percent", "coupon_amount": "15"}
        assert world.client.post("/console/workflows/save", data=percent).status_code == 303
        assert world.called("save_workflow")[-1][2][1]["coupon"]["amount"] == 15
        off = {k: v for k, v in form.items() if k != "coupon_on"}
        assert world.client.post("/console/workflows/save", data=off).status_code == 303
        assert world.called("save_workflow")[-1][2][1]["coupon"] is None
        saves = len(world.called("save_workflow"))
        for field, value, error_id in [("coupon_amount", "lots", "e-coupon-amount"),
                                       ("coupon_amount", "1e30", "e-coupon-amount"),
                                       ("coupon_amount", "4.999", "e-coupon-amount"),
                                       ("coupon_currency", "eu", "e-coupon-currency"),
                                       ("coupon_days", "a month", "e-coupon-validity_days"),
                                       ("coupon_minimum", "-5", "e-coupon-minimum_spend")]:
            bad = world.client.post("/console/workflows/save", data={**form, field: value})
            assert bad.status_code == 400, (field, value)
            assert f'id="{error_id}"' in bad.get_data(as_text=True), (field, value)
        assert len(world.called("save_workflow")) == saves  # nothing saved on refusal
    finally:
        Notifications.workflows = original


def test_the_console_offers_the_loyalty_triggers():
    world = World()
    world.login("wcc_write")
    page = world.client.get("/console/workflows/new").get_data(as_text=True)
    for event in ("loyalty.reward_issued", "loyalty.reward_expired", "loyalty.reward_returned",
                  "loyalty.points_changed", "loyalty.points_expiring"):
        assert f'value="event:{event}"' in page
    form = {"csrf_token": world.csrf(), "is_new": "1", "name": "Your reward", "enabled": "on",
            "trigger": "event:loyalty.reward_issued", "reward_kind": "credit", "delay": "0",
            "delay_unit": "minutes", "channel": "email", "template": "welcome",
            "purpose": "transactional"}
    assert world.client.post("/console/workflows/save", data=form).status_code == 303
    assert world.called("save_workflow")[-1][2][1]["trigger"] == {
        "event": "loyalty.reward_issued", "kind": "credit"}
    earned = {**form, "trigger": "event:loyalty.points_changed", "points_kind": "adjust"}
    assert world.client.post("/console/workflows/save", data=earned).status_code == 303
    assert world.called("save_workflow")[-1][2][1]["trigger"] == {
        "event": "loyalty.points_changed", "kind": "adjust"}
    expiring = {**form, "trigger": "event:loyalty.points_expiring"}
    assert world.client.post("/console/workflows/save", data=expiring).status_code == 303
    assert world.called("save_workflow")[-1][2][1]["trigger"] == {
        "event": "loyalty.points_expiring"}


def test_the_send_log_filters_and_pages_back_and_forth():
    world = World()
    world.login("wcc_read")
    first = world.client.get("/console/messages?limit=25&channel=email")
    html = first.get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@x.io" in html
    [(_, _, args)] = world.called("list_sends")
    assert args[1] == {"channel": "email"} and args[2] == {"size": 25, "cursor": None}
    Notifications.sends = Notifications.sends * 20  # 60: three pages of 25
    try:
        url = "/console/messages?limit=25"
        seen = []
        for _ in range(2):
            html = world.client.get(url).get_data(as_text=True)
            seen.append(url)
            url = re.search(r'href="([^"]+)" rel="next"', html).group(1).replace("&amp;", "&")
        html = world.client.get(url).get_data(as_text=True)
        assert 'rel="next"' not in html
        back = re.search(r'href="([^"]+)" rel="prev"', html).group(1).replace("&amp;", "&")
        assert world.called("list_sends")[-1][2][2]["cursor"] == "50"
        world.client.get(back)
        assert world.called("list_sends")[-1][2][2]["cursor"] == "25"
    finally:
        Notifications.sends = Notifications.sends[:3]


def test_the_gdpr_queue_puts_overdue_first_and_acts_with_the_gdpr_scope():
    world = World()
    world.login("wcc_gdpr")
    html = world.client.get("/console/gdpr").get_data(as_text=True)
    assert html.index('id="req-r-late"') < html.index('id="req-r-new"')
    assert "1 overdue" in html and "past due" in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    answer = world.client.post("/console/gdpr/r-late/verify",
                               data={"note": "passport", "csrf_token": world.csrf()})
    assert answer.status_code == 303
    [(_, _, args)] = world.called("verify_identity")
    assert args[0] == "r-late" and args[2] == "passport"
    refused = world.client.post("/console/gdpr/r-late/reject",
                                data={"reason": " ", "csrf_token": world.csrf()})
    assert refused.status_code == 303 and world.called("reject_request") == []


def test_the_gdpr_queue_flags_an_erasure_whose_proof_was_ambiguous(monkeypatch):
    ambiguous = {"request_id": "r-amb", "store_id": "shop", "type": "erasure",
                 "email": "ada@x.io", "state": "completed", "details": {},
                 "received_at": "2026-01-01T00:00:00+00:00",
                 "due_at": "2026-01-31T00:00:00+00:00", "overdue": False, "needs_review": True,
                 "customer_ids": ["c1"], "audit": [],
                 "result": {"verification": "ambiguous", "ambiguous": {
                     "notifications": [{"collection": "bulk_jobs", "count": 2}]}}}
    clean = {**ambiguous, "request_id": "r-clean", "needs_review": False,
             "result": {"verification": "nothing found"}}
    monkeypatch.setattr(Gdpr, "list_requests", lambda self, store, state=None: [ambiguous, clean])
    world = World()
    world.login("wcc_gdpr")
    html = world.client.get("/console/gdpr").get_data(as_text=True)
    flagged, rest = html.split('id="req-r-clean"')
    assert 'class="badge needs-review"' in flagged and "notifications: bulk_jobs (2)" in flagged
    assert "needs-review" not in rest


def test_reports_draw_svg_charts_with_their_numbers_as_text():
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/reports?period=week").get_data(as_text=True)
    assert world.called("report")[-1][2][1] == "week"
    assert html.count('<rect class="bar"') == 2 + 3  # two periods, three segments
    assert 'data-value="5"' in html and "2026-02</td><td class=\"num\">5" in html
    assert '<p class="big" id="repeat-rate">37.5 %</p>' in html
    assert '<p class="big" id="top-share">40.0 %</p>' in html
    assert "<td>New</td><td class=\"num\">5</td>" in html


def test_chart_geometry():
    assert charts.nice_max(0) == 1 and charts.nice_max(7) == 10 and charts.nice_max(12) == 20
    assert charts.nice_max(230) == 250
    chart = charts.column_chart([("a", 5), ("b", 10)], width=200, height=100)
    tall, short = chart["bars"][1], chart["bars"][0]
    assert tall["h"] == chart["base"] - 10 and short["h"] == tall["h"] / 2
    assert tall["y"] + tall["h"] == chart["base"]
    assert [g["value"] for g in chart["grid"]] == ["0", "2", "4", "6", "8", "10"]  # whole numbers
    fractions = charts.column_chart([("a", 2.5), ("b", 10)], width=200, height=100)
    assert [g["value"] for g in fractions["grid"]] == ["0", "2.5", "5", "7.5", "10"]
    assert [g["value"] for g in charts.column_chart([("a", 4)])["grid"]] == \
        ["0", "1", "2", "3", "4", "5"]
    many = charts.column_chart([(str(i), i) for i in range(30)])
    assert sum(b["show_label"] for b in many["bars"]) <= 12
    rows = charts.bar_list([("x", 4), ("y", 2)], width=300)["rows"]
    assert rows[0]["w"] == 2 * rows[1]["w"] == 300 - 180
    assert charts.share_bar(None) is None
    assert charts.share_bar(0.25, width=400) == {"width": 400, "height": 36, "filled": 100.0,
                                                 "percent": 25.0}


def test_paging_keeps_a_trail_back_over_forward_only_cursors():
    def url(cursor, back):
        return (cursor, tuple(back))
    assert present.paging(url, None, [], "c2") == {"first": None, "previous": None,
                                                   "next": ("c2", ("~",))}
    two = present.paging(url, "c2", ["~"], "c3")
    assert two == {"first": None, "previous": (None, ()), "next": ("c3", ("~", "c2"))}
    three = present.paging(url, "c3", ["~", "c2"], None)
    assert three == {"first": (None, ()), "previous": ("c2", ("~",)), "next": None}
    long = [f"c{i}" for i in range(40)]
    assert len(present.paging(url, "x", long[-20:], "y")["next"][1]) == present.TRAIL_MAX
    # Beyond the trail's reach: the first page, never a wrong "previous".
    assert present.paging(url, "c9", [], None) == {"first": (None, ()), "previous": None,
                                                   "next": None}
    assert present.list_url({"sort": "-registered"}, cursor="c3", back=["~", "c2"]) == \
        "/console/customers?cursor=c3&back=~&back=c2"


def test_forms_read_workflows_and_name_field_errors_as_the_api_does():
    assert forms.field_errors({"errors": {"tiers/1/rate": ["too big"],
                                          "page": {"cursor": ["bad"]}}}) == {
        "tiers.1.rate": "too big", "page.cursor": "bad"}
    values = forms.workflow_form(Notifications.workflows[0])
    assert values["delay"] == "2" and values["delay_unit"] == "hours"
    assert values["trigger"] == "event:customer.tagged" and values["cancel_on_order"]
    assert forms.delay_text(0) == "at once" and forms.delay_text(60) == "after 1 minute"
    assert forms.trigger_summary({"date": "days_since_last_order", "days": 30}) == \
        "30 days after the last order"
