"""The console's custom field forms attacked, in front of customer_sync's real custom fields
and storage (mongomock): posts without the session's CSRF token or from a read key, hostile
labels, options and values (markup, a NUL, a megabyte, keys the store never defined, a flood
of fields), another store's customer. Each is refused (naming the field where there is one),
nothing is stored, and whatever is shown back is escaped."""
from __future__ import annotations

import pytest

from tests.security.test_console_sessions import STORE, Deployment, csrf_of, sign_in

EVIL = '"><script>alert(1)</script>'
CUSTOMER = "/console/customers/member"


@pytest.fixture
def deployment():
    deployment = Deployment()
    app = deployment.customer_sync.app
    customers = deployment.customer_sync.storage.customers
    for customer_id, store_id in (("member", STORE), ("foreign", "other-shop")):
        customers.insert({"_id": customer_id, "store_id": store_id, "status": "active",
                          "registered": True, "email": f"{customer_id}@example.com",
                          "first_name": "Kim", "last_name": "Weber"}, [])
    app.custom_fields.create(STORE, {"key": "tier", "label": EVIL, "type": "choice",
                                     "options": ["gold", EVIL]}, "setup")
    app.custom_fields.create(STORE, {"key": "visits", "label": "Visits", "type": "number",
                                     "max": 10}, "setup")
    app.custom_fields.set_values(STORE, "member", {"tier": EVIL, "visits": 3}, "setup")
    return deployment


def _browser(deployment, *scopes):
    browser = deployment.a.browser()
    sign_in(browser, deployment.key(*scopes)["api_key"])
    return browser


def _definitions(deployment) -> list:
    return [{k: d.get(k) for k in ("key", "label", "type", "options", "max")}
            for d in deployment.customer_sync.storage.custom_fields.all(STORE)]


def _values(deployment, customer_id: str = "member") -> dict:
    return deployment.customer_sync.storage.customers.collection.find_one(
        {"_id": customer_id}).get("custom_fields")


def test_labels_options_and_values_are_escaped_on_every_page(deployment):
    browser = _browser(deployment, "read", "write")
    for url in ("/console/custom-fields", "/console/custom-fields/tier", CUSTOMER):
        html = browser.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and '"><script>' not in html, url
        assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html, url


def test_forms_without_the_sessions_token_change_nothing(deployment):
    browser = _browser(deployment, "read", "write")
    before = (_definitions(deployment), _values(deployment))
    for token in ("", "x" * 43):
        for url, data in (
                ("/console/custom-fields/create", {"key": "new", "label": "N", "type": "text"}),
                ("/console/custom-fields/tier/edit", {"label": "Changed", "type": "choice",
                                                      "options": "gold"}),
                ("/console/custom-fields/tier/delete", {"understood": "yes"}),
                (CUSTOMER + "/custom-fields", {"custom.tier": "gold", "custom.visits": "1"})):
            answer = browser.post(url, data={**data, "csrf_token": token})
            assert answer.status_code == 403, (url, token)
    assert (_definitions(deployment), _values(deployment)) == before


def test_a_read_key_sees_no_forms_and_its_posts_are_refused_by_the_api(deployment):
    reader = _browser(deployment, "read")
    before = (_definitions(deployment), _values(deployment))
    token = csrf_of(reader, "/console/custom-fields")
    for url in ("/console/custom-fields", "/console/custom-fields/tier", CUSTOMER):
        html = reader.get(url).get_data(as_text=True)
        for form in ("field-create", "field-edit", "field-delete", "custom-fields-form"):
            assert f'id="{form}"' not in html, (url, form)
    created = reader.post("/console/custom-fields/create", data={
        "csrf_token": token, "key": "new", "label": "N", "type": "text"})
    assert created.status_code == 403 and "write" in created.get_data(as_text=True)
    reader.post("/console/custom-fields/tier/edit", data={
        "csrf_token": token, "label": "Changed", "type": "choice", "options": "gold"})
    reader.post("/console/custom-fields/tier/delete", data={
        "csrf_token": token, "understood": "yes"})
    saved = reader.post(CUSTOMER + "/custom-fields", data={
        "csrf_token": token, "custom.tier": "gold", "custom.visits": "1"})
    assert saved.status_code == 403
    assert (_definitions(deployment), _values(deployment)) == before


@pytest.mark.parametrize("posted, field", [
    ({"custom.visits": "11"}, "custom_fields.visits"),
    ({"custom.visits": "1e400"}, "custom_fields.visits"),
    ({"custom.visits": "NaN"}, "custom_fields.visits"),
    ({"custom.tier": "platinum"}, "custom_fields.tier"),
    ({"custom.tier": "gold\x00"}, "custom_fields.tier"),
    ({"custom.ghost": "x"}, "custom_fields.ghost"),
    ({"custom.$where": "1"}, "custom_fields.$where"),
    ({"custom.a.b": "1"}, "custom_fields.a.b"),
])
def test_hostile_values_are_refused_beside_the_field_and_nothing_is_stored(deployment, posted,
                                                                           field):
    browser = _browser(deployment, "read", "write")
    before = _values(deployment)
    answer = browser.post(CUSTOMER + "/custom-fields", data={
        "csrf_token": csrf_of(browser, CUSTOMER), "custom.tier": "gold", "custom.visits": "2",
        **posted})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html[:400]
    assert field in html and "<script>alert" not in html
    assert _values(deployment) == before


def test_a_megabyte_or_a_flood_of_values_is_refused_and_nothing_is_stored(deployment):
    browser = _browser(deployment, "read", "write")
    before = _values(deployment)
    token = csrf_of(browser, CUSTOMER)
    huge = browser.post(CUSTOMER + "/custom-fields", data={
        "csrf_token": token, "custom.tier": "gold", "custom.visits": "x" * (2 << 20)})
    assert huge.status_code == 413
    flood = browser.post(CUSTOMER + "/custom-fields", data={
        "csrf_token": token, **{f"custom.k{n}": "1" for n in range(500)}})
    assert flood.status_code == 303
    assert "at most 100 values" in browser.get(CUSTOMER).get_data(as_text=True)
    assert _values(deployment) == before


def test_another_stores_customer_is_not_found_and_keeps_its_values(deployment):
    browser = _browser(deployment, "read", "write")
    answer = browser.post("/console/customers/foreign/custom-fields", data={
        "csrf_token": csrf_of(browser, CUSTOMER), "custom.tier": "gold"})
    assert answer.status_code == 404
    assert _values(deployment, "foreign") is None


@pytest.mark.parametrize("posted, field", [
    ({"key": "Bad Key"}, "key"),
    ({"key": "k" * 41}, "key"),
    ({"label": ""}, "label"),
    ({"label": EVIL * 20}, "label"),
    ({"type": "colour"}, "type"),
    ({"type": "choice", "options": ""}, "options"),
    ({"type": "choice", "options": "a\na"}, "options"),
    ({"type": "choice", "options": "\n".join(f"o{n}" for n in range(101))}, "options"),
    ({"type": "choice", "options": "x" * 101}, "options"),
    ({"type": "number", "min": "5", "max": "1"}, "min"),
    ({"type": "number", "min": "lots"}, "min"),
    ({"type": "text", "max_length": "2001"}, "max_length"),
    ({"type": "text", "max_length": "-1"}, "max_length"),
])
def test_hostile_definitions_are_refused_beside_the_field_and_nothing_is_stored(deployment,
                                                                                posted, field):
    browser = _browser(deployment, "read", "write")
    before = _definitions(deployment)
    answer = browser.post("/console/custom-fields/create", data={
        "csrf_token": csrf_of(browser, "/console/custom-fields"), "key": "fresh",
        "label": "Fresh", "type": "text", **posted})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400, html[:400]
    assert f'id="e-{field}"' in html or f"{field}." in html, field
    assert "<script>alert" not in html
    assert _definitions(deployment) == before


def test_a_change_or_delete_of_an_unknown_or_hostile_key_is_refused(deployment):
    browser = _browser(deployment, "read", "write")
    before = _definitions(deployment)
    token = csrf_of(browser, "/console/custom-fields")
    for key in ("nothing", "..%2Ftier", "%3Cscript%3E", "k" * 300):
        edited = browser.post(f"/console/custom-fields/{key}/edit", data={
            "csrf_token": token, "label": "X", "type": "text"})
        assert edited.status_code in (400, 404), (key, edited.status_code)
        assert "<script>" not in edited.get_data(as_text=True)
        deleted = browser.post(f"/console/custom-fields/{key}/delete", data={
            "csrf_token": token, "understood": "yes"})
        assert deleted.status_code in (303, 404), (key, deleted.status_code)
    assert _definitions(deployment) == before
