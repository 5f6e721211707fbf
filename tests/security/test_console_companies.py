"""The console's company pages and forms attacked, in front of the stand-in services of
tests/unit/test_console (customer_sync's company RPCs as the companies contract has them):
markup in every field a company shows, posts without the session's CSRF token, a read key's
posts, hostile query and form values, and another store's company. Each is escaped or refused,
and nothing is stored."""
from __future__ import annotations

import copy
import re

import pytest

from werkzeug.datastructures import MultiDict

from services.gateway.console import company_views
from shared.errors import Unavailable
from tests.unit.test_console import (COMPANY_ID, EVIL, OTHER_STORES_COMPANY, CustomerSync,
                                     Segmentation, World)

# A company with markup in every field it shows, and a custom field definition for it.
HOSTILE = {"name": EVIL, "domain": f"{EVIL}.example", "vat_id": EVIL, "group": EVIL,
           "created_by": EVIL, "updated_by": EVIL, "custom_fields": {"note": EVIL},
           "address": {part: f"{EVIL} {part}" for part in (
               "address_1", "address_2", "city", "state", "postcode", "country")}}
FIELDS = [{"key": "note", "label": EVIL, "type": "text", "required": False,
           "applies_to": "company"},
          {"key": "pick", "label": "Pick", "type": "choice", "options": [EVIL],
           "required": False, "applies_to": "company"}]
WRITES = [("/console/companies/new", {"name": "Mine"}),
          (f"/console/companies/{COMPANY_ID}/edit", {"name": "Mine"}),
          (f"/console/companies/{COMPANY_ID}/delete", {"understood": "yes"}),
          ("/console/companies/settings", {"match_email_domain": "yes"}),
          ("/console/customers/c1/company", {"company_id": COMPANY_ID})]
PAGES = ("/console/companies", "/console/companies/new", f"/console/companies/{COMPANY_ID}",
         f"/console/companies/{COMPANY_ID}/edit", "/console/customers/c1",
         f"/console/customers?company_id={COMPANY_ID}")


@pytest.fixture
def hostile(monkeypatch):
    """The store's company carries markup everywhere, and c1 belongs to it."""
    monkeypatch.setattr(CustomerSync, "list_custom_fields", lambda self, store: FIELDS)
    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    monkeypatch.setattr(Segmentation, "list_groups", lambda self, store: [
        {"slug": EVIL, "name": EVIL, "discount_percent": EVIL, "free_shipping_threshold": 1,
         "payment_terms_days": 1, "customers": 0}])


def _world(key: str) -> World:
    world = World()
    world.login(key)
    sync = _sync(world)
    sync.companies[COMPANY_ID].update(copy.deepcopy(HOSTILE))
    sync.customer_companies["c1"] = COMPANY_ID
    return world


def _sync(world: World) -> CustomerSync:
    return world.backends.proxies["customer_sync"].service


def _writes(world: World) -> list:
    return [c for c in world.calls if c[1] in (
        "create_company", "update_company", "delete_company", "set_customer_company",
        "set_company_matching")]


@pytest.mark.parametrize("url", PAGES)
def test_every_shown_field_is_escaped_and_every_form_is_labelled_and_protected(hostile, url):
    world = _world("wcc_admin")
    answer = world.client.get(url)
    assert answer.status_code == 200, url
    page = answer.get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "style=" not in page
    for form in re.findall(r'<form method="post".*?</form>', page, re.S):
        assert 'name="csrf_token"' in form, form[:120]
    labelled = set(re.findall(r'<label[^>]* for="([^"]+)"', page))
    for field in re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|checkbox|'
                            r'radio|submit)")[^>]*>', page):
        field_id = re.search(r'id="([^"]+)"', field)
        assert field_id and (field_id.group(1) in labelled or "aria-label" in field), field


@pytest.mark.parametrize("url, data", WRITES)
def test_a_post_without_the_sessions_token_changes_nothing(url, data):
    world = _world("wcc_admin")
    for token in (None, "", "x" * 43):
        form = dict(data) if token is None else {**data, "csrf_token": token}
        assert world.client.post(url, data=form).status_code == 403
    assert _writes(world) == []


@pytest.mark.parametrize("url, data", WRITES)
def test_a_read_key_is_refused_every_change(url, data):
    world = _world("wcc_read")
    token = world.csrf("/console/companies")
    world.client.post(url, data={**data, "csrf_token": token})
    assert _writes(world) == []
    assert _sync(world).companies[COMPANY_ID]["name"] == EVIL


def test_the_setting_needs_the_admin_scope():
    world = _world("wcc_write")
    world.client.post("/console/companies/settings", data={
        "csrf_token": world.csrf("/console/companies"), "match_email_domain": "yes"})
    assert _writes(world) == [] and _sync(world).company_matching == {"match_email_domain": False}


@pytest.mark.parametrize("url", [
    f"/console/companies/{OTHER_STORES_COMPANY}", f"/console/companies/{OTHER_STORES_COMPANY}/edit",
    f"/console/customers?company_id={OTHER_STORES_COMPANY}"])
def test_another_stores_company_shows_nothing_of_it(url):
    world = _world("wcc_write")
    page = world.client.get(url).get_data(as_text=True)
    assert "Other store" not in page


def test_another_stores_company_cannot_be_changed_deleted_or_joined():
    world = _world("wcc_write")
    token = world.csrf("/console/companies")
    before = copy.deepcopy(_sync(world).companies)
    for url, data in ((f"/console/companies/{OTHER_STORES_COMPANY}/edit", {"name": "Mine"}),
                      (f"/console/companies/{OTHER_STORES_COMPANY}/delete",
                       {"understood": "yes"}),
                      ("/console/customers/c1/company", {"company_id": OTHER_STORES_COMPANY})):
        world.client.post(url, data={**data, "csrf_token": token})
    assert _sync(world).companies == before
    assert _sync(world).customer_companies["c1"] == COMPANY_ID


@pytest.mark.parametrize("value", ["<script>", "co_" + "A" * 24, "co_" + "a" * 25,
                                   '{"$ne": null}', "../../keys", "x" * 5000, "co_\r\nSet-Cookie"])
def test_hostile_company_ids_are_refused_before_any_service(value):
    world = _world("wcc_write")
    token = world.csrf("/console/companies")
    world.calls.clear()
    world.client.post("/console/customers/c1/company",
                      data={"csrf_token": token, "company_id": value})
    page = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert "The company was not changed" in page and "<script>" not in page.split(
        "</header>")[1].replace("<script src", "")
    listed = world.client.get("/console/customers", query_string={"company_id": value})
    assert listed.status_code == 200 and 'id="e-company_id"' in listed.get_data(as_text=True)
    shown = world.client.get("/console/companies/" + value.replace("/", "%2F"))
    assert shown.status_code in (400, 404)
    assert not [c for c in world.calls if c[1] in ("set_customer_company", "get_company",
                                                   "search_customers")]


def test_hostile_form_values_are_bounded_and_refused_by_the_field(hostile):
    world = _world("wcc_write")
    token = world.csrf("/console/companies")
    before = copy.deepcopy(_sync(world).companies)
    answer = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": "x" * 100_000, "domain": EVIL, "group": "../admin",
        "address.country": "x" * 5000, "custom.note": EVIL, "custom.__proto__": "1",
        "address.planet": "Mars"})
    assert answer.status_code == 400
    page = answer.get_data(as_text=True)
    assert "<script>alert" not in page
    assert 'id="e-name"' in page or 'id="e-group"' in page
    assert _sync(world).companies == before and world.called("create_company") == []


def test_a_search_is_bounded_and_shown_escaped():
    world = _world("wcc_read")
    page = world.client.get("/console/companies", query_string={
        "q": EVIL + "x" * 5000}).get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;xxx" in page
    [call] = world.called("list_companies")
    assert len(call[2][1]["q"]) == 200
    refused = world.client.get("/console/companies", query_string={"cursor": "<b>" * 2000})
    assert refused.status_code == 200 and "<b><b>" not in refused.get_data(as_text=True)
    assert "could not be loaded" in refused.get_data(as_text=True)
    assert len(world.called("list_companies")) == 1


@pytest.mark.parametrize("marker", ["yes", "0", "1" * 5000, EVIL, ""])
def test_only_the_forms_own_marker_lets_a_save_replace_the_custom_values(hostile, marker):
    world = _world("wcc_write")
    token = world.csrf("/console/companies")
    before = copy.deepcopy(_sync(world).companies[COMPANY_ID]["custom_fields"])
    answer = world.client.post(f"/console/companies/{COMPANY_ID}/edit", data={
        "csrf_token": token, "name": "Mine", "custom_fields_shown": marker, "custom.note": ""})
    assert answer.status_code == 303
    _, _, changes, _ = world.called("update_company")[-1][2]
    assert "custom_fields" not in changes
    assert _sync(world).companies[COMPANY_ID]["custom_fields"] == before


def test_a_create_refused_for_want_of_the_fields_keeps_a_bounded_form(hostile, monkeypatch):
    world = _world("wcc_write")
    token = world.csrf("/console/companies")
    monkeypatch.setattr(CustomerSync, "list_custom_fields", _unavailable)
    data = {"csrf_token": token, "name": "Mine", "custom_fields_shown": "1",
            **{f"custom.k{i}": "x" for i in range(3000)}}
    answer = world.client.post("/console/companies/new", data=data)
    assert answer.status_code == 502 and "No company was created" in answer.get_data(
        as_text=True)
    assert world.called("create_company") == []
    kept = company_views._as_typed(MultiDict(data))["custom"]
    assert len(kept) == company_views.MAX_CUSTOM_INPUTS


def _unavailable(self, store):
    raise Unavailable("customer_sync busy")
