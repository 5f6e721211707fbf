"""The company routes' bodies attacked over the API, in front of the stand-in services of
tests/unit/test_console: operator objects for ids, oversize and nested values, unknown keys, a
group naming something segmentation never saved, another store's company. Each is a 4xx
naming the field, and no company or membership is written."""
from __future__ import annotations

import copy
import json

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request

from tests.unit.test_console import COMPANY_ID, OTHER_STORES_COMPANY, World

WRITER = {"Authorization": "Bearer wcc_write"}


@pytest.fixture
def world() -> World:
    return World()


def _api(world: World) -> Client:
    return Client(lambda environ, start: world.gateway.handle(Request(environ), world.backends)(
        environ, start))


def _written(world: World) -> list:
    return [c for c in world.calls if c[1] in ("create_company", "update_company",
                                               "delete_company", "set_customer_company")]


@pytest.mark.parametrize("body, field", [
    ({"name": {"$ne": None}}, "name"),
    ({"name": "A", "domain": ["a.example"]}, "domain"),
    ({"name": "A", "domain": "a" * 254}, "domain"),
    ({"name": "A", "vat_id": "D" * 31}, "vat_id"),
    ({"name": "A", "group": "../../keys"}, "group"),
    ({"name": "A", "group": "nosuch"}, "group"),
    ({"name": "A", "address": {"city": {"$gt": ""}}}, "address/city"),
    ({"name": "A", "address": "Berlin"}, "address"),
    ({"name": "A", "custom_fields": [1, 2]}, "custom_fields"),
    ({"name": "A", "store_id": "other"}, "(body)"),
    ({"name": "A", "company_id": OTHER_STORES_COMPANY}, "(body)"),
    ({"name": "A", "member_count": 10 ** 9}, "(body)"),
])
def test_a_hostile_company_body_is_refused_naming_the_field(world, body, field):
    client = _api(world)
    for method, path in (("POST", "/api/v1/companies"),
                         ("PUT", f"/api/v1/companies/{COMPANY_ID}")):
        answer = client.open(path, method=method, json=body, headers=WRITER)
        assert answer.status_code == 400, (method, answer.get_data(as_text=True)[:300])
        assert field in json.dumps(answer.get_json()["errors"]), answer.get_json()
    assert _written(world) == []


@pytest.mark.parametrize("company_id", [{"$ne": None}, ["co_" + "a" * 24], "co_" + "a" * 24 + "\n",
                                        "CO_" + "A" * 24, "", 7])
def test_a_hostile_company_id_in_a_body_is_refused(world, company_id):
    answer = _api(world).put("/api/v1/customers/c1/company", json={"company_id": company_id},
                             headers=WRITER)
    assert answer.status_code == 400 and "company_id" in json.dumps(answer.get_json()["errors"])
    assert _written(world) == []


def test_another_stores_company_cannot_be_read_changed_deleted_or_joined(world):
    client = _api(world)
    sync = world.backends.proxies["customer_sync"].service
    before = copy.deepcopy(sync.companies)
    other = f"/api/v1/companies/{OTHER_STORES_COMPANY}"
    assert client.get(other, headers=WRITER).status_code == 404
    assert client.get(other + "/members", headers=WRITER).status_code == 404
    assert client.put(other, json={"name": "Mine"}, headers=WRITER).status_code == 404
    assert client.delete(other, headers=WRITER).status_code == 404
    joined = client.put("/api/v1/customers/c1/company", json={"company_id": OTHER_STORES_COMPANY},
                        headers=WRITER)
    assert joined.status_code == 404 and "Other store" not in joined.get_data(as_text=True)
    listed = client.get("/api/v1/companies?q=other", headers=WRITER).get_json()
    assert listed["items"] == []
    assert sync.companies == before and sync.customer_companies.get("c1") is None


def test_a_big_body_is_refused_before_any_service(world):
    answer = _api(world).post("/api/v1/companies", data=json.dumps(
        {"name": "A", "custom_fields": {"k": "x" * (2 << 20)}}),
        content_type="application/json", headers=WRITER)
    assert answer.status_code == 413 and _written(world) == []
