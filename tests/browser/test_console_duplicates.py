"""The console's "Possible duplicates" page in a real browser against the running system:
reached from the customers page, each group's records linked to their pages, and accessible
(axe-core, at desktop and phone widths)."""
from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests import payloads
from tests.browser.accessibility import assert_accessible
from tests.browser.test_console import _key
from tests.browser.test_console_pages import _sign_in, _wait
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.support import wait_until


def kim_registered_and_as_a_guest(system) -> None:
    """Kim registered (shop customer 9001) and as a guest with another email, the same phone
    written nationally and the same name and postcode (her name holds markup); waits until the
    duplicate finder groups them."""
    billing = dict(first_name="Kim", last_name="<b>Weber</b>", postcode="10115", country="DE")
    system.webhook("customer.created", payloads.customer(
        9001, "kim@example.com", first_name="Kim", last_name="<b>Weber</b>",
        billing=payloads.address("kim@example.com", phone="+49 30 1234567", **billing)))
    system.webhook("order.created", payloads.order(
        9101, 0, email="kim.w@example.net",
        billing=payloads.address("kim.w@example.net", phone="030 1234567", **billing)))
    wait_until(lambda: system.rpc.customer_sync.find_duplicates(STORE)["groups"],
               timeout=30, message="a duplicate group")


def test_duplicates_are_listed_and_linked_to_each_customer(browser, screenshot, system):
    base = system.gateway_url
    kim_registered_and_as_a_guest(system)

    _sign_in(browser, base, _key(system, "read"))
    browser.find_element(By.ID, "duplicates-link").click()
    group = _wait(browser, ".duplicate-group")
    assert "Same phone, name and postcode" in group.text and "score 85" in group.text
    assert "<b>Weber</b>" in group.text  # shown as text, never as markup
    assert "Registered" in group.text and "Guest" in group.text
    links = group.find_elements(By.CSS_SELECTOR, "tbody a")
    assert len(links) == 2
    screenshot("possible-duplicates")
    assert_accessible(browser, "possible duplicates")
    links[0].click()
    WebDriverWait(browser, 10).until(lambda d: "/console/customers/" in d.current_url)
