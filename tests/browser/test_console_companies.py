"""Companies in a real browser, against the gateway's real pipeline and console served over
HTTP with the stand-in services of tests/unit/test_console (customer_sync's and segmentation's
company RPCs as the companies contract has them, until the services themselves answer them):
a company created with a refusal shown by its field first, its page with its group's terms and
members, a customer joined to it from the customer page's Company card and removed again;
every page accessible (axe-core, at desktop and phone widths)."""
from __future__ import annotations

import threading

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from werkzeug.exceptions import NotFound
from werkzeug.serving import make_server

from tests.browser.accessibility import assert_accessible
from tests.browser.test_console_pages import _sign_in, _wait
from tests.unit.test_console import COMPANY_ID, CustomerSync, Segmentation, World

ADDRESS = {"address_1": "Friedrichstraße 1", "address_2": "", "city": "Berlin", "state": "",
           "postcode": "10117", "country": "DE"}
FIELDS = [{"key": "account_manager", "label": "Account manager", "type": "text",
           "required": False, "applies_to": "company"}]


@pytest.fixture
def console(monkeypatch):
    """The console on a local port, its stand-in store holding one company, Acme GmbH."""
    monkeypatch.setattr(CustomerSync, "list_custom_fields", lambda self, store: FIELDS)
    monkeypatch.setattr(Segmentation, "list_groups", lambda self, store: [
        {"slug": "wholesale", "name": "Wholesale", "description": "", "customers": 1,
         "discount_percent": "12.5", "free_shipping_threshold": 50000,
         "payment_terms_days": 30}])
    world = World()
    sync = world.backends.proxies["customer_sync"].service
    sync.companies[COMPANY_ID].update(
        name="Acme GmbH", address=dict(ADDRESS), custom_fields={"account_manager": "Ada"},
        created_by="api-key:write", updated_by="api-key:write")
    def app(environ, start_response):
        # Only the console's paths reach it, as in the deployment: the browser's own
        # /favicon.ico would otherwise be answered with a fresh session cookie.
        if environ["PATH_INFO"].startswith("/console"):
            return world.wsgi(environ, start_response)
        return NotFound()(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield world, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def test_a_company_is_made_shown_and_a_customer_joins_and_leaves_it(browser, screenshot,
                                                                    console, monkeypatch):
    world, base = console
    sync = world.backends.proxies["customer_sync"].service
    _sign_in(browser, base, "wcc_write")

    browser.find_element(By.CSS_SELECTOR, 'nav.main-nav a[href="/console/companies"]').click()
    table = _wait(browser, "#company-table")
    assert "Acme GmbH" in table.text and "123.45 EUR" in table.text
    screenshot("companies")
    assert_accessible(browser, "companies")

    # A new company whose domain is taken: refused by the field, what was typed kept.
    browser.find_element(By.ID, "company-new").click()
    _wait(browser, "#co-name").send_keys("Beta KG")
    browser.find_element(By.ID, "co-domain").send_keys("acme.example")
    Select(browser.find_element(By.ID, "co-group")).select_by_value("wholesale")
    browser.find_element(By.ID, "co-city").send_keys("Köln")
    browser.find_element(By.ID, "company-save").click()
    assert "taken" in _wait(browser, "#e-domain").text
    assert browser.find_element(By.ID, "co-name").get_attribute("value") == "Beta KG"
    assert browser.find_element(By.ID, "co-domain").get_attribute("aria-invalid") == "true"
    assert len(sync.companies) == 2  # nothing stored
    assert_accessible(browser, "company form refused")
    domain = browser.find_element(By.ID, "co-domain")
    domain.clear()
    domain.send_keys("beta.example")
    browser.find_element(By.ID, "co-custom-account_manager").send_keys("Bo")
    browser.find_element(By.ID, "company-save").click()
    assert "Created the company Beta KG" in _wait(browser, ".flash-success").text
    # The form's marker rides along, so the custom value typed is saved with the company.
    assert [c["custom_fields"] for c in sync.companies.values()
            if c["name"] == "Beta KG"] == [{"account_manager": "Bo"}]
    assert "Köln" in browser.find_element(By.ID, "company-address").text
    assert "30 days" in browser.find_element(By.ID, "terms-payment").text

    # The customer page's Company card: join Acme, see it there and among its members.
    browser.get(base + "/console/customers/c1")
    card = _wait(browser, "#company")
    assert "Belongs to no company" in card.text
    Select(browser.find_element(By.ID, "company-choice")).select_by_value(COMPANY_ID)
    browser.find_element(By.CSS_SELECTOR, "#company-form button").click()
    assert "Joined the company." in _wait(browser, ".flash-success").text
    assert browser.find_element(By.CSS_SELECTOR, "#company-name a").text == "Acme GmbH"
    browser.execute_script("document.getElementById('company').scrollIntoView()")
    browser.save_screenshot("/work/notes/companies-customer-card.png")
    screenshot("customer-company-card")
    assert_accessible(browser, "customer with a company")

    monkeypatch.setattr(Segmentation, "row_company_id", COMPANY_ID)
    browser.find_element(By.CSS_SELECTOR, "#company-name a").click()
    members = _wait(browser, "#member-table")
    assert "Lovelace" in members.text
    assert "12.5 %" in browser.find_element(By.ID, "terms-discount").text
    assert "Ada" in browser.find_element(By.ID, "custom-account_manager").text
    browser.save_screenshot("/work/notes/companies-company-page.png")
    screenshot("company")
    assert_accessible(browser, "company")

    # Back on the customer page, the customer leaves the company.
    members.find_element(By.CSS_SELECTOR, "a").click()
    _wait(browser, "#company-remove button").click()
    assert "Removed from the company." in _wait(browser, ".flash-success").text
    assert sync.customer_companies["c1"] is None
    assert browser.find_element(By.ID, "company-none").is_displayed()
