"""Tenancy, attacked: store B's key naming store A's ids.

Two levels. customer_sync's repositories and use cases (customers, orders, notes, reminders)
and loyalty's accounts, asked for store B, never find store A's records: the store filter of
every lookup is what is tested, on the same in-memory database. Then the API: a route-table-driven walk in which store
B's admin key names store A's customer, note, reminder, tag, group, template, segment, rule,
workflow, bulk send, GDPR request, key, reward and quarantined webhook delivery, on every route
that takes an id; each answers 404,
B's lists show nothing of A's, and A's records read the same afterwards."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from services.customer_sync.crm.notes import Notes
from services.customer_sync.core.queries import CustomerQueries
from services.customer_sync.crm.reminders import Reminders
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.core.sync import CustomerSync
from services.gateway.routes import build_routes
from services.loyalty.accounts import Accounts
from services.loyalty.repository import LoyaltyStorage
from shared.errors import NotFound, ServiceError
from shared.events import build_event, contract
from tests import payloads
from tests.gateway_client import GatewayClient
from tests.gateway_system import shop, system  # noqa: F401 - fixtures
from tests.security.gateway_requests import body_of, ok, path_of, store_a_records
from tests.support import Clock

ROUTES = build_routes()
STORE_A, STORE_B = "store-a", "store-b"


# -- customer_sync's repositories and use cases ---------------------------------------------------
@pytest.fixture
def storage(database) -> CustomerSyncStorage:
    storage = CustomerSyncStorage(database)
    storage.ensure_indexes()
    return storage


@pytest.fixture
def store_a(storage) -> dict:
    """Store A's customer with an order, a note and a reminder."""
    sync = CustomerSync(storage)
    sync.apply(STORE_A, "customer", "created", payloads.customer(), correlation_id="c1")
    sync.apply(STORE_A, "order", "created", payloads.order(), correlation_id="c2")
    customer = storage.customers.by_woo_id(STORE_A, 42)
    order = storage.orders.collection.find_one({"store_id": STORE_A})
    note = Notes(storage).add(STORE_A, customer["_id"], {"category": "general",
                                                         "text": "prefers tea"}, "staff").answer
    reminder = Reminders(storage).add(STORE_A, customer["_id"], {
        "due_at": "2030-01-01T09:00:00Z", "text": "call back"}, "staff").answer
    return {"customer_id": customer["_id"], "order_id": order["_id"].split(":", 1)[1],
            "note_id": note["note_id"], "reminder_id": reminder["reminder_id"]}


def test_customer_repository_lookups_keep_to_their_store(storage, store_a):
    customers, orders = storage.customers, storage.orders
    assert customers.get(STORE_A, store_a["customer_id"]) is not None  # the data is there
    assert customers.get(STORE_B, store_a["customer_id"]) is None
    assert customers.by_woo_id(STORE_B, 42) is None
    assert customers.by_email(STORE_B, "ada@example.com") is None
    assert customers.search(STORE_B, {}, None, 10) == []
    assert customers.count(STORE_B) == 0
    assert orders.get(STORE_A, store_a["order_id"]) is not None
    assert orders.get(STORE_B, store_a["order_id"]) is None
    assert orders.for_customer(STORE_B, store_a["customer_id"], 0, 10) == []
    assert len(orders.for_customer(STORE_A, store_a["customer_id"], 0, 10)) == 1  # not vacuous
    assert storage.notes.get(STORE_B, store_a["note_id"]) is None
    assert storage.notes.for_customer(STORE_B, store_a["customer_id"], None) == []


def test_customer_sync_use_cases_answer_not_found_across_stores(storage, store_a):
    queries, notes, reminders = CustomerQueries(storage), Notes(storage), Reminders(storage)
    customer_id = store_a["customer_id"]
    assert queries.get_customer(STORE_A, customer_id)["customer_id"] == customer_id
    for attempt in (
            lambda: queries.get_customer(STORE_B, customer_id),
            lambda: queries.find_customer(STORE_B, "ada@example.com"),
            lambda: queries.list_orders(STORE_B, customer_id),
            lambda: notes.list(STORE_B, customer_id),
            lambda: notes.add(STORE_B, customer_id, {"category": "general", "text": "x"}, "m"),
            lambda: notes.update(STORE_B, store_a["note_id"], {"text": "x"}, "mallory"),
            lambda: notes.delete(STORE_B, store_a["note_id"], "mallory"),
            lambda: reminders.add(STORE_B, customer_id, {"due_at": "2030-01-01T09:00:00Z",
                                                         "text": "x"}, "mallory"),
            lambda: reminders.complete(STORE_B, store_a["reminder_id"], "mallory"),
            lambda: reminders.delete(STORE_B, store_a["reminder_id"], "mallory")):
        with pytest.raises(NotFound):
            attempt()
    assert queries.export_person(STORE_B, customer_id) is None  # the RPC answers NotFound
    assert queries.list_customers(STORE_B)["items"] == []
    assert reminders.list(STORE_B, None, None) == []
    # and store A's records are as they were
    assert [n["text"] for n in notes.list(STORE_A, customer_id)] == ["prefers tea"]
    assert [r["status"] for r in reminders.list(STORE_A, customer_id)] == ["open"]


def test_loyalty_accounts_keep_to_their_store(database):
    """loyalty's accounts and ledger are keyed by store: store B asking for store A's customer
    finds no account, no history, and cannot spend A's points."""
    storage = LoyaltyStorage(database)
    storage.ensure_indexes()
    accounts = Accounts(storage, clock=Clock(datetime(2026, 6, 1, 12, tzinfo=timezone.utc)))
    data = {**contract("order.placed").sample, "order_id": "1", "number": "1",
            "customer_id": "c1", "total": {"amount": 4_990, "currency": "EUR"},
            "total_refunded": {"amount": 0, "currency": "EUR"}}
    accounts.apply_order_event(build_event("order.placed", store_id=STORE_A, data=data))
    earned = accounts.account_view(STORE_A, "c1")["balance"]
    assert earned > 0
    assert storage.accounts.get(STORE_B, "c1") is None
    assert storage.ledger.history(STORE_B, "c1", None, 10) == []
    with pytest.raises(NotFound):
        accounts.account_view(STORE_B, "c1")
    with pytest.raises(ServiceError):  # nothing to redeem in B, whatever the refusal's kind
        accounts.redeem(STORE_B, "c1", earned)
    assert accounts.account_view(STORE_A, "c1")["balance"] == earned


# -- the API, every route family ------------------------------------------------------------------
# Routes that create or replace a record named in the path: for store B they make B's own
# record of that name (names are per store), which must leave A's as it was.
CREATE_OR_REPLACE = {"PUT /groups/<slug>", "PUT /notifications/templates/<slug>"}
# Routes without ids in the path whose sample body names A's ids: refused (404, or 400 naming
# the field), as nothing of that name exists in B, or (bulk) answered item by item as not found.
BODY_NAMES_IDS = {"POST /customers/bulk", "POST /customers/merge", "POST /notifications/preview",
                  "POST /notifications/workflows", "POST /notifications/bulk-sends",
                  "POST /notifications/suppressions/lift"}


def _order(route) -> int:
    """Reads first, then writes, then deletes, and last the routes that make B's own record of
    a name, so that every earlier request finds nothing of that name in B."""
    if route.endpoint in CREATE_OR_REPLACE:
        return 3
    return {"GET": 0, "DELETE": 2}.get(route.method, 1)


def _store_a_view(admin: GatewayClient, ids: dict) -> dict:
    """What store A's records read as, to compare before and after B's attempts."""
    cid = f"/customers/{ids['customer_id']}"
    reads = {
        "customer": cid, "tags": cid, "loyalty": cid + "/loyalty", "consent": cid + "/consent",
        "rewards": cid + "/loyalty/rewards",
        "notes": cid + "/notes", "reminders": cid + "/reminders?status=open",
        "groups": "/groups", "tag_catalogue": "/tags", "template": f"/notifications/templates/{ids['template']}",
        "workflows": "/notifications/workflows", "segments": "/segments", "rules": "/rules",
        "request": f"/gdpr/requests/{ids['request_id']}", "keys": "/keys",
        "programme": "/loyalty/programme", "settings": "/notifications/settings",
        "consent_capture": "/consent/capture", "thresholds": "/segment-thresholds",
        "quarantined": f"/webhooks/quarantine/{ids['quarantine_id']}",
        "suppressions": "/notifications/suppressions", "custom_fields": "/custom-fields",
        "company": f"/companies/{ids['company_id']}", "companies": "/companies",
        "company_members": f"/companies/{ids['company_id']}/members",
        "company_settings": "/settings/companies"}
    view = {}
    for name, path in reads.items():
        answer = ok(admin.get(path))
        if name in ("customer", "tags"):  # the customer itself, not its changing summary
            answer = answer["customer"] if name == "customer" else answer.get("tags")
        if name == "keys":
            answer = sorted((k["key_id"], k.get("revoked_at")) for k in answer)
        view[name] = answer
    return view


def _shows_a(text: str, a: dict, echoed: bool = False) -> bool:
    """Whether an answer to B holds any of A's ids or its customer's email; `echoed`: what B
    itself sent (the customer id, a tag, group or template name) may come back, as the subject
    of a refusal or an empty answer."""
    sent = {"customer_id", "tag", "group", "template"} if echoed else set()
    shown = [v for k, v in a["ids"].items() if len(str(v)) >= 5 and k not in sent]
    return a["email"] in text or any(str(v) in text for v in shown)


def _store_b_admin(system) -> GatewayClient:
    system.rpc.customer_sync.register_store({
        "store_id": "intruder", "shop_url": system.shop.base_url,
        "webhook_secret": "whsec-intruder-12345", "consumer_key": system.shop.consumer_key,
        "consumer_secret": system.shop.consumer_secret})
    key = system.rpc.customer_sync.create_api_key("intruder", "intruder admin", ["admin"],
                                                  "test", rate_limit_per_minute=100_000)
    return GatewayClient(system.gateway_url, key["api_key"], system.checker)


def test_store_b_naming_store_a_ids_gets_404_on_every_route(system):
    a = store_a_records(system)
    ids, admin = a["ids"], a["admin"]
    before = _store_a_view(admin, ids)
    intruder = _store_b_admin(system)

    answers: dict[str, tuple[int, str]] = {}
    for route in sorted(ROUTES, key=_order):
        if route.scope is None:
            continue
        body, headers = body_of(route, ids)
        response = intruder.request(route.method, path_of(route, ids), data=body,
                                    headers=headers)
        answers[route.endpoint] = (response.status_code, response.text)

    unexpected = {}
    for route in ROUTES:
        if route.endpoint not in answers:
            continue
        status, text = answers[route.endpoint]
        if route.endpoint in CREATE_OR_REPLACE:
            ok = 200 <= status < 300
        elif route.endpoint in ("POST /customers/bulk", "POST /consent/bulk"):
            ok = status == 200 and all(r["outcome"] == "not_found"
                                       for r in json.loads(text)["results"])
        elif route.endpoint == "POST /webhooks/quarantine/replay":  # B has nothing to release
            answer = json.loads(text) if status == 200 else {}
            ok = (answer.get("replayed"), answer.get("not_found"), answer.get("remaining")) == (
                [], [ids["quarantine_id"]], 0)
        elif route.endpoint in BODY_NAMES_IDS:
            ok = status in (400, 404) and not _shows_a(text, a, echoed=True)
        elif route.path_params:
            ok = status == 404
        else:  # B's own lists and store-wide answers: nothing of A's shows
            ok = status < 300 and not _shows_a(text, a)
        if not ok:
            unexpected[route.endpoint] = (status, text[:200])
    for endpoint, answer in sorted(unexpected.items()):
        print("UNEXPECTED", endpoint, answer)
    assert unexpected == {}, "store B reached store A's records"
    assert _store_a_view(admin, ids) == before, "store B's requests changed store A's records"
