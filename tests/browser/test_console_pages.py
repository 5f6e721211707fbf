"""The console's store pages in a real headless Chromium against the running system: the
loyalty programme, a template with its live preview, a workflow that then really sends (to a
local SMTP server) and shows in the send log, the GDPR queue with an overdue request first,
the reports' charts for a seeded store, and paging back and forth. Screenshots of each page go
to tests/artifacts/."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from services.gdpr.bootstrap import build as build_gdpr
from services.gdpr.service import GdprService
from shared.mongo import MongoStorage
from tests.browser.accessibility import assert_accessible
from tests.browser.test_console import _flash, _key
from tests.gateway_system import STORE, running_system, shop  # noqa: F401 - fixtures
from tests.security.gateway_requests import suppressed_address
from tests.support import wait_until


class GdprClock:
    """The gdpr service's clock in these tests: real time plus an offset the test moves, so a
    request filed now can honestly be 31 days old later."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


GDPR_CLOCK = GdprClock()


class ClockedGdprService(GdprService):
    app = MongoStorage(partial(build_gdpr, clock=GDPR_CLOCK))


@pytest.fixture
def system(services, shop, smtp):  # noqa: F811 - this module's system has mail and a clock
    GDPR_CLOCK.offset = timedelta(0)
    with running_system(services, shop, notifications={"SMTP_HOST": smtp.host,
                                                       "SMTP_PORT": str(smtp.port)},
                        gdpr_service=ClockedGdprService) as running:
        yield running


def _wait(driver, css: str, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def _open(driver, url: str, css: str):
    """Load a page and wait for an element of its own (never read the page at once)."""
    driver.get(url)
    return _wait(driver, css)


def _sign_in(driver, base: str, key: str, landing: str = "#customer-table") -> None:
    _open(driver, base + "/console/login", "#api_key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, landing)


def _text(driver, css: str) -> str:
    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _fill(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def test_programme_template_preview_workflow_and_the_send_log(browser, screenshot, system,
                                                               smtp):
    base = system.gateway_url
    ada, ada_id = system.shop_customer(orders=1)
    _sign_in(browser, base, _key(system, "admin"))
    nav = browser.find_element(By.CSS_SELECTOR, "nav.main-nav").text
    for label in ("Customers", "Loyalty", "Templates", "Workflows", "Send log", "Suppressed",
                  "GDPR requests", "Reports"):
        assert label in nav

    # The loyalty programme: a refused change is named by its field, a good one is saved.
    browser.find_element(By.LINK_TEXT, "Loyalty").click()
    _wait(browser, "#programme-form")
    _fill(browser, "tier-1-min_points", "900")  # overlaps bronze (0-999)
    browser.find_element(By.ID, "programme-save").click()
    error = _wait(browser, "#e-tiers-1-min_points")
    assert "overlaps tier bronze" in error.text
    assert browser.find_element(By.ID, "tier-1-min_points").get_attribute(
        "aria-invalid") == "true"
    assert_accessible(browser, "loyalty programme (a refused change)")
    _fill(browser, "tier-1-min_points", "1000")
    _fill(browser, "p-points_per_unit", "50")
    browser.find_element(By.ID, "programme-save").click()
    assert _flash(browser, "Loyalty programme saved.")
    assert "50 points = 1.00 of store credit" in _text(browser, "#fact-redemption")
    assert system.rpc.loyalty.get_programme(STORE)["points_per_unit"] == 50
    screenshot("loyalty-programme")

    # A template: the live preview follows the typing, with the API's sample data.
    browser.find_element(By.LINK_TEXT, "Templates").click()
    _wait(browser, "#new-template")
    assert_accessible(browser, "templates list")
    browser.find_element(By.ID, "new-template").click()
    form = _wait(browser, "#template-form")
    WebDriverWait(browser, 10).until(lambda d: form.get_attribute("data-live") == "on")
    _fill(browser, "t-slug", "console-hello")
    _fill(browser, "t-name", "Hello from the console")
    _fill(browser, "t-subject", "Hi")
    # Until every part is there the API refuses the draft, and the preview says so.
    WebDriverWait(browser, 10).until(lambda d: "required" in _text(d, "#preview-error"))
    _fill(browser, "t-html", "<p>Dear {{ customer.first_name }}, thanks from "
                             "{{ store.name }}</p>")
    _fill(browser, "t-text", "Dear {{ customer.first_name }}")
    WebDriverWait(browser, 10).until(lambda d: "Dear Ada" in _text(d, "#preview-text"))
    assert _text(browser, "#preview-subject") == "Hi"
    _fill(browser, "t-subject", "Hello {{ customer.first_name }}")
    WebDriverWait(browser, 10).until(
        lambda d: _text(d, "#preview-subject") == "Hello Ada")  # SAMPLE_CONTEXT's Ada
    frame = browser.find_element(By.ID, "preview-html")
    assert "Dear Ada, thanks from Tea &amp; Co" in frame.get_attribute("srcdoc")
    browser.switch_to.frame(frame)
    assert browser.find_element(By.TAG_NAME, "p").text == "Dear Ada, thanks from Tea & Co"
    browser.switch_to.default_content()
    _fill(browser, "t-subject", "Hello {{ customer.nickname }}")
    WebDriverWait(browser, 10).until(
        lambda d: "nickname" in _text(d, "#preview-error"))
    screenshot("template-editor")
    assert_accessible(browser, "template editor (a preview error shown)")
    _fill(browser, "t-subject", "Hello {{ customer.first_name }}")
    WebDriverWait(browser, 10).until(lambda d: not d.find_element(
        By.ID, "preview-error").is_displayed())
    browser.find_element(By.ID, "template-save").click()
    assert _flash(browser, "Template console-hello saved.")
    assert system.rpc.notifications.get_template(STORE, "console-hello")["subject"] == \
        "Hello {{ customer.first_name }}"

    # A workflow on that template: tagging a customer sends the mail.
    browser.find_element(By.LINK_TEXT, "Workflows").click()
    _wait(browser, "#new-workflow").click()
    _wait(browser, "#workflow-form")
    _fill(browser, "w-id", "console-hello")
    _fill(browser, "w-name", "Hello on tag")
    Select(browser.find_element(By.ID, "w-trigger")).select_by_value("event:customer.tagged")
    assert browser.find_element(By.ID, "w-tag").is_displayed()
    assert not browser.find_element(By.ID, "w-days").is_displayed()
    _fill(browser, "w-tag", "say-hello")
    assert_accessible(browser, "workflow editor")
    _fill(browser, "w-delay", "0")
    Select(browser.find_element(By.ID, "w-template")).select_by_value("console-hello")
    Select(browser.find_element(By.ID, "w-purpose")).select_by_value("transactional")
    browser.find_element(By.ID, "workflow-save").click()
    assert _flash(browser, "Workflow “Hello on tag” saved.")
    row = browser.find_element(By.ID, "workflow-table").text
    assert "Hello on tag" in row and "A customer is tagged: say-hello, at once" in row
    screenshot("workflows")
    assert_accessible(browser, "workflows list")
    # Disable and enable again: the whole workflow goes back to the API each time.
    browser.find_element(By.XPATH, "//button[contains(., 'Disable')]").click()
    assert _flash(browser, "disabled")
    assert system.rpc.notifications.list_workflows(STORE)[0]["enabled"] is False
    browser.find_element(By.XPATH, "//button[contains(., 'Enable')]").click()
    assert _flash(browser, "enabled")
    assert system.rpc.notifications.list_workflows(STORE)[0]["enabled"] is True

    writer = system.client("write")
    assert writer.post(f"/customers/{ada_id}/tags", json={"tags": ["say-hello"]}
                       ).status_code in (200, 201)
    [mail] = smtp.wait_for(1, timeout=30)
    assert mail["Subject"] == f"Hello {ada['first_name']}"

    # The workflow's coupon, set in the editor: a bad amount is named, nothing saved.
    browser.find_element(By.LINK_TEXT, "Workflows").click()
    _wait(browser, "#workflow-table")
    browser.find_element(By.LINK_TEXT, "Hello on tag").click()
    _wait(browser, "#workflow-form")
    browser.find_element(By.ID, "w-coupon-on").click()
    Select(browser.find_element(By.ID, "w-coupon-type")).select_by_value("fixed")
    _fill(browser, "w-coupon-amount", "lots")
    _fill(browser, "w-coupon-currency", "EUR")
    _fill(browser, "w-coupon-days", "14")
    browser.find_element(By.ID, "workflow-save").click()
    error = _wait(browser, "#e-coupon-amount")
    assert "amount" in error.text
    assert "coupon" not in system.rpc.notifications.list_workflows(STORE)[0]
    assert_accessible(browser, "workflow editor with a coupon error")
    _fill(browser, "w-coupon-amount", "4.99")
    screenshot("workflow-coupon")
    browser.find_element(By.ID, "workflow-save").click()
    assert _flash(browser, "Workflow “Hello on tag” saved.")
    coupon = system.rpc.notifications.list_workflows(STORE)[0]["coupon"]
    assert (coupon["type"], coupon["amount"], coupon["currency"], coupon["validity_days"]) == \
        ("fixed", 499, "EUR", 14)

    # The send log shows it, and its filters narrow it.
    browser.find_element(By.LINK_TEXT, "Send log").click()
    table = _wait(browser, "#send-table")

    def sent_row(d):
        d.refresh()
        text = _text(d, "#send-table tbody")
        return text if "sent" in text and ada["email"] in text else False
    rows = WebDriverWait(browser, 20).until(sent_row)
    assert "console-hello" in rows and "Email" in rows
    Select(browser.find_element(By.ID, "s-channel")).select_by_value("sms")
    browser.find_element(By.CSS_SELECTOR, "#send-filters button[type=submit]").click()
    WebDriverWait(browser, 10).until(EC.url_contains("channel=sms"))
    WebDriverWait(browser, 10).until(lambda d: "No messages match" in _text(d, "#send-table"))
    browser.get(base + "/console/messages")
    table = _wait(browser, "#send-table")
    assert ada["email"] in table.text
    screenshot("send-log")
    assert_accessible(browser, "send log")

    # A bounced address is listed with why; the admin lifts it, saying why.
    suppressed_address(system, "bounced@example.com")
    browser.find_element(By.LINK_TEXT, "Suppressed").click()
    table = _wait(browser, "#suppression-table")
    assert "bounced@example.com" in table.text and "bounced" in table.text
    assert_accessible(browser, "suppressed addresses")
    _fill(browser, "reason-1", "the customer fixed the mailbox")
    browser.find_element(By.CSS_SELECTOR, "#suppression-table button[type=submit]").click()
    _flash(browser, "may be sent to again")
    [lifted] = system.rpc.notifications.list_suppressions(STORE, {"include_lifted": True})["items"]
    assert lifted["active"] is False and lifted["history"][-1]["detail"] == (
        "the customer fixed the mailbox")


def test_the_gdpr_queue_lists_the_overdue_request_first(browser, screenshot, system):
    base = system.gateway_url
    (old, old_id), (new, new_id) = system.shop_customer(), system.shop_customer()
    gdpr = system.client("gdpr")
    filed = gdpr.post("/gdpr/requests", json={"type": "access", "email": old["email"]})
    assert filed.status_code == 201
    GDPR_CLOCK.offset = timedelta(days=31)  # a month passes at the gdpr desk
    later = gdpr.post("/gdpr/requests", json={"type": "erasure", "email": new["email"]})
    assert later.status_code == 201
    _sign_in(browser, base, _key(system, "gdpr"), landing="#gdpr-queue")
    assert "/console/gdpr" in browser.current_url  # a gdpr-only key lands on its one page
    nav = browser.find_element(By.CSS_SELECTOR, "nav.main-nav").text
    assert "GDPR requests" in nav and "Customers" not in nav
    items = browser.find_elements(By.CSS_SELECTOR, "#gdpr-queue > li")
    assert len(items) == 2
    assert old["email"] in items[0].text and "overdue" in items[0].text
    assert "past due" in items[0].text
    assert new["email"] in items[1].text and "overdue" not in items[1].text
    assert "1 overdue" in _text(browser, "#gdpr-summary")
    screenshot("gdpr-queue")
    assert_accessible(browser, "GDPR queue")

    # Refuse the newer one, then confirm the overdue one's identity: the desk starts work.
    second = browser.find_elements(By.CSS_SELECTOR, "#gdpr-queue > li")[1]
    second.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("no proof of identity")
    second.find_element(By.CSS_SELECTOR, "button.danger").click()
    assert _flash(browser, "Request refused.")
    assert system.rpc.gdpr.get_request(later.json()["request_id"])["state"] == "rejected"
    first = browser.find_elements(By.CSS_SELECTOR, "#gdpr-queue > li")[0]
    first.find_element(By.CSS_SELECTOR, "input[name=note]").send_keys("passport seen")
    first.find_element(By.CSS_SELECTOR, "button.verify").click()
    assert _flash(browser, "Identity confirmed")
    wait_until(lambda: system.rpc.gdpr.get_request(filed.json()["request_id"])["state"]
               == "completed", timeout=30, message="the access request completed")
    browser.get(base + "/console/gdpr?state=completed")
    link = WebDriverWait(browser, 10).until(
        EC.presence_of_element_located((By.LINK_TEXT, "Download the export (JSON)")))
    assert link.get_attribute("href").endswith(
        f"/console/gdpr/{filed.json()['request_id']}/export")
    assert_accessible(browser, "GDPR requests, completed")


def _seed_prospects(system, count: int) -> None:
    """Customers without orders, straight from the shop's webhooks, all at once."""
    for _ in range(count):
        woo = system.shop.add_customer()
        system.webhook("customer.created", system.shop.webhook_body("customer.created", woo["id"]))


def test_reports_charts_and_paging_back_and_forth(browser, screenshot, system):
    base = system.gateway_url
    buyers = [system.shop_customer(orders=1) for _ in range(3)] + [system.shop_customer(orders=2)]
    _seed_prospects(system, 26)
    wait_until(lambda: system.rpc.segmentation.search_customers(STORE, {}, None, None)["total"]
               == 30, timeout=60, message="30 customers in the list")
    stats = [system.rpc.segmentation.get_profile(STORE, cid)["stats"] for _, cid in buyers]
    spends = sorted(s["total_spent"] for s in stats)
    first_days = Counter(s["first_order_at"][:10] for s in stats)  # the shop's order dates
    _sign_in(browser, base, _key(system, "read"))

    # Reports: the charts are SVG, and their numbers are the seeded store's.
    browser.find_element(By.LINK_TEXT, "Reports").click()
    _wait(browser, "#chart-segments")
    assert _text(browser, "#repeat-rate") == "25.0 %"  # one buyer of four ordered twice
    top = round(spends[-1] / sum(spends) * 100, 1)  # the top 10 % of 4 buyers is 1
    assert _text(browser, "#top-share") == f"{top} %"
    new_bars = browser.find_elements(By.CSS_SELECTOR, "#chart-new rect.bar")
    assert sum(int(b.get_attribute("data-value")) for b in new_bars) == 4
    segment_bars = browser.find_elements(By.CSS_SELECTOR, "#chart-segments rect.bar")
    values = {b.find_element(By.TAG_NAME, "title").get_attribute("textContent")
              for b in segment_bars}
    assert "Prospect: 26" in values
    assert sum(int(b.get_attribute("data-value")) for b in segment_bars) == 30
    assert browser.find_element(By.CSS_SELECTOR, "#chart-repeat rect.fill").get_attribute(
        "width") == "160.0"  # a quarter of 640
    table = _text(browser, "#table-segments")
    assert "Prospect 26" in table
    screenshot("reports")
    assert_accessible(browser, "reports")
    Select(browser.find_element(By.ID, "r-period")).select_by_value("day")
    browser.find_element(By.CSS_SELECTOR, "#period-form button").click()
    WebDriverWait(browser, 10).until(EC.url_contains("period=day"))
    _wait(browser, "#chart-new")
    title = browser.find_element(By.ID, "chart-new-title").get_attribute("textContent")
    assert title == "New customers per day: " + ", ".join(
        f"{day} {count}" for day, count in sorted(first_days.items()))

    # Paging: 30 customers at 25 a page; next, previous, next again.
    browser.get(base + "/console/customers?limit=25&sort=name")
    _wait(browser, "#page-next")
    first_page = [r.text for r in browser.find_elements(By.CSS_SELECTOR,
                                                        "#customer-table tbody tr")]
    assert len(first_page) == 25
    assert not browser.find_elements(By.ID, "page-previous")
    browser.find_element(By.ID, "page-next").click()
    _wait(browser, "#page-previous")
    second_page = [r.text for r in browser.find_elements(By.CSS_SELECTOR,
                                                         "#customer-table tbody tr")]
    assert len(second_page) == 5 and not set(second_page) & set(first_page)
    assert not browser.find_elements(By.ID, "page-next")
    screenshot("customers-page-2")
    assert_accessible(browser, "customer list, second page")
    browser.find_element(By.ID, "page-previous").click()
    _wait(browser, "#page-next")
    WebDriverWait(browser, 10).until(lambda d: not d.find_elements(By.ID, "page-previous"))
    again = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#customer-table tbody tr")]
    assert again == first_page
