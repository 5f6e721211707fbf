"""The companies API (and the company on the customer list, page and export) through the
gateway's real pipeline, with the stand-in services of test_console answering as the
companies contract says."""
from __future__ import annotations

import csv
import io

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request

from services.gateway.routes import build_routes
from tests.unit.test_console import (COMPANY_ID, EVIL, OTHER_STORES_COMPANY, Segmentation,
                                     World)

UNKNOWN_COMPANY = "co_" + "c" * 24


@pytest.fixture
def world() -> World:
    return World()


def api(world: World) -> Client:
    return Client(lambda environ, start: world.gateway.handle(Request(environ), world.backends)(
        environ, start))


def bearer(key: str = "wcc_write") -> dict:
    return {"Authorization": f"Bearer {key}"}


def customer_sync(world: World):
    return world.backends.proxies["customer_sync"].service


# -- the companies ----------------------------------------------------------------------------

def test_the_list_pages_companies_with_one_stats_call_a_page(world):
    client = api(world)
    client.post("/api/v1/companies", json={"name": "Zebra AG"}, headers=bearer())
    client.post("/api/v1/companies", json={"name": "beta KG"}, headers=bearer())
    world.calls.clear()
    first = client.get("/api/v1/companies?limit=2", headers=bearer("wcc_read"))
    assert first.status_code == 200
    body = first.get_json()
    assert [c["name"] for c in body["items"]] == [f"{EVIL} Acme", "beta KG"]
    assert body["items"][0]["stats"]["total_spent"] == {"amount": 12345, "currency": "EUR"}
    assert [c[1] for c in world.calls if c[1] != "authenticate_api_key"] == [
        "list_companies", "company_stats"]
    assert world.called("list_companies")[0][2] == ("shop", None, {"size": 2, "cursor": None})
    assert world.called("company_stats")[0][2] == ("shop", [c["company_id"]
                                                            for c in body["items"]])
    assert first.headers["Link"] == '</api/v1/companies?limit=2&cursor=2>; rel="next"'
    second = client.get("/api/v1/companies?limit=2&cursor=2", headers=bearer("wcc_read"))
    assert [c["name"] for c in second.get_json()["items"]] == ["Zebra AG"]
    assert "Link" not in second.headers
    searched = client.get("/api/v1/companies?q=ZEBRA", headers=bearer("wcc_read"))
    assert world.called("list_companies")[-1][2][1] == {"q": "ZEBRA"}
    assert [c["name"] for c in searched.get_json()["items"]] == ["Zebra AG"]


def test_a_list_to_choose_from_asks_no_stats(world):
    answer = api(world).get("/api/v1/companies?stats=false", headers=bearer("wcc_read"))
    assert [c["stats"] for c in answer.get_json()["items"]] == [None]
    assert world.called("company_stats") == []


def test_an_empty_page_asks_no_stats(world, monkeypatch):
    monkeypatch.setattr(type(customer_sync(world)), "list_companies",
                        lambda self, store, filters=None, page=None: {"items": [],
                                                                     "next_cursor": None})
    answer = api(world).get("/api/v1/companies?q=nothing", headers=bearer("wcc_read"))
    assert answer.get_json() == {"items": [], "next_cursor": None}
    assert world.called("company_stats") == []


def test_the_company_page_adds_stats_and_its_groups_terms(world):
    answer = api(world).get(f"/api/v1/companies/{COMPANY_ID}", headers=bearer("wcc_read"))
    assert answer.status_code == 200
    company = answer.get_json()
    assert company["group"] == "wholesale" and company["stats"]["members"] == 1
    assert company["group_terms"] == {"name": f"{EVIL} Wholesale", "discount_percent": "12.5",
                                      "free_shipping_threshold": 50000,
                                      "payment_terms_days": 30}


def test_a_company_without_a_group_or_whose_group_is_gone_has_no_terms(world):
    client = api(world)
    created = client.post("/api/v1/companies", json={"name": "Plain"}, headers=bearer())
    assert created.status_code == 201 and created.get_json()["group_terms"] is None
    customer_sync(world).companies[COMPANY_ID]["group"] = "deleted-since"
    answer = client.get(f"/api/v1/companies/{COMPANY_ID}", headers=bearer("wcc_read"))
    assert answer.get_json()["group_terms"] is None


def test_an_unknown_group_is_a_400_naming_group_before_customer_sync_is_asked(world):
    client = api(world)
    refused = client.post("/api/v1/companies", json={"name": "Beta", "group": "nope"},
                          headers=bearer())
    assert refused.status_code == 400 and refused.get_json()["errors"] == {
        "group": ["no such group"]}
    changed = client.put(f"/api/v1/companies/{COMPANY_ID}", json={"group": "nope"},
                         headers=bearer())
    assert changed.status_code == 400 and "group" in changed.get_json()["errors"]
    assert world.called("create_company") == world.called("update_company") == []
    cleared = client.put(f"/api/v1/companies/{COMPANY_ID}", json={"group": None},
                         headers=bearer())
    assert cleared.status_code == 200 and cleared.get_json()["group"] is None
    assert world.called("update_company")[-1][2] == ("shop", COMPANY_ID, {"group": None},
                                                      "api-key:write")


def test_create_update_and_delete_pass_the_body_and_the_actor_and_answer_by_the_contract(world):
    client = api(world)
    created = client.post("/api/v1/companies", json={
        "name": "Beta GmbH", "domain": "beta.example", "vat_id": "DE 999",
        "address": {"city": "Köln", "country": "DE"}, "group": "wholesale"}, headers=bearer())
    assert created.status_code == 201
    company = created.get_json()
    assert company["address"]["city"] == "Köln" and company["address"]["address_1"] == ""
    assert world.called("create_company")[0][2][2] == "api-key:write"
    changed = client.put(f"/api/v1/companies/{company['company_id']}",
                         json={"domain": None, "name": "Beta AG"}, headers=bearer())
    assert changed.status_code == 200 and changed.get_json()["domain"] is None
    deleted = client.delete(f"/api/v1/companies/{company['company_id']}", headers=bearer())
    assert deleted.get_json() == {"company_id": company["company_id"], "deleted": True,
                                  "members_released": 0}
    again = client.get(f"/api/v1/companies/{company['company_id']}", headers=bearer())
    assert again.status_code == 404


def test_a_deletion_that_stopped_early_is_answered_and_documented_as_finishing(world,
                                                                              monkeypatch):
    answer = {"company_id": COMPANY_ID, "deleted": False, "finishing": True,
              "members_released": 3}
    monkeypatch.setattr(type(customer_sync(world)), "delete_company",
                        lambda self, store, company_id, actor: answer)
    deleted = api(world).delete(f"/api/v1/companies/{COMPANY_ID}", headers=bearer())
    assert deleted.status_code == 200 and deleted.get_json() == answer
    [route] = [r for r in build_routes() if r.method == "DELETE"
               and r.path == "/companies/<company_id>"]
    schema = route.responses[200]
    assert schema["properties"]["finishing"]["type"] == "boolean"
    assert "finishing" not in schema["required"]


def test_customer_syncs_refusals_come_back_naming_the_field(world):
    client = api(world)
    taken = client.post("/api/v1/companies", json={"name": "Copy", "domain": "acme.example"},
                        headers=bearer())
    assert taken.status_code == 409 and taken.get_json()["errors"] == {"domain": ["taken"]}
    free_mail = client.post("/api/v1/companies", json={"name": "X", "domain": "gmail.com"},
                            headers=bearer())
    assert free_mail.status_code == 400 and "domain" in free_mail.get_json()["errors"]
    vat = client.put(f"/api/v1/companies/{COMPANY_ID}", json={"vat_id": "1"},
                     headers=bearer())
    assert vat.status_code == 400 and "vat_id" in vat.get_json()["errors"]


@pytest.mark.parametrize("body, field", [
    ({}, "'name' is a required property"), ({"name": ""}, "name"), ({"name": "x" * 201}, "name"),
    ({"name": "A", "colour": "red"}, "(body)"), ({"name": "A", "group": "Not A Slug"}, "group"),
    ({"name": "A", "address": {"planet": "Mars"}}, "address"),
    ({"name": "A", "address": {"city": "x" * 201}}, "address/city"),
    ({"name": "A", "custom_fields": {f"k{i}": 1 for i in range(51)}}, "custom_fields"),
])
def test_a_body_out_of_shape_is_refused_naming_the_field_and_nothing_is_asked(world, body,
                                                                               field):
    answer = api(world).post("/api/v1/companies", json=body, headers=bearer())
    assert answer.status_code == 400 and field in str(answer.get_json()["errors"])
    assert world.called("create_company") == [] and world.called("list_groups") == []


def test_another_stores_company_and_a_malformed_id_are_not_found_or_refused(world):
    client = api(world)
    for method in ("get", "put", "delete"):
        kwargs = {"json": {"name": "Mine now"}} if method == "put" else {}
        answer = getattr(client, method)(f"/api/v1/companies/{OTHER_STORES_COMPANY}",
                                         headers=bearer(), **kwargs)
        assert answer.status_code == 404, method
    assert customer_sync(world).companies[OTHER_STORES_COMPANY]["name"] == "Other store's company"
    bad = client.get("/api/v1/companies/co_XYZ", headers=bearer())
    assert bad.status_code == 400 and "company_id" in bad.get_json()["errors"]
    assert world.called("get_company") == [("customer_sync", "get_company",
                                            ("shop", OTHER_STORES_COMPANY))]


def test_writes_need_the_write_scope_and_the_setting_the_admin_scope(world):
    client = api(world)
    assert client.post("/api/v1/companies", json={"name": "A"},
                       headers=bearer("wcc_read")).status_code == 403
    assert client.put("/api/v1/customers/c1/company", json={"company_id": None},
                      headers=bearer("wcc_read")).status_code == 403
    assert client.put("/api/v1/settings/companies", json={"match_email_domain": True},
                      headers=bearer("wcc_write")).status_code == 403
    assert world.called("create_company") == world.called("set_company_matching") == []


def test_the_members_are_the_customer_list_filtered_by_the_company(world, monkeypatch):
    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    client = api(world)
    answer = client.get(f"/api/v1/companies/{COMPANY_ID}/members?limit=10",
                        headers=bearer("wcc_read"))
    assert answer.status_code == 200
    [row] = answer.get_json()["items"]
    assert row["company_id"] == COMPANY_ID and row["company_name"] == f"{EVIL} Acme"
    assert world.called("search_customers")[-1][2] == (
        "shop", {"company_id": COMPANY_ID}, {"field": "name", "direction": "asc"},
        {"size": 10, "cursor": None})
    assert answer.headers["Link"].endswith('cursor=abc>; rel="next"')
    gone = client.get(f"/api/v1/companies/{OTHER_STORES_COMPANY}/members", headers=bearer())
    assert gone.status_code == 404 and len(world.called("search_customers")) == 1


def test_a_customer_joins_a_company_and_leaves_it(world):
    client = api(world)
    joined = client.put("/api/v1/customers/c1/company", json={"company_id": COMPANY_ID},
                        headers=bearer())
    assert joined.get_json() == {"customer_id": "c1", "company_id": COMPANY_ID, "changed": True}
    page = client.get("/api/v1/customers/c1", headers=bearer("wcc_read")).get_json()
    assert page["company"] == {"company_id": COMPANY_ID, "name": f"{EVIL} Acme"}
    left = client.put("/api/v1/customers/c1/company", json={"company_id": None},
                      headers=bearer())
    assert left.get_json()["changed"] is True
    page = client.get("/api/v1/customers/c1", headers=bearer("wcc_read")).get_json()
    assert page["company"] is None


@pytest.mark.parametrize("body, status, field", [
    ({"company_id": OTHER_STORES_COMPANY}, 404, "company_id"),
    ({"company_id": UNKNOWN_COMPANY}, 404, "company_id"),
    ({"company_id": "acme"}, 400, "company_id"),
    ({}, 400, "'company_id' is a required property"),
    ({"company_id": None, "extra": 1}, 400, "(body)"),
])
def test_a_customers_company_refusals_name_the_field(world, body, status, field):
    answer = api(world).put("/api/v1/customers/c1/company", json=body, headers=bearer())
    assert answer.status_code == status and field in str(answer.get_json()["errors"])
    assert customer_sync(world).customer_companies.get("c1") is None


def test_an_unknown_customer_is_named(world):
    answer = api(world).put("/api/v1/customers/nobody/company",
                            json={"company_id": COMPANY_ID}, headers=bearer())
    assert answer.status_code == 404 and answer.get_json()["errors"] == {
        "customer_id": ["not found"]}


def test_the_matching_setting_round_trips(world):
    client = api(world)
    assert client.get("/api/v1/settings/companies", headers=bearer("wcc_read")).get_json() == {
        "match_email_domain": False}
    saved = client.put("/api/v1/settings/companies", json={"match_email_domain": True},
                       headers=bearer("wcc_admin"))
    assert saved.get_json() == {"match_email_domain": True}
    assert world.called("set_company_matching")[-1][2] == (
        "shop", {"match_email_domain": True}, "api-key:admin")
    for body in ({"match_email_domain": "yes"}, {}, {"match_email_domain": True, "x": 1}):
        refused = client.put("/api/v1/settings/companies", json=body,
                             headers=bearer("wcc_admin"))
        assert refused.status_code == 400, body
    assert len(world.called("set_company_matching")) == 1


# -- the customer list, page and export ------------------------------------------------------

def test_the_customer_list_names_each_rows_company_with_one_call(world, monkeypatch):
    client = api(world)
    plain = client.get("/api/v1/customers", headers=bearer("wcc_read")).get_json()
    assert plain["items"][0]["company_id"] is None and plain["items"][0]["company_name"] is None
    assert world.called("company_names") == []  # no row has a company: nothing asked
    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    listed = client.get(f"/api/v1/customers?company_id={COMPANY_ID}",
                        headers=bearer("wcc_read")).get_json()
    assert listed["items"][0]["company_name"] == f"{EVIL} Acme"
    assert world.called("company_names") == [("customer_sync", "company_names",
                                              ("shop", [COMPANY_ID]))]
    assert world.called("search_customers")[-1][2][1] == {"company_id": COMPANY_ID}
    bad = client.get("/api/v1/customers?company_id=acme", headers=bearer("wcc_read"))
    assert bad.status_code == 400 and "company_id" in bad.get_json()["errors"]


def test_a_row_whose_company_is_gone_keeps_its_id_without_a_name(world, monkeypatch):
    monkeypatch.setattr(Segmentation, "row_company_id", UNKNOWN_COMPANY)
    row = api(world).get("/api/v1/customers", headers=bearer("wcc_read")).get_json()["items"][0]
    assert row["company_id"] == UNKNOWN_COMPANY and row["company_name"] is None


def test_the_customer_page_says_when_the_company_cannot_be_named(world, monkeypatch):
    customer_sync(world).customer_companies["c1"] = COMPANY_ID

    def down(self, store, ids):
        from shared.errors import Unavailable
        raise Unavailable("customer_sync is busy")

    monkeypatch.setattr(type(customer_sync(world)), "company_names", down)
    page = api(world).get("/api/v1/customers/c1", headers=bearer("wcc_read")).get_json()
    assert page["company"] == {"company_id": COMPANY_ID, "name": None}
    assert "company" in page["unavailable"]


def test_the_export_has_the_company_columns_resolved_a_page_at_a_time(world, monkeypatch):
    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    pages = iter([("p2", "c1"), (None, "c2")])

    def search(self, store, filters, sort, page):
        cursor, customer_id = next(pages)
        return {"items": [{"customer_id": customer_id, "name": "x", "email": None,
                           "account_status": "active", "segment": None, "tags": [],
                           "groups": [], "stats": None, "company_id": COMPANY_ID}],
                "next_cursor": cursor}

    monkeypatch.setattr(Segmentation, "search_customers", search)
    answer = api(world).get("/api/v1/exports/customers", headers=bearer("wcc_read"))
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [(r["customer_id"], r["company_id"], r["company_name"]) for r in rows] == [
        ("c1", COMPANY_ID, f"{EVIL} Acme"), ("c2", COMPANY_ID, f"{EVIL} Acme")]
    assert len(world.called("company_names")) == 2  # one a page


def test_company_names_are_asked_in_batches_the_rpc_takes(world, monkeypatch):
    ids = [f"co_{i:024x}" for i in range(450)]

    def search(self, store, filters, sort, page):
        return {"items": [{"customer_id": f"c{i}", "name": "x", "email": None,
                           "account_status": "active", "segment": None, "tags": [],
                           "groups": [], "stats": None, "company_id": company_id}
                          for i, company_id in enumerate(ids)], "next_cursor": None}

    monkeypatch.setattr(Segmentation, "search_customers", search)
    answer = api(world).get("/api/v1/customers?limit=500", headers=bearer("wcc_read"))
    assert answer.status_code == 200
    assert [len(c[2][1]) for c in world.called("company_names")] == [200, 200, 50]
