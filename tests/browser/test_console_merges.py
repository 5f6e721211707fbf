"""Merging by hand in a real browser against the running system: a guest and a registered
record of one person merged from their duplicate group, the merge shown with the shop account
that remains, then undone from the Merges page; every page accessible (axe-core, at desktop
and phone widths)."""
from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.browser.accessibility import assert_accessible
from tests.browser.test_console import _key
from tests.browser.test_console_duplicates import kim_registered_and_as_a_guest
from tests.browser.test_console_pages import _sign_in, _wait
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures


def test_a_guest_is_merged_into_the_registered_record_and_the_merge_undone(
        browser, screenshot, system):
    base = system.gateway_url
    kim_registered_and_as_a_guest(system)

    _sign_in(browser, base, _key(system, "read", "write"))
    browser.get(base + "/console/duplicates")
    _wait(browser, ".duplicate-group .merge-link").click()

    form = _wait(browser, "#merge-form")
    assert "<b>Weber</b>" in browser.find_element(By.ID, "merge-records").text
    primary = form.find_element(By.CSS_SELECTOR, "input[name=primary_id]:checked")
    primary_label = form.find_element(By.CSS_SELECTOR, f"label[for={primary.get_attribute('id')}]")
    assert "registered" in primary_label.text  # the registered record stays by default
    guest = next(r for r in form.find_elements(By.CSS_SELECTOR, "input[name=primary_id]")
                 if not r.is_selected())
    guest_id = guest.get_attribute("value")
    screenshot("merge-form")
    assert_accessible(browser, "merge form")

    # Submitting without the box is refused on the form, naming it; nothing is merged.
    form.find_element(By.ID, "take-email-2").click()
    browser.find_element(By.ID, "merge-submit").click()
    _wait(browser, "#e-understood")
    assert system.rpc.customer_sync.list_merges(STORE)["items"] == []
    assert browser.find_element(By.ID, "take-email-2").is_selected()  # the choice survives
    assert_accessible(browser, "merge form refused")

    browser.find_element(By.ID, "merge-understood").click()
    browser.find_element(By.ID, "merge-submit").click()
    shop_accounts = _wait(browser, "#shop-accounts")
    assert "WooCommerce has no merge" in shop_accounts.text
    assert "WooCommerce customer #9001" in shop_accounts.text
    assert "Orders: 1 (9101)" in browser.find_element(By.ID, "moved").text
    assert browser.find_element(By.ID, "merge-state").text == "Merged"
    screenshot("merge-done")
    assert_accessible(browser, "merge done")

    browser.find_element(By.CSS_SELECTOR, 'nav.main-nav a[href="/console/merges"]').click()
    table = _wait(browser, "#merge-table")
    assert guest_id in table.text and "Manual" in table.text
    screenshot("merges")
    assert_accessible(browser, "merges")
    table.find_element(By.CSS_SELECTOR, "tbody tr a").click()

    _wait(browser, "#undo-understood").click()
    browser.find_element(By.ID, "undo-submit").click()
    answer = _wait(browser, "#unmerge")
    assert f"Record {guest_id}" in answer.text and "Orders back: 9101" in answer.text
    assert browser.find_element(By.ID, "merge-state").text == "Undone"
    assert browser.find_elements(By.ID, "undo-submit") == []
    assert browser.find_element(By.ID, "already-undone").is_displayed()
    restored = system.rpc.customer_sync.get_customer(STORE, guest_id)
    assert restored.get("status", "active") != "merged"
    screenshot("merge-undone")
    assert_accessible(browser, "merge undone")
