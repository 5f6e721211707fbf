"""Suppression on an in-memory MongoDB with the local SMTP server and Twilio stand-in: what
suppresses an address, what each kind blocks, the signed report door, lifting with a reason,
erasure, and the send log saying why a send was held and what the provider answered."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from services.notifications import email_reports
from services.notifications.channels import (EmailChannel, SmsChannel, SmtpSettings,
                                             TwilioSettings)
from services.notifications.notifier import Notifier
from services.notifications.policy import StoreSettings, decide
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from services.notifications.suppression import (Change, Suppressions, blocks,
                                                kind_for_failure)
from shared.errors import NotFound, ValidationError
from tests.support import Clock

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)  # noon UTC: outside quiet hours
SECRET = "report-secret-for-tests-0123456789"
STORE = "s1"
from services.notifications import links as ln

# Marketing email carries its unsubscribe link, so the sender needs a public address.
PUBLIC_LINKS = ln.PublicLinks(ln.LinkSigner("a-link-secret-for-tests-0123456789abcdef"),
                              "https://notify.shop.example")


@pytest.fixture
def storage(database):
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    return storage


def _sender(storage, smtp, twilio, clock) -> Sender:
    email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))
    sms = SmsChannel(TwilioSettings(twilio.account_sid, twilio.auth_token,
                                    twilio.phone_number, twilio.base_url, 5))
    return Sender(storage, email, sms, SenderSettings(retry_seconds=1, links=PUBLIC_LINKS), clock)


def _contact(storage, customer_id: str, email: str, phone: str = "+447700900123",
             marketing: bool = True) -> None:
    storage.contacts.apply(STORE, customer_id, "contact_at", T0 - timedelta(days=1), {
        "email": email, "phone": phone, "phone_key": phone.lstrip("+"), "first_name": "Ada",
        "last_name": "", "birthday": None, "country": "GB"})
    for purpose in ("email_marketing", "sms_marketing"):
        storage.contacts.apply(STORE, customer_id, f"consent_at.{purpose}", T0 - timedelta(days=1),
                               {f"consent.{purpose}": {"granted": marketing, "source": "test",
                                                       "at": T0}})


def _schedule(storage, customer_id: str, name: str, channel: str = "email",
              purpose: str = "marketing", template: str | None = None) -> str:
    send_id = f"bulk:{name}:{customer_id}"
    storage.sends.schedule({
        "_id": send_id, "store_id": STORE, "customer_id": customer_id, "workflow_id": None,
        "bulk_id": name, "trigger_event_id": None, "channel": channel,
        "template": template or ("welcome" if channel == "email" else "win_back_sms"),
        "purpose": purpose, "cancel": [], "due_at": T0, "scheduled_at": T0})
    return send_id


def _send(storage, send_id: str) -> dict:
    return storage.sends.collection.find_one({"_id": send_id})


# -- the rules ------------------------------------------------------------------------------------

def test_which_failures_suppress_and_what_each_kind_blocks():
    assert kind_for_failure("email", 550, recipient_refused=True) == "smtp_refusal"
    assert kind_for_failure("email", 553, recipient_refused=True) == "smtp_refusal"
    refused = "recipient refused: 550 {} <a@example.com>: ..."
    for enhanced in ("5.1.1", "5.1.10", "5.2.1"):  # no such user, null MX, mailbox disabled
        assert kind_for_failure("email", 550, True, refused.format(enhanced)) == "smtp_refusal"
    # policy (a relay refusing us: it would refuse every address), the sender's address, a
    # full mailbox, the message's size: not about this recipient
    for enhanced in ("5.7.1", "5.1.7", "5.1.8", "5.2.2", "5.2.3", "5.4.1"):
        assert kind_for_failure("email", 550, True, refused.format(enhanced)) is None, enhanced
    assert kind_for_failure("email", 554, recipient_refused=True) is None
    # 552 to RCPT is "try later" (RFC 5321 4.5.3.1.10); a 5xx after DATA judged the message
    assert kind_for_failure("email", 552, recipient_refused=True) is None
    assert kind_for_failure("email", 554, recipient_refused=False) is None
    assert kind_for_failure("email", 450, recipient_refused=True) is None
    assert kind_for_failure("sms", 21610, recipient_refused=False) == "sms_unsubscribed"
    assert kind_for_failure("sms", 21211, recipient_refused=False) is None
    complaint = {"active": True, "kinds": ["complaint"]}
    assert blocks(complaint, "marketing") and not blocks(complaint, "transactional")
    for kind in ("bounce", "smtp_refusal", "sms_unsubscribed"):
        assert blocks({"active": True, "kinds": [kind]}, "transactional")
    assert not blocks({"active": False, "kinds": []}, "marketing")
    assert not blocks(None, "marketing")


def test_a_suppressed_address_is_refused_before_consent_and_caps_with_its_reason():
    contact = {"status": "active", "email": "a@example.com",
               "consent": {"email_marketing": {"granted": True}}}
    decision = decide("email", "transactional", contact, StoreSettings(), T0, 0,
                      suppressed="the address bounced")
    assert (decision.action, decision.code) == ("refuse", "suppressed")
    assert decision.reason == "suppressed: the address bounced"
    assert decide("email", "marketing", {**contact, "consent": {}}, StoreSettings(), T0,
                  0).code == "no_consent"
    assert decide("email", "marketing", contact, StoreSettings(weekly_marketing_cap=1), T0,
                  1).code == "weekly_cap"
    held = decide("sms", "marketing", {**contact, "phone": "+1", "consent": {
                      "sms_marketing": {"granted": True}}},
                  StoreSettings(quiet_start="11:00", quiet_end="13:00"), T0, 0)
    assert (held.action, held.code) == ("hold", "quiet_hours")


# -- at send time ---------------------------------------------------------------------------------

def test_a_550_at_send_time_suppresses_the_address_and_the_next_send_is_held(
        storage, smtp, twilio):
    clock = Clock(T0)
    sender = _sender(storage, smtp, twilio, clock)
    _contact(storage, "c1", "Gone@Example.com")
    smtp.reject_recipient("gone@example.com", 550)
    first = _schedule(storage, "c1", "one")
    assert sender.run_once() == {"failed": 1}
    failed = _send(storage, first)
    assert "550" in failed["reason"] and failed["provider_error"] == failed["reason"]
    record = storage.suppressions.get(STORE, "email", "gone@example.com")
    assert record["active"] and record["kinds"] == ["smtp_refusal"]
    assert record["history"][0]["source"] == "send" and "550" in record["history"][0]["detail"]
    # the next one, transactional too, is held back without calling the server
    smtp.accept_recipient("gone@example.com")
    second = _schedule(storage, "c1", "two", purpose="transactional")
    assert sender.run_once() == {"refused": 1}
    held = _send(storage, second)
    assert held["held_reason"] == "suppressed"
    assert held["reason"] == "suppressed: the mail server refused the address"
    assert held["attempts"] == [] and smtp.received == 0
    sender.email.close()


def test_a_refusal_that_is_not_about_the_address_suppresses_nothing(storage, smtp, twilio):
    sender = _sender(storage, smtp, twilio, Clock(T0))
    _contact(storage, "c1", "full@example.com")
    smtp.fail_data(1, 554)  # the message refused, not the address
    _schedule(storage, "c1", "one")
    assert sender.run_once() == {"failed": 1}
    assert storage.suppressions.collection.count_documents({}) == 0
    _schedule(storage, "c1", "two")
    assert sender.run_once() == {"sent": 1}
    sender.email.close()


def test_twilio_21610_at_send_time_suppresses_sms_to_the_number(storage, smtp, twilio):
    sender = _sender(storage, smtp, twilio, Clock(T0))
    _contact(storage, "c1", "a@example.com", phone="+447700900555")
    twilio.unsubscribe("+447700900555")
    _schedule(storage, "c1", "one", channel="sms", purpose="transactional")
    assert sender.run_once() == {"failed": 1}
    record = storage.suppressions.get(STORE, "sms", "+44 7700 900555")
    assert record["active"] and record["kinds"] == ["sms_unsubscribed"]
    second = _schedule(storage, "c1", "two", channel="sms", purpose="transactional")
    assert sender.run_once() == {"refused": 1}
    assert _send(storage, second)["held_reason"] == "suppressed"
    assert len(twilio.messages) == 0
    # email to the same person is not touched by an SMS suppression
    _schedule(storage, "c1", "three")
    assert sender.run_once() == {"sent": 1}
    sender.email.close()


def test_the_send_log_keeps_the_providers_reason_and_why_a_send_is_held(
        storage, smtp, twilio):
    clock = Clock(T0)
    sender = _sender(storage, smtp, twilio, clock)
    _contact(storage, "c1", "a@example.com")
    _contact(storage, "c2", "b@example.com", marketing=False)
    smtp.refuse_connections(1)
    retried = _schedule(storage, "c1", "one")
    refused = _schedule(storage, "c2", "one")
    assert sender.run_once() == {"retry": 1, "refused": 1}
    waiting = _send(storage, retried)
    assert waiting["status"] == "scheduled" and "421" in waiting["provider_error"]
    assert _send(storage, refused)["held_reason"] == "no_consent"
    clock.now = T0 + timedelta(seconds=5)
    assert sender.run_once() == {"sent": 1}
    sent = _send(storage, retried)
    assert "provider_error" not in sent and "held_reason" not in sent  # now it went
    # quiet hours: held, saying so, while it waits
    Notifier(storage, clock).save_settings(STORE, {"quiet_start": "11:00", "quiet_end": "13:00"})
    quiet = _schedule(storage, "c1", "two", channel="sms")  # quiet hours hold marketing only
    assert sender.run_once() == {"held": 1}
    doc = _send(storage, quiet)
    assert doc["status"] == "scheduled" and doc["held_reason"] == "quiet_hours"
    sender.email.close()


# -- later reports --------------------------------------------------------------------------------

def _report(**fields) -> bytes:
    body = {"store_id": STORE, "email": "ada@example.com", "kind": "bounce",
            "time": (T0 - timedelta(minutes=5)).isoformat(), **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def _receive(storage, body: bytes, signature: str | None = "sign", known=lambda s: s == STORE):
    if signature == "sign":
        signature = email_reports.signature_of(SECRET, body)
    return email_reports.receive(Suppressions(storage.suppressions), known, SECRET, body,
                                 signature, T0)


def test_a_signed_report_suppresses_once_however_often_it_comes(storage):
    body = _report(detail="550 5.1.1 user unknown")
    assert _receive(storage, body) == {"changed": True, "suppressed": True, "kinds": ["bounce"]}
    assert _receive(storage, body)["changed"] is False  # a relay's retry
    record = storage.suppressions.get(STORE, "email", "ADA@example.com")
    assert [h["action"] for h in record["history"]] == ["suppressed"]
    assert record["history"][0]["detail"] == "550 5.1.1 user unknown"


def test_a_complaint_stops_marketing_but_not_transactional_email(storage, smtp, twilio):
    _receive(storage, _report(kind="complaint"))
    sender = _sender(storage, smtp, twilio, Clock(T0))
    _contact(storage, "c1", "ada@example.com")
    marketing = _schedule(storage, "c1", "sale")
    receipt = _schedule(storage, "c1", "receipt", purpose="transactional")
    assert sender.run_once() == {"refused": 1, "sent": 1}
    assert _send(storage, marketing)["held_reason"] == "suppressed"
    assert _send(storage, receipt)["status"] == "sent"
    sender.email.close()


@pytest.mark.parametrize("signature", [None, "", "sha256=" + "0" * 64, "forged"])
def test_a_report_without_its_signature_is_refused_and_changes_nothing(storage, signature):
    with pytest.raises(email_reports.Refused) as refused:
        _receive(storage, _report(), signature=signature)
    assert refused.value.status == 401
    assert storage.suppressions.collection.count_documents({}) == 0


def test_a_report_signed_with_another_secret_or_for_another_body_is_refused(storage):
    body = _report()
    for signature in (email_reports.signature_of("another-secret", body),
                      email_reports.signature_of(SECRET, _report(email="eve@example.com"))):
        with pytest.raises(email_reports.Refused) as refused:
            _receive(storage, body, signature=signature)
        assert refused.value.status == 401
    with pytest.raises(email_reports.Refused) as unset:  # no secret: nothing can be verified
        email_reports.receive(Suppressions(storage.suppressions), lambda s: True, "", body,
                              email_reports.signature_of("", body), T0)
    assert unset.value.status == 401
    assert storage.suppressions.collection.count_documents({}) == 0


@pytest.mark.parametrize("body, field", [
    (b"not json", "body"), (b"[1]", "body"),
    (_report(email="a@example.com,b@example.com"), "email"), (_report(email=None), "email"),
    (_report(kind="soft"), "kind"), (_report(time="yesterday"), "time"),
    (_report(time="2026-11-29T12:00:00"), "time"),  # no offset
    (_report(time=(T0 + timedelta(hours=1)).isoformat()), "time"),
    (_report(store_id=None), "store_id"), (_report(store_id="a b"), "store_id"),
    (_report(detail="x" * 501), "detail"), (_report(detail="two\nlines"), "detail"),
    (_report(extra=1), "extra"), (_report(store_id="unknown-store"), "store_id"),
])
def test_a_malformed_report_is_refused_naming_the_field_and_stores_nothing(storage, body, field):
    with pytest.raises(email_reports.Refused) as refused:
        _receive(storage, body)
    assert refused.value.status == 400 and field in refused.value.fields
    assert storage.suppressions.collection.count_documents({}) == 0


# -- lifting, lists, erasure ----------------------------------------------------------------------

def test_an_operator_lifts_a_suppression_with_a_reason_and_the_history_keeps_both(
        storage, smtp, twilio):
    suppressions = Suppressions(storage.suppressions)
    body = _report()
    _receive(storage, body)
    for reason in (None, "", "  ", "x" * 501, "line\nbreak"):
        with pytest.raises(ValidationError) as refused:
            suppressions.lift(STORE, "email", "ada@example.com", reason, "ops", T0)
        assert "reason" in refused.value.details["fields"]
    assert storage.suppressions.get(STORE, "email", "ada@example.com")["active"]
    lifted = suppressions.lift(STORE, "email", "Ada@Example.com", "mailbox fixed, per phone call",
                               "key ops-1", T0 + timedelta(minutes=1))
    assert lifted["active"] is False and lifted["blocks"] == "nothing"
    assert [(h["action"], h.get("actor"), h.get("detail")) for h in lifted["history"]] == [
        ("suppressed", None, None), ("lifted", "key ops-1", "mailbox fixed, per phone call")]
    with pytest.raises(NotFound):  # lifting twice: there is nothing to lift
        suppressions.lift(STORE, "email", "ada@example.com", "again", "ops", T0)
    # the same old report again, or another report dated before the lift, does not undo it
    _receive(storage, body)
    _receive(storage, _report(kind="complaint", time=(T0 - timedelta(minutes=2)).isoformat()))
    record = storage.suppressions.get(STORE, "email", "ada@example.com")
    assert not record["active"]
    assert [h["action"] for h in record["history"]] == ["suppressed", "lifted", "reported"]
    # and the address is sent to again
    sender = _sender(storage, smtp, twilio, Clock(T0 + timedelta(minutes=2)))
    _contact(storage, "c1", "ada@example.com")
    _schedule(storage, "c1", "after")
    assert sender.run_once() == {"sent": 1}
    sender.email.close()
    # a new bounce after the lift suppresses again
    assert _receive(storage, _report(time=(T0 + timedelta(minutes=3)).isoformat()))["changed"]
    assert storage.suppressions.get(STORE, "email", "ada@example.com")["active"]


def test_the_list_pages_is_per_store_and_hides_lifted_ones_unless_asked(storage):
    suppressions = Suppressions(storage.suppressions)
    for n in range(5):
        suppressions.suppress(STORE, "bounce", f"p{n}@example.com",
                              Change("suppressed", T0, "bounce", "report"))
    suppressions.suppress("s2", "bounce", "p0@example.com",
                          Change("suppressed", T0, "bounce", "report"))
    suppressions.lift(STORE, "email", "p4@example.com", "fixed", "ops", T0 + timedelta(seconds=1))
    seen, cursor = [], None
    while True:
        page = suppressions.page(STORE, None, None, False, 2, cursor)
        seen += [item["address"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"p{n}@example.com" for n in range(4)]
    assert len(suppressions.page(STORE, None, None, True, 10, None)["items"]) == 5
    [found] = suppressions.page(STORE, None, "P1@example.com", False, 10, None)["items"]
    assert found["address"] == "p1@example.com" and found["blocks"] == "all"
    assert [i["address"] for i in suppressions.page("s2", None, None, True, 10, None)["items"]] \
        == ["p0@example.com"]
    assert suppressions.page("s3", None, None, True, 10, None)["items"] == []
    with pytest.raises(NotFound):  # store s3 cannot lift s1's
        suppressions.lift("s3", "email", "p0@example.com", "mine now", "ops", T0)
    assert suppressions.blocking(STORE, "email", "p0@example.com", "marketing")


def test_erasure_forgets_the_address_but_it_stays_suppressed(storage):
    suppressions = Suppressions(storage.suppressions)
    suppressions.suppress(STORE, "smtp_refusal", "ada@example.com", Change(
        "suppressed", T0, "smtp_refusal", "send", "550 5.1.1 <ada@example.com>: unknown"))
    suppressions.lift(STORE, "email", "ada@example.com", "ada@example.com fixed her mailbox", "ops",
                      T0 + timedelta(seconds=1))
    suppressions.suppress(STORE, "bounce", "ada@example.com", Change(
        "suppressed", T0 + timedelta(seconds=2), "bounce", "report", "<ada@example.com> bounced"))
    assert suppressions.forget_addresses(STORE, [("email", "ada@example.com"),
                                                 ("sms", None)]) == 1
    doc = storage.suppressions.collection.find_one()
    # The keyed digests are hex, and hex can spell "ada": look past them, at everything else.
    assert "ada" not in re.sub(r"[0-9a-f]{32,}", "<digest>", json.dumps(doc, default=str))
    assert doc["address_erased"] is True
    assert suppressions.blocking(STORE, "email", "ada@example.com", "transactional")


def test_the_digest_is_keyed_per_store_and_an_export_shows_the_persons_suppressions(storage):
    """A plain hash of an address could be reversed by hashing a list of addresses: the key
    is the store's own, random, so the same address has another digest in another store."""
    suppressions = Suppressions(storage.suppressions)
    for store in (STORE, "s2"):
        suppressions.suppress(store, "bounce", "ada@example.com",
                              Change("suppressed", T0, "bounce", "report"))
    ids = sorted(d["_id"].split(":")[-1] for d in storage.suppressions.collection.find())
    assert ids[0] != ids[1]
    assert hashlib.sha256(b"email:ada@example.com").hexdigest() not in ids
    [exported] = suppressions.of_addresses(STORE, [("email", "ADA@example.com"), ("sms", None)])
    assert exported["kinds"] == ["bounce"]


def test_the_console_labels_every_held_reason():
    from services.gateway.console.admin_views import HELD_LABELS
    from shared.send_log import HELD_REASONS

    assert set(HELD_LABELS) == set(HELD_REASONS)


def test_cancelled_sends_say_so_whichever_way_they_were_cancelled(storage, smtp, twilio):
    clock = Clock(T0)
    sender = _sender(storage, smtp, twilio, clock)
    notifier = Notifier(storage, clock)
    _contact(storage, "c1", "a@example.com")
    for workflow_id in ("cart", "gone"):
        notifier.save_workflow(STORE, {
            "workflow_id": workflow_id, "name": workflow_id,
            "trigger": {"event": "customer.tagged", "tag": "abandoned-cart"},
            "channel": "email", "template": "abandoned_cart", "purpose": "marketing",
            "cancel": [{"if": "tag_removed", "tag": "abandoned-cart"}]})
        storage.sends.schedule(notifier._send(
            STORE, "c1", f"wf:{workflow_id}:c1:e1",
            T0 if workflow_id == "cart" else T0 + timedelta(days=1),
            workflow=notifier.workflows(STORE)[-1], trigger="e1"))
    notifier.delete_workflow(STORE, "gone")
    assert sender.run_once() == {"cancelled": 1}  # the contact has no abandoned-cart tag
    for send_id, reason in (("wf:cart:c1:e1", "tag abandoned-cart was removed"),
                            ("wf:gone:c1:e1", "workflow deleted")):
        doc = _send(storage, send_id)
        assert (doc["status"], doc["held_reason"], doc["reason"]) == (
            "cancelled", "cancelled", reason)
    sender.email.close()


def test_a_record_is_keyed_by_the_hmac_of_its_normalised_address_under_the_stores_key(storage):
    """Records already stored are found only while the key is computed exactly so."""
    storage.suppressions.keys.insert_one({"_id": STORE, "key": "ab" * 32})
    digest = hmac.new(bytes.fromhex("ab" * 32), b"sms\x00447700900555",
                      hashlib.sha256).hexdigest()
    assert storage.suppressions.key(STORE, "sms", "+44 7700 900555") == f"{STORE}:sms:{digest}"


def test_the_storage_indexes_suppressions_for_lookup_and_listing(storage):
    keys = [index["key"] for index in storage.suppressions.collection.index_information().values()]
    assert [("store_id", 1), ("channel", 1), ("address", 1)] in keys
    assert [("store_id", 1), ("active", 1), ("_id", 1)] in keys
