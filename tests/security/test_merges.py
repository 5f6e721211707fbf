"""Merges attacked through the gateway and directly: a hostile body, merge id or cursor is
refused naming the field before customer_sync is asked (or before anything is stored), and
one store cannot merge, read or page through another's records."""
from __future__ import annotations

import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from devdoubles import mongomock_adapter
from services.customer_sync.core.merges import CustomerMerges
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.repository import CustomerSyncStorage
from services.gateway.app import GatewayApp
from services.gateway.auth import Authenticator
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import build_routes
from services.gateway.routing import Router
from shared.errors import NotFound, ValidationError
from shared.paging import encode_cursor
from tests.security.test_scopes import RecordingBackends


@pytest.fixture(scope="module")
def app() -> GatewayApp:
    return GatewayApp(Router(build_routes()), Authenticator(0), RateLimiter(10 ** 9),
                      max_body_bytes=1 << 20)


def _send(app, method, path, body=None, query=""):
    backends = RecordingBackends({"good": ("write",)})
    data = json.dumps(body).encode() if body is not None else None
    environ = EnvironBuilder(path="/api/v1" + path, method=method, query_string=query, data=data,
                             headers={"Authorization": "Bearer good",
                                      **({"Content-Type": "application/json"} if data else {})},
                             environ_base={"REMOTE_ADDR": "192.0.2.10"}).get_environ()
    return app.handle(Request(environ), backends), backends


@pytest.mark.parametrize("body, field", [
    ({"merged_ids": ["b"]}, "primary_id"),
    ({"primary_id": "a"}, "merged_ids"),
    ({"primary_id": "a", "merged_ids": []}, "merged_ids"),
    ({"primary_id": "a", "merged_ids": [f"c{n}" for n in range(11)]}, "merged_ids"),
    ({"primary_id": "a", "merged_ids": ["b", "b"]}, "merged_ids"),
    ({"primary_id": "a", "merged_ids": [{"$gt": ""}]}, "merged_ids"),
    ({"primary_id": "a", "merged_ids": ["x" * 65]}, "merged_ids"),
    ({"primary_id": {"$ne": None}, "merged_ids": ["b"]}, "primary_id"),
    ({"primary_id": "a", "merged_ids": ["b"], "field_choices": {"role": "b"}}, "field_choices"),
    ({"primary_id": "a", "merged_ids": ["b"], "field_choices": {"email": ["b"]}},
     "field_choices"),
    ({"primary_id": "a", "merged_ids": ["b"], "field_choices": "b"}, "field_choices"),
    ({"primary_id": "a", "merged_ids": ["b"], "$where": "1"}, "$where"),
    ({"primary_id": "a", "merged_ids": ["b"], "field_choices": {"custom_fields.$where": "b"}},
     "field_choices"),
    ({"primary_id": "a", "merged_ids": ["b"], "field_choices": {"custom_fields.a.b": "b"}},
     "field_choices"),
    ({"primary_id": "a", "merged_ids": ["b"], "field_choices": {"custom_fields." + "k" * 41: "b"}},
     "field_choices"),
    ({"primary_id": "a", "merged_ids": ["b"],
      "field_choices": {f"custom_fields.k{n}": "b" for n in range(59)}}, "field_choices"),
])
def test_hostile_merge_bodies_are_refused_naming_the_field_before_any_service_is_asked(
        app, body, field):
    response, backends = _send(app, "POST", "/customers/merge", body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert field in json.dumps(json.loads(response.get_data())["errors"])
    assert ("customer_sync", "merge_customers") not in backends.calls


@pytest.mark.parametrize("path", ["/merges/%24where", "/merges/" + "a" * 65, "/merges/a%00b",
                                  "/merges/a.b/unmerge", "/merges/%7B%7D/unmerge"])
def test_hostile_merge_ids_are_refused_before_any_service_is_asked(app, path):
    method = "POST" if path.endswith("/unmerge") else "GET"
    response, backends = _send(app, method, path)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "merge_id" in json.loads(response.get_data())["errors"]
    assert not [c for c in backends.calls if c[0] == "customer_sync"]


@pytest.mark.parametrize("query, parameter", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("cursor=%27%3B", "cursor"),
    ("customer_id=" + "x" * 65, "customer_id"),
])
def test_hostile_list_parameters_are_refused_naming_them(app, query, parameter):
    response, backends = _send(app, "GET", "/merges", query=query)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert parameter in json.loads(response.get_data())["errors"]
    assert ("customer_sync", "list_merges") not in backends.calls


# -- directly, as another internal system calls over RPC ------------------------------------
@pytest.fixture
def stores():
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync_merges"])
    storage.ensure_indexes()
    # A field of store B's: store A may not name it; store A's own is `tier`.
    storage.custom_fields.insert({"store_id": "store-b", "key": "other_store", "label": "O",
                                  "type": "text"})
    storage.custom_fields.insert({"store_id": "store-a", "key": "tier", "label": "T",
                                  "type": "text"})
    for store_id in ("store-a", "store-b"):
        for n in range(2):
            storage.customers.insert({"_id": f"{store_id}-{n}", "store_id": store_id,
                                      "status": "active", "email": f"{n}@example.com"}, [])
    yield storage, CustomerMerges(storage, CustomerSync(storage))
    storage.database.client.drop_database("customer_sync_merges")


@pytest.mark.parametrize("primary, merged, choices, field", [
    ({"$ne": None}, ["store-a-1"], {}, "primary_id"),
    ("store-a-0", [{"$gt": ""}], {}, "merged_ids"),
    ("store-a-0", "store-a-1", {}, "merged_ids"),
    ("store-a-0", ["store-a-1"], {"email": {"$ne": None}}, "field_choices"),
    ("store-a-0", ["store-a-1"], {"$where": "store-a-1"}, "field_choices"),
    ("store-a-0", ["store-a-1"], "email", "field_choices"),
    ("store-a-0", ["store-a-1"], {"custom_fields.tier": "store-b-1"}, "field_choices"),
    ("store-a-0", ["store-a-1"], {"custom_fields.other_store": "store-a-1"}, "field_choices"),
    ("store-a-0", ["store-a-1"], {f"custom_fields.k{n}": "store-a-1" for n in range(100)},
     "field_choices"),
])
def test_hostile_rpc_input_is_refused_and_nothing_is_stored(stores, primary, merged, choices,
                                                            field):
    storage, merges = stores
    with pytest.raises(ValidationError) as refused:
        merges.merge_customers("store-a", primary, merged, choices, "mallory")
    assert field in refused.value.details["fields"]
    assert storage.merges.collection.count_documents({}) == 0
    assert storage.customers.collection.count_documents({"merge_claim": {"$exists": True}}) == 0


def test_another_stores_records_cannot_be_merged_read_or_undone(stores):
    storage, merges = stores
    with pytest.raises(NotFound):
        merges.merge_customers("store-b", "store-b-0", ["store-a-1"], {}, "mallory")
    assert storage.customers.get("store-a", "store-a-1")["status"] == "active"
    merge_id = merges.merge_customers("store-a", "store-a-0", ["store-a-1"], {},
                                      "alice").answer["merge_id"]
    for attempt in (lambda: merges.get("store-b", merge_id),
                    lambda: merges.unmerge("store-b", merge_id, "mallory")):
        with pytest.raises(NotFound):
            attempt()
    assert storage.merges.get("store-a", merge_id)["state"] == "done"
    assert merges.list("store-b")["items"] == []


@pytest.mark.parametrize("cursor", [
    encode_cursor(["store-a", "2026-01-01T00:00:00+00:00", "x"]),   # another store's
    encode_cursor(["store-b", {"$gt": ""}, "x"]), encode_cursor("store-b"), "!!",
])
def test_forged_or_foreign_cursors_are_refused_naming_the_page(stores, cursor):
    _, merges = stores
    with pytest.raises(ValidationError) as refused:
        merges.list("store-b", page={"cursor": cursor})
    assert "page" in refused.value.details["fields"]
