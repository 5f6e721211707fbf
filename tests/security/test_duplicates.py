"""The duplicate finder attacked through the gateway and directly: a hostile limit, cursor or
match is refused naming the parameter before customer_sync is asked, and a cursor issued for
one store does not page through another's customers."""
from __future__ import annotations

import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from devdoubles import mongomock_adapter
from services.customer_sync.core.duplicate_search import DuplicateSearch
from services.customer_sync.repository import CustomerSyncStorage
from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from shared.errors import ValidationError
from shared.paging import encode_cursor
from tests.security.test_scopes import RecordingBackends


@pytest.fixture(scope="module")
def app() -> GatewayApp:
    return GatewayApp(Router(build_routes()), Authenticator(0), RateLimiter(10 ** 9),
                      max_body_bytes=1 << 20)


@pytest.mark.parametrize("query, parameter", [
    ("limit=0", "limit"), ("limit=201", "limit"), ("limit=-1", "limit"), ("limit=1e3", "limit"),
    ("limit=99999999999999999999999", "limit"), ("limit=", "limit"),
    ("cursor=%27%3B%20db.drop()", "cursor"), ("cursor=" + "A" * 2001, "cursor"),
    ("cursor=a%00b", "cursor"), ("match=%24where", "match"), ("match=EMAIL", "match"),
])
def test_hostile_parameters_are_refused_naming_them_before_any_service_is_asked(app, query,
                                                                                 parameter):
    backends = RecordingBackends({"good": ("read",)})
    environ = EnvironBuilder(path="/api/v1/duplicates", query_string=query, method="GET",
                             headers={"Authorization": "Bearer good"},
                             environ_base={"REMOTE_ADDR": "192.0.2.10"}).get_environ()
    response = app.handle(Request(environ), backends)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert parameter in json.loads(response.get_data())["errors"]
    assert ("customer_sync", "find_duplicates") not in backends.calls


@pytest.fixture
def search():
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    for store_id in ("store-a", "store-b"):
        for n in range(2):
            storage.customers.insert({"_id": f"{store_id}-{n}", "store_id": store_id,
                                      "status": "active", "email": "shared@example.com"}, [])
    return DuplicateSearch(storage)


def test_a_cursor_from_another_store_is_refused(search):
    cursor = encode_cursor(["store-a", None, "email", ""])
    assert search.find("store-a", cursor=cursor)["groups"]  # a cursor of store-a pages store-a
    with pytest.raises(ValidationError) as refused:
        search.find("store-b", cursor=cursor)
    assert "cursor" in refused.value.details["fields"]


@pytest.mark.parametrize("cursor", [
    encode_cursor(["store-a", None, "email", {"$gt": ""}]),      # an operator for a key
    encode_cursor(["store-a", None, "$where", "x"]),
    encode_cursor(["store-a", None, "email"]),
    encode_cursor("store-a"), "!!", 12,
])
def test_forged_cursors_are_refused_naming_the_cursor(search, cursor):
    with pytest.raises(ValidationError) as refused:
        search.find("store-a", cursor=cursor)
    assert "cursor" in refused.value.details["fields"]
