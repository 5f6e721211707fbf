"""The admin console against the running system (every service on the real broker, the fake
shop): in a real headless Chromium, and at the HTTP level for what needs no browser."""
from __future__ import annotations

import re

import requests
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.accessibility import assert_accessible
from tests.gateway_system import STORE, shop, system  # noqa: F401 - fixtures
from tests.support import wait_until


def _key(system, *scopes: str) -> str:
    return system.rpc.customer_sync.create_api_key(STORE, f"console {'+'.join(scopes)}",
                                                   list(scopes), "test")["api_key"]


def _customers(system, count: int) -> list[tuple[dict, str]]:
    return [system.shop_customer(orders=1) for _ in range(count)]


def _wait_listed(system, count: int) -> None:
    def listed():
        return system.rpc.segmentation.search_customers(STORE, {}, None, None)["total"] == count
    wait_until(listed, timeout=20, message=f"{count} customers in the list")


def _sign_in(driver, base: str, key: str) -> None:
    driver.get(base + "/console/customers")
    assert "/console/login?next=%2Fconsole%2Fcustomers" in driver.current_url
    field = driver.find_element(By.ID, "api_key")
    field.send_keys(key)
    field.submit()
    try:
        WebDriverWait(driver, 10).until(
            EC.presence_of_element_located((By.ID, "customer-table")))
    except Exception:
        raise AssertionError(f"not signed in: {driver.current_url}\n"
                             f"{driver.find_element(By.TAG_NAME, 'body').text}") from None


def _wait_table(driver) -> None:
    WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "customer-table")))


def _rows(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#customer-table tbody tr")


def _flash(driver, expected: str) -> str:
    """The page's message once it says `expected` (the page before may still show its own)."""
    def said(d):
        try:
            text = d.find_element(By.CSS_SELECTOR, ".flashes").text
        except WebDriverException:  # not there yet, or the page is being replaced
            return False
        return text if expected in text else False
    return WebDriverWait(driver, 10).until(said)


def test_staff_work_through_the_console_in_a_browser(browser, screenshot, system):
    (ada, ada_id), (bob, bob_id), (cy, cy_id) = _customers(system, 3)
    _wait_listed(system, 3)
    writer = system.client("write")
    wait_until(lambda: writer.get(f"/customers/{ada_id}/loyalty").status_code == 200,
               timeout=20, message="the loyalty account")
    assert writer.post(f"/customers/{ada_id}/loyalty/adjust",
                       json={"points": 1000, "reason": "welcome"}).status_code == 200
    start = writer.get(f"/customers/{ada_id}/loyalty").json()["balance"]
    base = system.gateway_url

    # A wrong key is refused in the form; the right one signs in.
    browser.get(base + "/console/login")
    browser.find_element(By.ID, "api_key").send_keys("wcc_nope_nope")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # The click may return before the answer has loaded: wait for it, never read at once.
    refused = WebDriverWait(browser, 10).until(
        EC.presence_of_element_located((By.ID, "login-error")))
    assert "unknown or revoked" in refused.text
    assert_accessible(browser, "sign-in page (a key refused)")
    _sign_in(browser, base, _key(system, "write", "gdpr"))
    assert len(_rows(browser)) == 3
    assert browser.find_element(By.ID, "total").text.startswith("3 customers")
    screenshot("customer-list")
    assert_accessible(browser, "customer list")

    # Search narrows the list; a quick filter with nobody in it says so.
    search = browser.find_element(By.ID, "q")
    search.send_keys(ada["email"])
    search.submit()
    WebDriverWait(browser, 10).until(lambda d: len(_rows(d)) == 1)
    assert ada["last_name"] in _rows(browser)[0].text
    browser.find_element(By.LINK_TEXT, "VIP").click()
    WebDriverWait(browser, 10).until(EC.url_contains("view=vip"))
    WebDriverWait(browser, 10).until(EC.text_to_be_present_in_element(
        (By.ID, "customer-table"), "No customers match"))
    browser.find_element(By.ID, "clear-filters").click()
    WebDriverWait(browser, 10).until(lambda d: len(_rows(d)) == 3)

    # Select-all counts every row; then bulk-tag two customers.
    select_all = browser.find_element(By.ID, "select-all")
    assert select_all.is_displayed()
    select_all.click()
    assert browser.find_element(By.ID, "selection-count").text == "(3 selected)"
    select_all.click()
    assert browser.find_element(By.ID, "selection-count").text == "(0 selected)"
    assert not browser.find_element(By.ID, "bulk-apply").is_enabled()
    for customer_id in (ada_id, bob_id):
        browser.find_element(By.CSS_SELECTOR,
                             f"input[name=customer_id][value='{customer_id}']").click()
    assert browser.find_element(By.ID, "selection-count").text == "(2 selected)"
    Select(browser.find_element(By.ID, "bulk-action")).select_by_value("add_tags")
    assert not browser.find_element(By.ID, "bulk-groups").is_displayed()
    browser.find_element(By.ID, "bulk-tags").send_keys("console-test")
    browser.find_element(By.ID, "bulk-apply").click()
    results = WebDriverWait(browser, 10).until(
        EC.presence_of_element_located((By.ID, "bulk-results"))).text
    assert results.count("tagged") == 2
    assert ada["last_name"] in results and bob["last_name"] in results
    assert "tagged: 2" in browser.find_element(By.ID, "bulk-summary").text
    assert_accessible(browser, "bulk action results")
    for customer_id, tagged in ((ada_id, True), (bob_id, True), (cy_id, False)):
        tags = {t["tag"] for t in system.rpc.segmentation.get_profile(STORE, customer_id)["tags"]}
        assert ("console-test" in tags) is tagged

    # Deleting asks first; cancel it.
    browser.get(base + "/console/customers")
    _wait_table(browser)
    browser.find_element(By.CSS_SELECTOR, f"input[name=customer_id][value='{cy_id}']").click()
    Select(browser.find_element(By.ID, "bulk-action")).select_by_value("delete")
    browser.find_element(By.ID, "bulk-apply").click()
    cancel = WebDriverWait(browser, 10).until(
        EC.presence_of_element_located((By.LINK_TEXT, "Cancel")))
    assert "Delete 1 customer?" in browser.find_element(By.TAG_NAME, "h1").text
    assert_accessible(browser, "bulk delete confirmation")
    cancel.click()
    _wait_table(browser)
    assert len(_rows(browser)) == 3

    # Open a customer.
    browser.find_element(By.CSS_SELECTOR, f"a[href='/console/customers/{ada_id}']").click()
    WebDriverWait(browser, 10).until(EC.presence_of_element_located((By.ID, "h-contact")))
    assert ada["last_name"] in browser.find_element(By.TAG_NAME, "h1").text
    assert "console-test" in browser.find_element(By.ID, "tag-list").text
    assert browser.find_element(By.ID, "points-balance").text == f"{start} points"

    # Add a note.
    Select(browser.find_element(By.ID, "note-category")).select_by_value("phone-call")
    browser.find_element(By.ID, "note-text").send_keys("Called about the parcel <b>late</b>")
    browser.find_element(By.CSS_SELECTOR, "#notes button[type=submit]").click()
    assert _flash(browser, "Note added.")
    notes = browser.find_element(By.ID, "notes").text
    assert "Phone call" in notes and "Called about the parcel <b>late</b>" in notes  # as text

    # Redeem points: the coupon's value first, then the confirmation redeems.
    browser.find_element(By.ID, "redeem-points").send_keys("200")
    browser.find_element(By.CSS_SELECTOR, "#redeem-form button[type=submit]").click()
    quote = WebDriverWait(browser, 10).until(
        EC.presence_of_element_located((By.ID, "quote"))).text
    assert quote.startswith("200 points = 2.00 EUR"), quote
    screenshot("redeem-quote")
    assert_accessible(browser, "redemption quote")
    assert writer.get(f"/customers/{ada_id}/loyalty").json()["balance"] == start  # nothing yet
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    assert _flash(browser, "Redeemed 200 points")
    assert browser.find_element(By.ID, "points-balance").text == f"{start - 200} points"
    assert "2.00 EUR" in browser.find_element(By.ID, "rewards").text

    # Store credit, typed as an amount in the store's currency.
    browser.find_element(By.CSS_SELECTOR, "details.credit-form summary").click()
    browser.find_element(By.ID, "credit-amount").send_keys("7.50")
    Select(browser.find_element(By.ID, "credit-reason")).select_by_value("goodwill")
    browser.find_element(By.ID, "credit-note").send_keys("Parcel <b>late</b>")
    browser.find_element(By.CSS_SELECTOR, "#credit-form button[type=submit]").click()
    assert _flash(browser, "Store credit issued")
    assert "Parcel <b>late</b>" in browser.find_element(By.ID, "rewards").text  # as text
    screenshot("customer-page")
    assert_accessible(browser, "customer page")

    # Cancel the points coupon: asked first, then its points come back.
    browser.find_elements(By.CSS_SELECTOR, "#rewards form button")[-1].click()
    WebDriverWait(browser, 10).until(EC.presence_of_element_located((By.ID, "h-cancel")))
    screenshot("reward-cancel")
    browser.find_element(By.CSS_SELECTOR, "main form button.danger").click()
    assert _flash(browser, "200 points")
    wait_until(lambda: writer.get(f"/customers/{ada_id}/loyalty").json()["balance"] == start,
               timeout=20, message="the cancelled coupon's points back")

    # Submit an erasure request: the box must be ticked (the browser insists too).
    browser.find_element(By.ID, "erasure-confirm").click()
    browser.find_element(By.CSS_SELECTOR, "#gdpr button.danger").click()
    assert _flash(browser, "Erasure request recorded")
    filed = system.rpc.gdpr.list_requests(STORE, None)
    assert [(r["type"], r["email"].lower()) for r in filed] == [("erasure", ada["email"].lower())]

    # Sign out: the pages ask to sign in again.
    browser.find_element(By.CSS_SELECTOR, ".who button").click()
    WebDriverWait(browser, 10).until(EC.url_contains("/console/login"))
    browser.get(base + "/console/customers")
    assert "/console/login" in browser.current_url


# The focused element, whether it matches a selector, and whether its focus ring shows: an
# outline or a box-shadow drawn by the console's :focus-visible style.
_FOCUS = """
const el = document.activeElement, style = getComputedStyle(el);
const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
return {matches: el.matches(arguments[0]), ring: outline || style.boxShadow !== 'none',
        what: el.outerHTML.slice(0, 120)};
"""


def _press_until(driver, keys: tuple, css: str, most: int = 60) -> dict:
    """Press `keys` (TAB, or SHIFT+TAB) until the focus is on `css`; the focus state there."""
    seen = []
    for _ in range(most):
        ActionChains(driver).send_keys(*keys).perform()
        focus = driver.execute_script(_FOCUS, css)
        if focus["matches"]:
            return focus
        seen.append(focus["what"])
    raise AssertionError(f"{css} not reached with {most} presses; focus went to:\n"
                         + "\n".join(seen))


def test_the_customer_list_by_keyboard_alone(browser, system):
    """Reach a quick filter, the search, a row's checkbox and the bulk-action button with TAB,
    ENTER and SPACE only, the focus ring visible at each."""
    _customers(system, 2)
    _wait_listed(system, 2)
    _sign_in(browser, system.gateway_url, _key(system, "write"))
    tab, back = (Keys.TAB,), (Keys.SHIFT, Keys.TAB)

    focus = _press_until(browser, tab, ".quick a[href*='view=active']")
    assert focus["ring"], f"no visible focus on the quick filter: {focus['what']}"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(EC.url_contains("view=active"))
    _wait_table(browser)
    assert len(_rows(browser)) == 2

    focus = _press_until(browser, tab, "#q")
    assert focus["ring"], f"no visible focus on the search field: {focus['what']}"
    focus = _press_until(browser, tab, "input[name=customer_id]")
    assert focus["ring"], f"no visible focus on a row checkbox: {focus['what']}"
    assert not browser.find_element(By.ID, "bulk-apply").is_enabled()
    ActionChains(browser).send_keys(Keys.SPACE).perform()
    assert browser.find_element(By.ID, "selection-count").text == "(1 selected)"
    focus = _press_until(browser, back, "#bulk-apply")  # enabled now: in the tab order
    assert focus["ring"], f"no visible focus on the apply button: {focus['what']}"


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _http_sign_in(system, key: str) -> requests.Session:
    session = requests.Session()
    page = session.get(system.gateway_url + "/console/login", timeout=10)
    answer = session.post(system.gateway_url + "/console/login", timeout=10,
                          data={"api_key": key, "csrf_token": _csrf(page.text)})
    return session, answer


def test_keys_scopes_and_csrf_over_http(system):
    [(ada, ada_id)] = _customers(system, 1)
    base = system.gateway_url

    for root in ("/console", "/console/"):
        first = requests.get(base + root, timeout=10)
        assert first.status_code == 200 and first.url == base + "/console/login"
    _, refused = _http_sign_in(system, "wcc_unknown_key")
    assert refused.status_code == 401 and "unknown or revoked" in refused.text

    reader, answer = _http_sign_in(system, _key(system, "read"))
    assert answer.status_code == 200 and answer.url.endswith("/console/customers")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
    cookie = answer.history[0].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = reader.get(f"{base}/console/customers/{ada_id}", timeout=10)
    assert page.status_code == 200 and ada["email"] in page.text
    for form in ("/notes", "/tags", "/redeem", "/reminders", "/gdpr", "/groups"):
        assert f'action="/console/customers/{ada_id}{form}"' not in page.text, form
    assert 'id="bulk-bar"' not in reader.get(f"{base}/console/customers", timeout=10).text
    # The read key's own token, but the API refuses the change.
    tried = reader.post(f"{base}/console/customers/{ada_id}/notes", timeout=10,
                        data={"category": "general", "text": "from a reader",
                              "csrf_token": _csrf(page.text)})
    assert tried.status_code == 200 and "lacks the &#39;write&#39; scope" in tried.text

    writer, _ = _http_sign_in(system, _key(system, "write"))
    forged = writer.post(f"{base}/console/customers/{ada_id}/notes", timeout=10,
                         data={"category": "general", "text": "forged"})
    assert forged.status_code == 403
    forged_bulk = writer.post(f"{base}/console/customers/bulk", timeout=10,
                              data={"action": "delete", "confirm": "yes", "customer_id": ada_id})
    assert forged_bulk.status_code == 403
    assert system.rpc.customer_sync.list_notes(STORE, ada_id) == []
    assert system.rpc.customer_sync.get_customer(STORE, ada_id)["customer_id"] == ada_id
    page = writer.get(f"{base}/console/customers/{ada_id}", timeout=10)
    assert f'action="/console/customers/{ada_id}/notes"' in page.text
    assert 'id="gdpr"' not in page.text  # write without gdpr: no GDPR actions
