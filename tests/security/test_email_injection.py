"""Email header injection. A signed webhook with the email `a@example.com,x@evil.example` was
stored as is and workflow emails went to both addresses; one with CR/LF crashed its send,
which ended "outcome unknown". Now intake keeps exactly one valid address or none (the
customer still syncs, flagged), a send builds exactly one recipient or fails for good before
anything is sent, and store settings that head emails refuse line breaks."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from services.customer_sync.core.importing import CustomerImport
from services.customer_sync.privacy.rectify import load_correction
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.core.sync import CustomerSync
from services.gdpr.requests import new_request
from services.notifications.channels import (DeliveryFailed, EmailChannel, SmsChannel,
                                             SmtpSettings, TwilioSettings)
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from shared.errors import ValidationError
from shared.outbox import OUTBOX_FIELD
from tests import payloads
from demo.mailbox import SmtpServer
from tests.gateway_system import shop, system  # noqa: F401 - fixtures
from tests.support import Clock, storage_at, wait_until

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
HOSTILE = {
    "comma": "a@example.com,x@evil.example",
    "semicolon": "a@example.com;x@evil.example",
    "crlf header": "a@example.com\r\nBcc: x@evil.example",
    "lf": "a@example.com\nx@evil.example",
    "display name": "Ada <a@example.com>, x@evil.example",
    "quoted comma": '"a,x"@example.com',
}


# -- intake: one address or none -----------------------------------------------------------------
@pytest.fixture
def customers(database) -> tuple[CustomerSyncStorage, CustomerSync]:
    storage = CustomerSyncStorage(database)
    storage.ensure_indexes()
    return storage, CustomerSync(storage)


def _owed(storage: CustomerSyncStorage) -> list[dict]:
    return [entry["message"] for collection in storage.outbox_collections()
            for doc in collection.find({f"{OUTBOX_FIELD}.0": {"$exists": True}})
            for entry in doc[OUTBOX_FIELD]]


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_webhook_customer_with_a_hostile_email_syncs_without_one_and_flagged(customers, email):
    storage, sync = customers
    result = sync.apply("s1", "customer", "created", payloads.customer(email=email),
                        correlation_id="wh-1")
    assert result.outcome == "created"
    doc = storage.customers.by_woo_id("s1", 42)
    assert doc["email"] == "" and doc["email_key"] is None and doc["email_unusable"] is True
    assert doc["billing"]["email"] == ""
    [event] = _owed(storage)
    assert event["data"]["email"] is None and event["data"]["billing"]["email"] == ""
    # the address is fixed at the shop: the customer gets it, and loses the flag
    sync.apply("s1", "customer", "updated",
               payloads.customer(email="a@example.com", modified="2026-03-05T10:00:00"),
               correlation_id="wh-2")
    doc = storage.customers.by_woo_id("s1", 42)
    assert doc["email"] == "a@example.com" and doc["email_unusable"] is False


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_guest_order_with_a_hostile_billing_email_makes_no_contact_of_it(customers, email):
    storage, sync = customers
    sync.apply("s1", "order", "created", payloads.order(3001, customer_id=0, email=email),
               correlation_id="wh-1")
    order = storage.orders.get("s1", "3001")
    assert order["billing"]["email"] == ""
    assert order["customer_id"] is None
    assert storage.customers.collection.count_documents({}) == 0


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_an_imported_row_with_a_hostile_email_is_invalid(customers, email):
    storage, sync = customers
    storage.stores.save(Store("s1", "https://shop.example", "whsec-12345678", "ck", "cs"))
    written = CustomerImport(storage, sync).run(
        "s1", [{"line": 2, "email": email, "first_name": "A"}], True, "alice")
    answer, touched = written.answer, written.touched
    assert answer["rows"][0]["outcome"] == "invalid" and "email" in answer["rows"][0]["errors"]
    assert touched == () and storage.customers.collection.count_documents({}) == 0


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_rectification_to_a_hostile_email_is_refused(email):
    for correction in ({"email": email}, {"billing": {"email": email}}):
        with pytest.raises(ValidationError) as info:
            load_correction(correction)
        assert set(info.value.details["fields"]) == set(correction)
    assert load_correction({"email": "a@example.com"}) == {"email": "a@example.com"}


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_gdpr_request_for_a_hostile_email_is_refused_naming_the_field(email):
    """A request's email is who gets the export and the confirmation: one address or a 400."""
    with pytest.raises(ValidationError) as info:
        new_request("s1", "access", email, None, "operator", T0)
    assert set(info.value.details["fields"]) == {"email"}
    assert new_request("s1", "access", " a@example.com ", None, "operator", T0)["type"] == "access"


# -- send: exactly one recipient, or a permanent failure before anything is sent -----------------
def _email_channel(smtp: SmtpServer) -> EmailChannel:
    return EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_message_to_anything_but_one_address_is_never_built(email):
    channel = EmailChannel(SmtpSettings("127.0.0.1", 1, "none", "", "", 5, "s@example.com"))
    with pytest.raises(DeliveryFailed) as info:
        channel.build(email, "Hi", "text", None, None, "<m@x>")
    assert info.value.transient is False


def test_a_message_has_exactly_the_one_recipient_and_from_it_was_given():
    with SmtpServer() as smtp:
        channel = _email_channel(smtp)
        channel.send(channel.build("  a@example.com ", "Hi", "text", None,
                                   '"Tea, & Co" <shop@example.com>', "<m@x>"))
        channel.close()
        [message] = smtp.messages
    assert message.envelope_to == ("a@example.com",)
    assert message["To"].addresses[0].addr_spec == "a@example.com"
    assert len(message["To"].addresses) == 1
    assert message["From"].addresses[0].display_name == "Tea, & Co"


@pytest.mark.parametrize("email", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_send_to_a_stored_hostile_email_fails_for_good_and_sends_nothing(database, email):
    """An address stored before intake checked it: the send fails permanently, naming why;
    no crash, no retry, no "outcome unknown", nothing handed to the mail server."""
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    storage.contacts.apply("s1", "c1", "contact_at", T0, {
        "email": email, "phone": None, "phone_key": None, "first_name": "C", "last_name": "",
        "birthday": None, "country": "FR"})
    workflow = notifier.save_workflow("s1", {
        "workflow_id": "w", "name": "Welcome", "trigger": {"event": "order.placed"},
        "channel": "email", "template": "welcome", "purpose": "transactional"})
    storage.sends.schedule(notifier._send("s1", "c1", "wf:w:c1:e1", T0, workflow=workflow,
                                          trigger="e1"))
    with SmtpServer() as smtp:
        sender = Sender(storage, _email_channel(smtp), SmsChannel(TwilioSettings("", "", "", "", 5)),
                        SenderSettings(), clock)
        assert sender.run_once() == {"failed": 1}
        assert smtp.messages == []
    send = storage.sends.collection.find_one({"_id": "wf:w:c1:e1"})
    assert send["status"] == "failed" and "not one valid address" in send["reason"]
    assert [a.get("outcome") for a in send.get("attempts") or []] == []  # never "calling"
    [event] = [e["message"] for e in send[OUTBOX_FIELD]
               if e["event_type"] == "notification.failed"]
    assert event["data"]["permanent"] is True


# -- store settings that head emails -------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("name", "Tea & Co\r\nBcc: x@evil.example"),
    ("name", "Tea\nCo"),
    ("from_email", "shop@example.com\r\nBcc: x@evil.example"),
    ("from_email", "shop@example.com, x@evil.example"),
    ("from_email", "not an address"),
    ("unsubscribe_mailto", "optout@shop.example\r\nBcc: x@evil.example"),
    ("unsubscribe_mailto", "optout@shop.example, x@evil.example"),
    ("sms_opt_out_text", "Reply STOP\r\nBcc: x@evil.example"),
])
def test_store_settings_with_line_breaks_or_two_senders_are_refused_and_not_stored(
        database, field, value):
    storage = NotificationsStorage(database)
    notifier = Notifier(storage, Clock(T0))
    with pytest.raises(ValidationError) as info:
        notifier.save_settings("s1", {"name": "Tea & Co", field: value})
    assert list(info.value.details["fields"]) == [field]
    assert storage.settings.collection.count_documents({}) == 0
    saved = notifier.save_settings("s1", {"name": "Tea, & Co", "from_email":
                                          "Tea & Co <shop@example.com>"})
    assert saved.from_email == "Tea & Co <shop@example.com>"


# -- the whole path: a signed webhook, and the settings route ------------------------------------
def test_a_signed_webhook_with_two_addresses_gives_a_customer_without_email(system):
    woo = system.shop.add_customer()
    body = json.loads(system.shop.webhook_body("customer.created", woo["id"]))
    body["email"] = body["billing"]["email"] = "a@example.com,x@evil.example"
    system.webhook("customer.created", body)
    reader = system.client("read")

    def synced():
        found = reader.get("/customers", params={"q": woo["last_name"]})
        items = found.json().get("items") if found.status_code == 200 else None
        return items or None

    [customer] = wait_until(synced, timeout=20, message="the customer synced")
    assert not customer["email"]  # no address at all, rather than two
    admin = system.client("admin")
    answer = admin.put("/notifications/settings", json={"name": "Tea\r\nBcc: x@evil.example"})
    assert answer.status_code == 400, answer.text
    assert "name" in answer.json()["errors"]
    assert "\r" not in admin.get("/notifications/settings").json()["name"]
