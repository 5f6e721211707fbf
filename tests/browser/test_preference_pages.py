"""The pages behind the links in messages, in a real headless Chromium against the running
notifications service: the unsubscribe page (opening it changes nothing, its button does),
the preference page and the double opt-in confirmation, each checked by axe-core at laptop and
phone width, with screenshots in tests/artifacts/."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from services.notifications import links as ln
from services.notifications.service import NotificationsService
from services.notifications.subscriptions import consent_state
from shared.events import build_event, contract
from tests.browser.accessibility import assert_accessible
from tests.support import EventBarrier, free_port, publish

STORE = "pages"
SECRET = "a-browser-test-link-secret-0123456789abcdef"


@pytest.fixture
def pages(services):
    port = free_port()
    container = services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                               NOTIFY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                               NOTIFY_LINK_SECRET=SECRET)
    storage = next(d for d in container.extensions
                   if type(d).__name__ == "MongoStorage").repositories.storage
    barrier = EventBarrier(services, "notifications").expect("customer.created")
    publish(services.amqp_uri, build_event("customer.created", store_id=STORE, data={
        **contract("customer.created").sample, "customer_id": "c1",
        "email": "ada@example.com"}).to_message())
    barrier.settled("customer.created")
    storage.contacts.collection.update_one(
        {"_id": storage.contacts.key(STORE, "c1")},
        {"$set": {"consent.email_marketing": {"granted": False, "pending": True,
                                              "source": "checkout"},
                  "consent.sms_marketing": {"granted": True, "source": "checkout"}}})
    link_id = storage.contacts.link_id(STORE, "c1", ln.new_link_id())
    signer = ln.LinkSigner(SECRET)
    return (f"http://127.0.0.1:{port}", storage, signer.token(ln.UNSUBSCRIBE, link_id),
            signer.token(ln.CONFIRM_EMAIL, link_id))


def outcome(browser, words: str) -> None:
    """Wait for the page the button led to: its status line saying `words`."""
    WebDriverWait(browser, 10).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "[role=status]"), words))


def state(storage, purpose: str) -> str:
    return consent_state(storage.contacts.get(STORE, "c1"), purpose)


def test_the_pages_are_accessible_and_only_their_buttons_change_anything(
        pages, browser, screenshot):
    base, storage, token, confirm = pages
    browser.get(f"{base}/confirm/{confirm}")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert_accessible(browser, "confirm page")
    screenshot("public-confirm")
    assert state(storage, "email_marketing") == "pending"  # opening it confirms nothing
    browser.find_element(By.CSS_SELECTOR, "main form button").click()
    outcome(browser, "confirmed")
    assert state(storage, "email_marketing") == "granted"

    browser.get(f"{base}/unsubscribe/{token}")
    assert_accessible(browser, "unsubscribe page")
    screenshot("public-unsubscribe")
    assert state(storage, "email_marketing") == "granted"  # opening it unsubscribes nobody
    browser.find_element(By.CSS_SELECTOR, "main form button").click()
    outcome(browser, "unsubscribed")
    assert state(storage, "email_marketing") == "off"
    assert_accessible(browser, "unsubscribe page, done")

    browser.find_element(By.LINK_TEXT, "Change all your preferences").click()
    WebDriverWait(browser, 10).until(EC.presence_of_element_located((By.ID, "email_marketing")))
    assert_accessible(browser, "preference page")
    screenshot("public-preferences")
    email_box = browser.find_element(By.ID, "email_marketing")
    sms_box = browser.find_element(By.ID, "sms_marketing")
    assert not email_box.is_selected() and sms_box.is_selected()
    # Labels are tied to their boxes: clicking the words ticks the box.
    browser.find_element(By.CSS_SELECTOR, "label[for=email_marketing]").click()
    sms_box.click()
    browser.find_element(By.CSS_SELECTOR, "form.card button").click()
    outcome(browser, "saved")
    assert (state(storage, "email_marketing"), state(storage, "sms_marketing")) == (
        "granted", "off")
    screenshot("public-preferences-saved")
