"""The unsubscribe and preference pages, attacked over HTTP on the running notifications
service: tampered, borrowed and guessed tokens, oversized and chunked bodies, wrong methods,
fields the forms do not have. Each refusal is a 4xx and changes nothing: the customer stays
subscribed and no consent.changed is published."""
from __future__ import annotations

import pytest
import requests

from services.notifications import links as ln
from services.notifications.repository import NotificationsStorage
from services.notifications.service import NotificationsService
from shared.events import build_event, contract
from tests.support import EventBarrier, free_port, publish, wait_until

STORE = "sec-unsub"
SECRET = "a-security-suite-link-secret-0123456789ab"
MAX_BODY = 1024


@pytest.fixture
def door(services, events):
    events.listen("gdpr", "consent.changed")
    port = free_port()
    container = services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                               NOTIFY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                               NOTIFY_LINK_SECRET=SECRET,
                               NOTIFY_UNSUBSCRIBE_MAX_BODY_BYTES=str(MAX_BODY))
    storage = next(d for d in container.extensions
                   if type(d).__name__ == "MongoStorage").repositories.storage
    assert isinstance(storage, NotificationsStorage)
    barrier = EventBarrier(services, "notifications").expect("customer.created")
    for customer_id in ("victim", "other"):
        publish(services.amqp_uri, build_event("customer.created", store_id=STORE, data={
            **contract("customer.created").sample, "customer_id": customer_id,
            "email": f"{customer_id}@example.com"}).to_message())
    barrier.settled("customer.created", 2)
    for customer_id in ("victim", "other"):
        storage.contacts.collection.update_one(
            {"_id": storage.contacts.key(STORE, customer_id)},
            {"$set": {"consent.email_marketing": {"granted": True, "source": "checkout"}}})
    tokens = {c: ln.LinkSigner(SECRET).token(
        ln.UNSUBSCRIBE, storage.contacts.link_id(STORE, c, ln.new_link_id()))
        for c in ("victim", "other")}
    return f"http://127.0.0.1:{port}", storage, tokens, events


def subscribed(storage, customer_id="victim") -> bool:
    return storage.contacts.get(STORE, customer_id)["consent"]["email_marketing"]["granted"]


def unchanged(storage, events) -> None:
    assert subscribed(storage) and subscribed(storage, "other")
    assert events.of_type("consent.changed") == []


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


def test_tampered_guessed_and_foreign_tokens_are_404(door):
    base, storage, tokens, events = door
    token = tokens["victim"]
    forged = {
        "signature altered": flip(token, -1),
        "link id altered": flip(token, 0),
        "another secret's": ln.LinkSigner("x" * 40).token(ln.UNSUBSCRIBE, token[:22]),
        "a confirmation token": ln.LinkSigner(SECRET).token(ln.CONFIRM_EMAIL, token[:22]),
        "the link id alone": token[:22],
        "padded": token + "==",
        "traversal": "..%2F..%2Fadmin",
        "all zeros": "A" * 44,
        "long": "A" * 4000,
    }
    for name, candidate in forged.items():
        for method, path in (("GET", "/unsubscribe/"), ("POST", "/unsubscribe/"),
                             ("GET", "/preferences/"), ("POST", "/preferences/"),
                             ("POST", "/forget/"), ("POST", "/confirm/")):
            if name == "a confirmation token" and path == "/confirm/":
                continue  # its own door: valid there (and it changes nothing, nothing pending)
            answer = requests.request(method, f"{base}{path}{candidate}",
                                      data={"List-Unsubscribe": "One-Click"}
                                      if path == "/unsubscribe/" else None, timeout=10)
            assert answer.status_code == 404, (name, method, path, answer.status_code)
            assert "victim" not in answer.text
    unchanged(storage, events)


def test_oversized_and_chunked_bodies_are_refused_before_anything_changes(door):
    base, storage, tokens, events = door
    url = f"{base}/unsubscribe/{tokens['victim']}"
    big = b"List-Unsubscribe=One-Click&pad=" + b"a" * (MAX_BODY * 4)
    answer = requests.post(url, data=big, timeout=10,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413

    def chunks():
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(64):
            yield b"a" * 1024

    chunked = requests.post(url, data=chunks(), timeout=10,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 411  # its size unknown until read: refused unread
    many = requests.post(f"{base}/preferences/{tokens['victim']}", timeout=10,
                         files={f"f{i}": (None, "on") for i in range(40)})
    assert many.status_code in (400, 413)
    unchanged(storage, events)


def test_wrong_methods_are_405_and_change_nothing(door):
    base, storage, tokens, events = door
    token = tokens["victim"]
    for method in ("PUT", "DELETE", "PATCH"):
        for path in ("/unsubscribe/", "/preferences/", "/forget/", "/confirm/"):
            answer = requests.request(method, f"{base}{path}{token}", timeout=10,
                                      data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 405, (method, path)
    assert requests.get(f"{base}/forget/{token}", timeout=10).status_code == 405
    unchanged(storage, events)


def test_form_fields_the_page_does_not_have_are_400_naming_them(door):
    base, storage, tokens, events = door
    token = tokens["victim"]
    for path, form, field in (
            ("/preferences/", {"email_marketing": "on", "customer_id": "other"}, "customer_id"),
            ("/preferences/", {"email_marketing": "off"}, "email_marketing"),
            ("/unsubscribe/", {"List-Unsubscribe": "One-Click", "channel": "sms"}, "channel"),
            ("/unsubscribe/", {"List-Unsubscribe": "Everything"}, "List-Unsubscribe"),
            ("/forget/", {"email": "attacker@evil.example"}, "email")):
        answer = requests.post(f"{base}{path}{token}", data=form, timeout=10)
        assert answer.status_code == 400 and field in answer.text, (path, form)
    unchanged(storage, events)


def test_pages_cannot_be_framed_leak_their_token_or_be_cached(door):
    base, storage, tokens, events = door
    answer = requests.get(f"{base}/preferences/{tokens['victim']}", timeout=10)
    assert answer.status_code == 200
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert "form-action 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in answer.headers  # nothing for a cross-site form to ride on
    unchanged(storage, events)


def test_one_token_changes_only_its_own_contact(door):
    base, storage, tokens, events = door
    answer = requests.post(f"{base}/unsubscribe/{tokens['other']}",
                           data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert answer.status_code == 200
    assert subscribed(storage) and not subscribed(storage, "other")
    wait_until(lambda: events.of_type("consent.changed"), timeout=10)
    assert [e["data"]["customer_id"] for e in events.of_type("consent.changed")] == ["other"]
