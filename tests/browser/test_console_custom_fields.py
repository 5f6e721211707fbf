"""The console's custom fields in a real headless Chromium against the running system: two
fields defined (one with markup in its label), a customer's values set with a refusal shown
beside its field, a field changed and then deleted; every page accessible (axe-core, at
desktop and phone widths)."""
from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.accessibility import assert_accessible
from tests.browser.test_console import _flash, _key
from tests.browser.test_console_pages import _fill, _open, _sign_in, _wait
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures


def _define(browser, key: str, label: str, kind: str, **limits) -> None:
    _fill(browser, "new-key", key)
    _fill(browser, "new-label", label)
    Select(browser.find_element(By.ID, "new-type")).select_by_value(kind)
    for name, text in limits.items():
        _fill(browser, f"new-{name}", text)
    browser.find_element(By.ID, "field-create-submit").click()


def test_staff_define_fields_set_a_customers_values_and_delete_a_field(browser, screenshot,
                                                                       system):
    base = system.gateway_url
    _, customer_id = system.shop_customer(orders=0)
    _sign_in(browser, base, _key(system, "read", "write"))
    browser.find_element(By.CSS_SELECTOR, 'nav.main-nav a[href="/console/custom-fields"]').click()
    _wait(browser, "#field-create")

    _define(browser, "tier", "<b>Tier</b>", "choice", options="gold\nsilver")
    _flash(browser, "Defined the field <b>Tier</b> (tier)")  # shown as text, never markup
    _define(browser, "visits", "Visits", "number", min="0", max="10")
    _flash(browser, "Defined the field Visits (visits)")
    # A refusal is shown beside the field it names, with what was typed kept.
    _define(browser, "visits", "Again", "text")
    assert "taken" in _wait(browser, "#e-key").text
    assert browser.find_element(By.ID, "new-label").get_attribute("value") == "Again"
    table = browser.find_element(By.ID, "field-table")
    assert "<b>Tier</b>" in table.text and "gold, silver" in table.text
    assert "0 to 10" in table.text
    screenshot("custom-fields")
    assert_accessible(browser, "custom fields")

    browser.get(f"{base}/console/customers/{customer_id}")
    browser.find_element(By.CSS_SELECTOR, "#custom-fields-edit summary").click()
    Select(_wait(browser, "#cf-tier")).select_by_value("gold")
    _fill(browser, "cf-visits", "8")
    # The field's bound changes meanwhile: the API refuses the value, by its field.
    system.client("write").put("/custom-fields/visits", json={"max": 5})
    browser.find_element(By.ID, "custom-fields-save").click()
    refusal = _wait(browser, "#e-custom_fields-visits")
    assert refusal.is_displayed() and "5" in refusal.text
    assert browser.find_element(By.ID, "cf-visits").get_attribute("value") == "8"
    assert system.rpc.customer_sync.get_customer(STORE, customer_id)["custom_fields"] == {}
    screenshot("custom-fields-customer-form")
    assert_accessible(browser, "custom fields form refused")

    _fill(browser, "cf-visits", "4")
    browser.find_element(By.ID, "custom-fields-save").click()
    _flash(browser, "Saved the custom fields.")
    assert _wait(browser, "#custom-visits").text == "4"
    assert system.rpc.customer_sync.get_customer(STORE, customer_id)["custom_fields"] == {
        "tier": "gold", "visits": 4}

    _open(browser, base + "/console/custom-fields/visits", "#field-edit")
    browser.find_element(By.ID, "field-delete-submit").click()
    _flash(browser, "Nothing was deleted")
    browser.find_element(By.ID, "delete-understood").click()
    browser.find_element(By.ID, "field-delete-submit").click()
    _flash(browser, "Deleted the field visits: its value was taken off 1 records.")
    assert "visits" not in browser.find_element(By.ID, "field-table").text
    assert system.rpc.customer_sync.get_customer(STORE, customer_id)["custom_fields"] == {
        "tier": "gold"}
