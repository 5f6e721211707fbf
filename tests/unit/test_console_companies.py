"""The console's company pages (the list, a company's page, its forms), the customer page's
Company card, the customer list's company filter and column, and the email-domain setting,
against the gateway's real pipeline with the stand-in services of test_console."""
from __future__ import annotations

import re

import pytest

from services.gateway.console.company_views import form_values, read_form, request_body
from shared.errors import Unavailable
from tests.unit.test_console import (COMPANY_ID, OTHER_STORES_COMPANY, CustomerSync,
                                     Segmentation, World)

COMPANY_FIELDS = [{"key": "tier", "label": "Account tier", "type": "text", "required": False,
                   "applies_to": "company"},
                  {"key": "seats", "label": "Seats", "type": "number", "required": False,
                   "applies_to": "company"},
                  {"key": "vip", "label": "VIP", "type": "boolean", "required": False}]


@pytest.fixture
def world(monkeypatch) -> World:
    monkeypatch.setattr(CustomerSync, "list_custom_fields", lambda self, store: COMPANY_FIELDS)
    world = World()
    world.login("wcc_write")
    return world


def customer_sync(world: World) -> CustomerSync:
    return world.backends.proxies["customer_sync"].service


def html(world: World, url: str) -> str:
    answer = world.client.get(url)
    assert answer.status_code == 200, (url, answer.status_code)
    return answer.get_data(as_text=True)


def flashes(page: str) -> str:
    return " ".join(re.findall(r'<p class="flash flash-\w+">(.*?)</p>', page, re.S))


# -- the list ---------------------------------------------------------------------------------

def test_the_list_shows_each_companys_members_spend_orders_and_last_order(world):
    page = html(world, "/console/companies")
    row = re.search(r'<tr>\s*<td><a href="/console/companies/' + COMPANY_ID + r'">(.*?)</tr>',
                    page, re.S).group(1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Acme" in row and "acme.example" in row
    assert ">1<" in row and ">2<" in row and "123.45 EUR" in row and "2026-02-01" in row
    assert "Other store" not in page
    assert 'href="/console/companies/new"' in page
    nav = page.split("</nav>")[0]
    assert 'href="/console/companies" aria-current="page"' in nav


def test_the_list_searches_and_pages(world):
    for name in ("Beta", "Gamma"):
        customer_sync(world).create_company("shop", {"name": name}, "desk")
    html(world, "/console/companies?q=" + "x" * 300)
    assert world.called("list_companies")[-1][2][1] == {"q": "x" * 200}
    page = html(world, "/console/companies?q=a")
    assert 'id="page-next"' not in page
    customer_sync(world).companies.update({
        f"co_{i:024x}": {**customer_sync(world).companies[COMPANY_ID],
                         "company_id": f"co_{i:024x}", "name": f"Z{i:03}"}
        for i in range(100, 160)})
    page = html(world, "/console/companies")
    assert 'href="/console/companies?cursor=50&amp;back=~" rel="next"' in page
    second = html(world, "/console/companies?cursor=50")
    assert "Z155" in second and 'id="page-first"' in second


# -- a company's page -------------------------------------------------------------------------

def test_the_company_page_shows_details_address_fields_stats_terms_and_members(world,
                                                                            monkeypatch):
    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    page = html(world, f"/console/companies/{COMPANY_ID}")
    assert "<script>alert" not in page
    assert 'id="company-vat">DE123456789<' in page and 'id="company-domain">acme.example<' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Berlin" in page and "10115" in page
    assert re.search(r'<dt>Account tier</dt><dd id="custom-tier">&lt;script', page)
    assert 'id="stat-spent">123.45 EUR<' in page
    assert 'id="terms-discount">12.5 %<' in page and 'id="terms-payment">30 days<' in page
    assert 'id="terms-shipping">500.00 EUR<' in page
    members = page.split('id="member-table"')[1]
    assert 'href="/console/customers/c1"' in members
    assert world.called("search_customers")[-1][2][1] == {"company_id": COMPANY_ID}
    assert f'href="/console/customers?company_id={COMPANY_ID}"' in page
    assert 'id="company-delete"' in page and f'/console/companies/{COMPANY_ID}/edit' in page


def test_another_stores_company_and_a_malformed_id_are_not_shown(world):
    for url in (f"/console/companies/{OTHER_STORES_COMPANY}",
                f"/console/companies/{OTHER_STORES_COMPANY}/edit"):
        answer = world.client.get(url)
        assert answer.status_code == 404 and "Other store" not in answer.get_data(as_text=True)
    assert world.client.get("/console/companies/co_%3Cb%3E").status_code == 400


# -- the forms ------------------------------------------------------------------------------

def test_a_company_is_created_from_the_form_and_shown(world):
    token = world.csrf("/console/companies/new")
    form = html(world, "/console/companies/new")
    assert 'id="co-custom-tier"' in form and 'id="co-custom-vip"' not in form  # a customer's
    assert 'name="custom_fields_shown" value="1"' in form
    answer = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": " Beta GmbH ", "domain": "Beta.Example", "vat_id": "",
        "group": "wholesale", "address.city": "Köln", "address.country": "DE",
        "custom_fields_shown": "1", "custom.tier": "gold", "custom.seats": "12"})
    assert answer.status_code == 303
    store, data, actor = world.called("create_company")[-1][2]
    assert data == {"name": "Beta GmbH", "domain": "beta.example", "group": "wholesale",
                    "address": {"city": "Köln", "country": "DE"},
                    "custom_fields": {"tier": "gold", "seats": 12}}
    assert actor == "api-key:write"
    page = world.client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Created the company Beta GmbH" in flashes(page) and "Köln" in page


def test_a_refusal_is_shown_next_to_the_field_it_names_and_nothing_is_stored(world):
    token = world.csrf("/console/companies/new")
    before = dict(customer_sync(world).companies)
    taken = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": "Copy", "domain": "acme.example"})
    assert taken.status_code == 409
    page = taken.get_data(as_text=True)
    assert re.search(r'name="domain" value="acme.example"[^>]*aria-invalid="true" '
                     r'aria-describedby="e-domain">\s*<p class="field-error" id="e-domain">taken',
                     page)
    assert 'value="Copy"' in page
    unknown_group = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": "X", "group": "nope"})
    assert unknown_group.status_code == 400
    assert 'id="e-group">no such group' in unknown_group.get_data(as_text=True)
    too_long = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": "X", "address.city": "y" * 300})
    assert too_long.status_code == 400
    assert 'id="e-address-city"' in too_long.get_data(as_text=True)
    assert customer_sync(world).companies == before


def test_the_edit_form_round_trips_and_clears_what_is_emptied(world):
    form = html(world, f"/console/companies/{COMPANY_ID}/edit")
    assert 'value="acme.example"' in form and '<option value="wholesale" selected>' in form
    assert "<script>alert" not in form
    token = world.csrf("/console/companies")
    answer = world.client.post(f"/console/companies/{COMPANY_ID}/edit", data={
        "csrf_token": token, "name": "Acme AG", "domain": "", "vat_id": "DE123456789",
        "group": "", "address.city": "Berlin", "custom_fields_shown": "1", "custom.tier": ""})
    assert answer.status_code == 303
    _, company_id, changes, _ = world.called("update_company")[-1][2]
    assert company_id == COMPANY_ID
    assert changes == {"name": "Acme AG", "domain": None, "vat_id": "DE123456789",
                       "group": None, "address": {"address_1": "", "address_2": "",
                                                  "city": "Berlin", "state": "",
                                                  "postcode": "", "country": ""},
                       "custom_fields": {}}
    vat = world.client.post(f"/console/companies/{COMPANY_ID}/edit", data={
        "csrf_token": token, "name": "Acme AG", "vat_id": "1"})
    assert vat.status_code == 400 and 'id="e-vat_id"' in vat.get_data(as_text=True)


def _fields_unavailable(self, store):
    raise Unavailable("customer_sync busy")


def test_a_save_while_the_fields_cannot_be_read_saves_nothing(world, monkeypatch):
    before = dict(customer_sync(world).companies[COMPANY_ID]["custom_fields"])
    assert before
    token = world.csrf("/console/companies")
    monkeypatch.setattr(CustomerSync, "list_custom_fields", _fields_unavailable)
    answer = world.client.post(f"/console/companies/{COMPANY_ID}/edit", data={
        "csrf_token": token, "name": "Acme AG", "custom_fields_shown": "1",
        "custom.tier": before.get("tier", "")})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 502 and "Nothing was saved" in page
    assert 'value="Acme AG"' in page and "custom_fields_shown" not in page
    assert world.called("update_company") == []
    assert customer_sync(world).companies[COMPANY_ID]["custom_fields"] == before
    created = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": "Beta", "custom_fields_shown": "1", "custom.tier": "gold"})
    assert created.status_code == 502 and "No company was created" in created.get_data(
        as_text=True)
    assert world.called("create_company") == []


def test_a_new_companys_typed_custom_values_are_shown_again_when_its_save_failed(world,
                                                                                  monkeypatch):
    answers = [_fields_unavailable]  # the save's read fails, the form's read then works

    def flaky(self, store):
        return answers.pop(0)(self, store) if answers else COMPANY_FIELDS
    monkeypatch.setattr(CustomerSync, "list_custom_fields", flaky)
    token = world.csrf("/console/companies")
    answer = world.client.post("/console/companies/new", data={
        "csrf_token": token, "name": "Beta", "custom_fields_shown": "1", "custom.tier": "gold"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 502 and world.called("create_company") == []
    assert re.search(r'id="co-custom-tier" name="custom.tier" value="gold"', page)


def test_a_form_shown_without_the_custom_inputs_leaves_the_values_as_they_are(world,
                                                                             monkeypatch):
    before = dict(customer_sync(world).companies[COMPANY_ID]["custom_fields"])
    monkeypatch.setattr(CustomerSync, "list_custom_fields", _fields_unavailable)
    form = html(world, f"/console/companies/{COMPANY_ID}/edit")
    assert "co-custom-tier" not in form and "custom_fields_shown" not in form
    monkeypatch.setattr(CustomerSync, "list_custom_fields", lambda self, store: COMPANY_FIELDS)
    token = world.csrf("/console/companies")
    answer = world.client.post(f"/console/companies/{COMPANY_ID}/edit", data={
        "csrf_token": token, "name": "Acme AG"})
    assert answer.status_code == 303
    _, _, changes, _ = world.called("update_company")[-1][2]
    assert changes["name"] == "Acme AG" and "custom_fields" not in changes
    assert customer_sync(world).companies[COMPANY_ID]["custom_fields"] == before
    refused = world.client.post(f"/console/companies/{COMPANY_ID}/edit", data={
        "csrf_token": token, "name": "Acme AG", "vat_id": "1"})
    assert refused.status_code == 400  # shown again as it was sent: still no custom inputs
    assert "custom_fields_shown" not in refused.get_data(as_text=True)


def test_a_company_is_deleted_only_once_confirmed(world):
    token = world.csrf("/console/companies")
    world.client.post(f"/console/companies/{COMPANY_ID}/delete", data={"csrf_token": token})
    assert world.called("delete_company") == []
    customer_sync(world).customer_companies["c1"] = COMPANY_ID
    answer = world.client.post(f"/console/companies/{COMPANY_ID}/delete",
                               data={"csrf_token": token, "understood": "yes"})
    assert answer.headers["Location"].endswith("/console/companies")
    assert "1 member now belong to none" in flashes(html(world, "/console/companies"))
    assert customer_sync(world).customer_companies["c1"] is None


def test_a_deletion_that_stopped_early_is_not_reported_as_done(world, monkeypatch):
    monkeypatch.setattr(CustomerSync, "delete_company", lambda self, store, company_id, actor: {
        "company_id": company_id, "deleted": False, "finishing": True, "members_released": 1})
    token = world.csrf("/console/companies")
    answer = world.client.post(f"/console/companies/{COMPANY_ID}/delete",
                               data={"csrf_token": token, "understood": "yes"})
    assert answer.headers["Location"].endswith("/console/companies")
    shown = flashes(html(world, "/console/companies"))
    assert "being deleted; 1 member released so far" in shown
    assert "the rest of its members are released in the background" in shown
    assert "Deleted the company" not in shown


def test_the_form_helpers_read_and_shape_values():
    values = form_values(customer_sync_company())
    assert values["address"]["city"] == "Berlin" and values["custom"] == {"seats": "3",
                                                                          "vip": "true"}
    read = read_form({"name": " A ", "domain": " X.EXAMPLE ", "custom.seats": "x" * 900,
                      "custom_fields_shown": "1"}, COMPANY_FIELDS)
    assert read["domain"] == "x.example" and len(read["custom"]["seats"]) == 500
    body = request_body({**read, "custom": {"seats": "2.5", "vip": "true", "tier": ""}},
                        COMPANY_FIELDS, is_new=True)
    assert body == {"name": "A", "domain": "x.example",
                    "custom_fields": {"seats": 2.5, "vip": True}}


def customer_sync_company() -> dict:
    return {"name": "A", "address": {"city": "Berlin"}, "custom_fields": {"seats": 3,
                                                                        "vip": True}}


# -- the setting ------------------------------------------------------------------------------

def test_the_email_domain_setting_is_shown_to_all_and_changed_by_an_admin(world):
    page = html(world, "/console/companies")
    assert 'id="matching-state">Off' in page and 'id="matching-form"' not in page
    admin = World()
    admin.login("wcc_admin")
    token = admin.csrf("/console/companies")
    admin.client.post("/console/companies/settings", data={"csrf_token": token,
                                                           "match_email_domain": "yes"})
    assert admin.called("set_company_matching")[-1][2][1] == {"match_email_domain": True}
    page = html(admin, "/console/companies")
    assert 'id="matching-state">On' in page and "now join the company" in flashes(page)
    admin.client.post("/console/companies/settings", data={"csrf_token": token})
    assert admin.called("set_company_matching")[-1][2][1] == {"match_email_domain": False}


# -- the customer page and the list ---------------------------------------------------------

def test_the_customer_pages_company_card_joins_and_removes(world):
    page = html(world, "/console/customers/c1")
    card = page.split('id="company"')[1].split("</section>")[0]
    assert 'id="company-none"' in card and f'<option value="{COMPANY_ID}">' in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Acme (acme.example)" in card
    assert world.called("list_companies")[-1][2][2] == {"size": 100, "cursor": None}
    assert world.called("company_stats") == []  # a choice needs no stats
    token = world.csrf("/console/customers/c1")
    joined = world.client.post("/console/customers/c1/company",
                               data={"csrf_token": token, "company_id": COMPANY_ID})
    assert joined.headers["Location"].endswith("/console/customers/c1#company")
    assert world.called("set_customer_company")[-1][2] == ("shop", "c1", COMPANY_ID,
                                                           "api-key:write")
    page = html(world, "/console/customers/c1")
    card = page.split('id="company"')[1].split("</section>")[0]
    assert f'href="/console/companies/{COMPANY_ID}"' in card and 'id="company-remove"' in card
    assert "Joined the company." in flashes(page)
    world.client.post("/console/customers/c1/company",
                      data={"csrf_token": token, "company_id": ""})
    assert world.called("set_customer_company")[-1][2][2] is None
    assert "Removed from the company." in flashes(html(world, "/console/customers/c1"))


def test_the_card_says_why_a_company_could_not_be_joined(world):
    token = world.csrf("/console/customers/c1")
    world.client.post("/console/customers/c1/company",
                      data={"csrf_token": token, "company_id": OTHER_STORES_COMPANY})
    page = html(world, "/console/customers/c1")
    assert "The company was not changed" in flashes(page) and "company_id" in flashes(page)
    assert customer_sync(world).customer_companies.get("c1") is None


def test_the_customer_list_filters_by_company_and_shows_its_column(world, monkeypatch):
    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    page = html(world, f"/console/customers?company_id={COMPANY_ID}")
    assert world.called("search_customers")[-1][2][1]["company_id"] == COMPANY_ID
    assert f'<option value="{COMPANY_ID}" selected>' in page
    row = page.split('id="customer-table"')[1]
    assert f'<a href="/console/companies/{COMPANY_ID}">&lt;script&gt;' in row
    searches = len(world.called("search_customers"))
    bad = html(world, "/console/customers?company_id=%3Cscript%3E")
    assert 'id="e-company_id">choose a company' in bad and "<script>alert" not in bad
    assert world.called("search_customers")[searches:] == []


# -- scopes -----------------------------------------------------------------------------------

def test_a_read_key_sees_the_pages_and_no_write_form(monkeypatch):
    monkeypatch.setattr(CustomerSync, "list_custom_fields", lambda self, store: COMPANY_FIELDS)
    world = World()
    world.login("wcc_read")
    listing = html(world, "/console/companies")
    assert "company-new" not in listing and "matching-form" not in listing
    page = html(world, f"/console/companies/{COMPANY_ID}")
    assert "company-delete" not in page and "company-edit" not in page
    form = html(world, "/console/companies/new")
    assert 'id="company-read-only"' in form and "company-form" not in form
    customer = html(world, "/console/customers/c1")
    assert 'id="company-form"' not in customer and 'id="company-remove"' not in customer
    token = world.csrf("/console/companies")
    refused = world.client.post("/console/companies/new", data={"csrf_token": token,
                                                                 "name": "Mine"})
    assert refused.status_code == 403
    world.client.post("/console/customers/c1/company",
                      data={"csrf_token": token, "company_id": COMPANY_ID})
    world.client.post(f"/console/companies/{COMPANY_ID}/delete",
                      data={"csrf_token": token, "understood": "yes"})
    assert world.called("create_company") == world.called("set_customer_company") == []
    assert world.called("delete_company") == []
