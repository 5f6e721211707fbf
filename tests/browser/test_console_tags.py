"""The console's tag catalogue in a real headless Chromium against the running system: a tag
created with a description, a carried tag renamed (its customer follows), one deleted; the
page passes the accessibility check."""
from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.browser.accessibility import assert_accessible
from tests.browser.test_console import _flash, _key
from tests.browser.test_console_pages import _fill, _open, _sign_in, _wait
from tests.gateway_system import shop, system  # noqa: F401 - fixtures


def test_staff_create_rename_and_delete_tags_in_the_console(browser, screenshot, system):
    base = system.gateway_url
    _, customer_id = system.shop_customer(orders=0)
    system.client("write").post(f"/customers/{customer_id}/tags", json={"tags": ["gift"]})
    _sign_in(browser, base, _key(system, "write"))
    browser.find_element(By.LINK_TEXT, "Tags").click()
    table = _wait(browser, "#tag-table")
    assert "gift" in table.text

    _fill(browser, "new-tag", "wholesale")
    _fill(browser, "new-description", "Trade buyers")
    browser.find_element(By.CSS_SELECTOR, "#tag-create button[type=submit]").click()
    _flash(browser, "Created the tag wholesale")
    assert "Trade buyers" in _wait(browser, "#tag-wholesale").text
    assert_accessible(browser, "tags")
    screenshot("tags")

    _fill(browser, "rename-1", "present")  # gift sorts first
    browser.find_element(By.CSS_SELECTOR, "#tag-gift form button[type=submit]").click()
    _flash(browser, "Renamed gift to present: 1 customers follow")
    assert "1" in _wait(browser, "#tag-present").text
    page = system.client("read").get(f"/customers/{customer_id}").json()
    assert [t["tag"] for t in page["tags"]] == ["present"]

    browser.find_element(By.CSS_SELECTOR,
                         "#tag-present form[action$='/delete'] button").click()
    _flash(browser, "Deleted the tag present: taken off 1 customers")
    assert "present" not in _open(browser, base + "/console/tags", "#tag-table").text
