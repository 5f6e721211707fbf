"""The links in messages, on an in-memory MongoDB with the local SMTP server and Twilio
stand-in: signed tokens, what a marketing email and SMS carry (and a transactional one does
not), one-click unsubscribe and the preference page, and email double opt-in."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.notifications import links as ln
from services.notifications.channels import EmailChannel, SmsChannel, SmtpSettings, TwilioSettings
from services.notifications.notifier import Notifier
from services.notifications.opt_out import MessageLinks, list_unsubscribe_headers, with_sms_opt_out
from services.notifications.preference_door import PreferenceDoor, Unavailable
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from services.notifications.subscriptions import Subscriptions, consent_state
from shared.errors import ValidationError
from shared.events import build_event, contract
from shared.outbox import OUTBOX_FIELD
from tests.support import storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
SECRET = "a-link-secret-for-tests-0123456789abcdef"
PUBLIC = "https://notify.shop.example"
STORE, CUSTOMER = "s1", "c-3f2a"


def signer() -> ln.LinkSigner:
    return ln.LinkSigner(SECRET)


# -- tokens -------------------------------------------------------------------------------------
def test_a_token_names_its_link_id_for_its_purpose_only():
    link_id = ln.new_link_id()
    token = signer().token(ln.UNSUBSCRIBE, link_id)
    assert signer().link_id(ln.UNSUBSCRIBE, token) == link_id
    assert signer().link_id(ln.CONFIRM_EMAIL, token) is None  # not a confirmation link
    assert ln.LinkSigner("another-secret-of-enough-length-0123456789").link_id(
        ln.UNSUBSCRIBE, token) is None


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature altered
    lambda t: ("A" if t[0] != "A" else "B") + t[1:],  # the link id altered
    lambda t: t[:-2],  # cut short
    lambda t: t + "A",  # too long
    lambda t: t.replace(t[5], "é", 1),  # not ASCII
    lambda t: "",
])
def test_an_altered_token_names_nothing(mangle):
    token = signer().token(ln.UNSUBSCRIBE, ln.new_link_id())
    assert signer().link_id(ln.UNSUBSCRIBE, mangle(token)) is None


def test_the_secret_policy():
    with pytest.raises(ValueError, match="at least 32"):
        ln.LinkSigner("short")
    with pytest.raises(ValueError, match="NOTIFY_LINK_SECRET is not set"):
        ln.signer_from_settings("", "https://notify.shop.example")  # a real deployment
    # Elsewhere (a laptop, the tests): a random secret of this process.
    one, two = ln.signer_from_settings("", "http://127.0.0.1:8001"), ln.signer_from_settings("", "")
    link_id = ln.new_link_id()
    assert two.link_id(ln.UNSUBSCRIBE, one.token(ln.UNSUBSCRIBE, link_id)) is None


# -- what messages carry --------------------------------------------------------------------------
def test_list_unsubscribe_headers_follow_rfc_8058():
    links = MessageLinks(unsubscribe_url=f"{PUBLIC}/unsubscribe/tok")
    assert list_unsubscribe_headers(links) == {
        "List-Unsubscribe": f"<{PUBLIC}/unsubscribe/tok>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert list_unsubscribe_headers(links, "opt+out@shop.example")["List-Unsubscribe"] == (
        f"<{PUBLIC}/unsubscribe/tok>, <mailto:opt%2Bout@shop.example?subject=unsubscribe>")
    assert list_unsubscribe_headers(MessageLinks()) == {}


def test_sms_opt_out_text_is_appended_once():
    assert with_sms_opt_out("Sale today!", "Reply STOP to opt out") == \
        "Sale today! Reply STOP to opt out"
    assert with_sms_opt_out("Sale! Reply STOP to opt out", "Reply STOP to opt out") == \
        "Sale! Reply STOP to opt out"
    assert with_sms_opt_out("Sale today!", "") == "Sale today!"


def _contact(storage, customer_id=CUSTOMER, email="ada@example.com", phone="+447700900123",
             email_consent=True, sms_consent=True):
    storage.contacts.apply(STORE, customer_id, "contact_at", T0, {
        "email": email, "phone": phone, "phone_key": "".join(c for c in phone if c.isdigit()),
        "first_name": "Ada", "last_name": "L", "birthday": None, "country": "GB"})
    for purpose, granted in (("email_marketing", email_consent), ("sms_marketing", sms_consent)):
        storage.contacts.apply(STORE, customer_id, f"consent_at.{purpose}", T0, {
            f"consent.{purpose}": {"granted": granted, "source": "checkout", "at": T0}})


def _schedule(storage, notifier, send_id, channel="email", template="win_back",
              purpose="marketing", customer_id=CUSTOMER):
    storage.sends.schedule(notifier._send(STORE, customer_id, send_id, T0, bulk={
        "bulk_id": send_id, "channel": channel, "template": template, "purpose": purpose}))


def _sender(storage, clock, smtp, twilio=None, links=True) -> Sender:
    email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))
    sms = SmsChannel(TwilioSettings(twilio.account_sid, twilio.auth_token, twilio.phone_number,
                                    twilio.base_url, 5) if twilio else
                     TwilioSettings("", "", "", "", 5))
    return Sender(storage, email, sms, SenderSettings(
        links=ln.PublicLinks(signer(), PUBLIC) if links else None), clock)


def test_a_marketing_email_carries_its_recipients_link_and_a_transactional_one_none(
        database, smtp):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_settings(STORE, {"name": "Tea & Co", "url": "https://tea.example",
                                   "unsubscribe_mailto": "optout@tea.example"})
    _contact(storage)
    _schedule(storage, notifier, "m1")
    _schedule(storage, notifier, "t1", template="welcome", purpose="transactional")
    sender = _sender(storage, clock, smtp)
    assert sender.run_once() == {"sent": 2}
    mails = {m["Subject"]: m for m in smtp.wait_for(2)}
    marketing, transactional = mails["We miss you, Ada"], mails["Welcome to Tea & Co, Ada!"]
    header = marketing["List-Unsubscribe"]
    url = header.split(">")[0].lstrip("<")
    assert url.startswith(f"{PUBLIC}/unsubscribe/")
    assert header.endswith("<mailto:optout@tea.example?subject=unsubscribe>")
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = url.rsplit("/", 1)[1]
    contact = storage.contacts.by_link_id(signer().link_id(ln.UNSUBSCRIBE, token))
    assert contact["customer_id"] == CUSTOMER
    # Nobody in clear: the token is the contact's random link id and its MAC, nothing else
    # (asserted on its make-up: a random token may contain "s1" by chance).
    assert token == signer().token(ln.UNSUBSCRIBE, contact["link_id"])
    assert contact["link_id"] not in (CUSTOMER, STORE) and CUSTOMER not in url
    assert url in marketing.get_body(("plain",)).get_content()
    assert url in marketing.get_body(("html",)).get_content()
    assert "/preferences/" in marketing.get_body(("plain",)).get_content()
    assert transactional["List-Unsubscribe"] is None
    assert transactional["List-Unsubscribe-Post"] is None
    assert "nsubscribe" not in transactional.get_body(("plain",)).get_content()
    assert "nsubscribe" not in transactional.get_body(("html",)).get_content()
    # The next marketing email to the same person carries the same link.
    _schedule(storage, notifier, "m2")
    assert sender.run_once() == {"sent": 1}
    assert smtp.wait_for(3)[-1]["List-Unsubscribe"] == header


def test_a_store_template_without_the_link_still_carries_it(database, smtp):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_template(STORE, {"slug": "promo", "channel": "email", "subject": "Sale",
                                   "text": "Everything half price.", "html": "<p>Half price</p>"})
    _contact(storage)
    _schedule(storage, notifier, "m1", template="promo")
    assert _sender(storage, clock, smtp).run_once() == {"sent": 1}
    [mail] = smtp.wait_for(1)
    url = mail["List-Unsubscribe"].strip("<>")
    assert f"Unsubscribe: {url}" in mail.get_body(("plain",)).get_content()
    assert f'<a href="{url}">Unsubscribe</a>' in mail.get_body(("html",)).get_content()


def test_no_public_address_no_marketing_email(database, smtp):
    """Without NOTIFY_PUBLIC_URL no link can be made: a marketing email would have no way
    out, so it fails for good, saying why; a transactional one still goes."""
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    _contact(storage)
    _schedule(storage, notifier, "m1")
    _schedule(storage, notifier, "t1", template="welcome", purpose="transactional")
    assert _sender(storage, clock, smtp, links=False).run_once() == {"failed": 1, "sent": 1}
    assert "NOTIFY_PUBLIC_URL" in storage.sends.collection.find_one({"_id": "m1"})["reason"]
    [mail] = smtp.wait_for(1)
    assert mail["Subject"].startswith("Welcome")


def test_a_marketing_sms_ends_with_the_stores_opt_out_text(database, smtp, twilio):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_template(STORE, {"slug": "flash", "channel": "sms", "body": "Flash sale today"})
    notifier.save_settings(STORE, {"name": "Tea", "quiet_start": "00:00", "quiet_end": "00:00",
                                   "sms_opt_out_text": "Reply STOP to opt out"})
    _contact(storage)
    _schedule(storage, notifier, "m1", channel="sms", template="flash")
    _schedule(storage, notifier, "t1", channel="sms", template="flash", purpose="transactional")
    assert _sender(storage, clock, smtp, twilio).run_once() == {"sent": 2}
    assert sorted(m.body for m in twilio.messages) == [
        "Flash sale today", "Flash sale today Reply STOP to opt out"]


def test_the_static_unsubscribe_url_setting_is_retired():
    from services.notifications.policy import load_settings

    with pytest.raises(ValidationError) as info:
        load_settings({"unsubscribe_url": "https://shop.example/u"}, new=True)
    assert "no longer used" in info.value.details["fields"]["unsubscribe_url"][0]
    assert load_settings({"name": "Old", "unsubscribe_url": "https://shop.example/u"}).name == "Old"
    for field, value in (("unsubscribe_mailto", "a@x.example, b@x.example"),
                         ("sms_opt_out_text", "x" * 61), ("email_double_opt_in", "yes")):
        with pytest.raises(ValidationError) as info:
            load_settings({field: value}, new=True)
        assert list(info.value.details["fields"]) == [field]


# -- the door -------------------------------------------------------------------------------------
class FakeGdpr:
    def __init__(self, down: bool = False) -> None:
        self.filed: list[dict] = []
        self.down = down

    def __call__(self, contact) -> str:
        if self.down:
            raise Unavailable("gdpr is down")
        self.filed.append({"store_id": contact["store_id"], "email": contact["email"]})
        return f"req-{len(self.filed)}"


def _door(storage, clock, gdpr=None, max_body=2048) -> PreferenceDoor:
    return PreferenceDoor(storage, signer(), lambda store_id: "Tea & Co", gdpr or FakeGdpr(),
                          clock, max_body_bytes=max_body)


def _post(form: dict | None = None, data: bytes | None = None, **kwargs) -> Request:
    builder = EnvironBuilder(method="POST", data=data if data is not None else (form or {}),
                             **kwargs)
    return Request(builder.get_environ())


def _token(storage, customer_id=CUSTOMER, kind=ln.UNSUBSCRIBE) -> str:
    return signer().token(kind, storage.contacts.link_id(STORE, customer_id, ln.new_link_id()))


def _owed(storage, customer_id=CUSTOMER) -> list[dict]:
    doc = storage.contacts.collection.find_one({"_id": f"{STORE}:{customer_id}"})
    return [e["message"] for e in doc.get(OUTBOX_FIELD) or []]


@pytest.fixture
def door_setup(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    _contact(storage)
    return storage, clock


def test_opening_the_link_changes_nothing_and_the_post_unsubscribes_once(door_setup):
    storage, clock = door_setup
    door, token = _door(storage, clock), _token(storage)
    page = door.unsubscribe_page(token)
    assert page.response.status_code == 200 and page.touched == ()
    html = page.response.get_data(as_text=True)
    assert '<html lang="en">' in html and f'action="/unsubscribe/{token}"' in html
    assert 'name="List-Unsubscribe" value="One-Click"' in html
    assert page.response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.response.headers["Content-Security-Policy"]
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "granted"
    assert _owed(storage) == []
    clock.now = T0 + timedelta(minutes=1)
    done = door.unsubscribe(_post({"List-Unsubscribe": "One-Click"}), token)
    assert done.response.status_code == 200
    assert done.touched == (("contacts", f"{STORE}:{CUSTOMER}"),)
    contact = storage.contacts.get(STORE, CUSTOMER)
    assert consent_state(contact, "email_marketing") == "off"
    assert consent_state(contact, "sms_marketing") == "granted"  # that channel only
    [event] = _owed(storage)
    assert event["event_type"] == "consent.changed"
    assert event["data"] | {} == {**event["data"], "purpose": "email_marketing", "granted": False,
                                  "source": "unsubscribe_link", "origin": "notifications",
                                  "pending": False}
    contract("consent.changed").loader().load(event["data"])
    again = door.unsubscribe(_post({"List-Unsubscribe": "One-Click"}), token)  # idempotent
    assert again.response.status_code == 200 and again.touched == ()
    assert len(_owed(storage)) == 1


@pytest.mark.parametrize("mangle", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
                                    lambda t: "x" * 44, lambda t: "nothing"])
def test_a_tampered_or_unknown_token_is_404_and_changes_nothing(door_setup, mangle):
    storage, clock = door_setup
    door, token = _door(storage, clock), mangle(_token(storage))
    for answer in (door.unsubscribe_page(token), door.unsubscribe(_post({}), token),
                   door.preferences_page(token), door.save_preferences(_post({}), token),
                   door.forget(_post({}), token), door.confirm(_post({}), token),
                   door.confirm_page(token)):
        assert answer.response.status_code == 404 and answer.touched == ()
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "granted"
    assert _owed(storage) == []


def test_an_unsubscribe_token_does_not_confirm_and_a_confirmation_token_does_not_unsubscribe(
        door_setup):
    storage, clock = door_setup
    door = _door(storage, clock)
    assert door.confirm(_post({}), _token(storage)).response.status_code == 404
    confirm_token = _token(storage, kind=ln.CONFIRM_EMAIL)
    assert door.unsubscribe(_post({}), confirm_token).response.status_code == 404
    assert _owed(storage) == []


def test_an_erased_contacts_link_is_404(door_setup):
    storage, clock = door_setup
    token = _token(storage)
    Notifier(storage, clock).erase(STORE, [CUSTOMER], "req-1")
    assert _door(storage, clock).unsubscribe(_post({}), token).response.status_code == 404


def test_bodies_are_bounded_and_fields_named(door_setup):
    storage, clock = door_setup
    door, token = _door(storage, clock, max_body=256), _token(storage)
    big = _post(data=b"List-Unsubscribe=One-Click&x=" + b"a" * 1000,
                content_type="application/x-www-form-urlencoded")
    assert door.unsubscribe(big, token).response.status_code == 413
    odd = door.save_preferences(_post({"email_marketing": "on", "admin": "1"}), token)
    assert odd.response.status_code == 400 and "admin" in odd.response.get_data(as_text=True)
    bad = door.save_preferences(_post({"email_marketing": "yes please"}), token)
    assert bad.response.status_code == 400 and "email_marketing" in bad.response.get_data(
        as_text=True)
    wrong = door.unsubscribe(_post({"List-Unsubscribe": "Later"}), token)
    assert wrong.response.status_code == 400
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "granted"
    assert _owed(storage) == []


def test_a_multipart_one_click_post_unsubscribes(door_setup):
    """RFC 8058 says a mail client SHOULD post multipart/form-data."""
    storage, clock = door_setup
    request = _post({"List-Unsubscribe": "One-Click"}, content_type="multipart/form-data")
    answer = _door(storage, clock).unsubscribe(request, _token(storage))
    assert answer.response.status_code == 200
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "off"


def test_the_preference_page_sets_each_channel(door_setup):
    storage, clock = door_setup
    door, token = _door(storage, clock), _token(storage)
    html = door.preferences_page(token).response.get_data(as_text=True)
    assert '<label for="email_marketing">' in html and '<label for="sms_marketing">' in html
    assert f'action="/preferences/{token}"' in html and f'action="/forget/{token}"' in html
    clock.now = T0 + timedelta(minutes=1)
    answer = door.save_preferences(_post({"email_marketing": "on"}), token)  # SMS left out
    contact = storage.contacts.get(STORE, CUSTOMER)
    assert consent_state(contact, "email_marketing") == "granted"
    assert consent_state(contact, "sms_marketing") == "off"
    assert [(e["data"]["purpose"], e["data"]["granted"], e["data"]["source"])
            for e in _owed(storage)] == [("sms_marketing", False, "preference_page")]
    assert answer.touched
    clock.now = T0 + timedelta(minutes=2)
    door.save_preferences(_post({"email_marketing": "on", "sms_marketing": "on"}), token)
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "sms_marketing") == "granted"
    assert len(_owed(storage)) == 2


def test_forget_me_files_one_erasure_request_and_stops_marketing(door_setup):
    storage, clock = door_setup
    gdpr = FakeGdpr()
    door, token = _door(storage, clock, gdpr), _token(storage)
    clock.now = T0 + timedelta(minutes=1)
    answer = door.forget(_post({}), token)
    assert answer.response.status_code == 200 and "req-1" in answer.response.get_data(as_text=True)
    assert gdpr.filed == [{"store_id": STORE, "email": "ada@example.com"}]
    contact = storage.contacts.get(STORE, CUSTOMER)
    assert consent_state(contact, "email_marketing") == consent_state(contact, "sms_marketing") \
        == "off"
    again = door.forget(_post({}), token)
    assert "req-1" in again.response.get_data(as_text=True) and len(gdpr.filed) == 1


def test_forget_me_with_gdpr_down_is_503_and_changes_nothing(door_setup):
    storage, clock = door_setup
    answer = _door(storage, clock, FakeGdpr(down=True)).forget(_post({}), _token(storage))
    assert answer.response.status_code == 503 and answer.touched == ()
    contact = storage.contacts.get(STORE, CUSTOMER)
    assert "forget_request" not in contact
    assert consent_state(contact, "email_marketing") == "granted" and _owed(storage) == []


# -- double opt-in ----------------------------------------------------------------------------------
def _granted_at_checkout(at: datetime):
    return build_event("consent.changed", store_id=STORE, occurred_at=at, data={
        "customer_id": CUSTOMER, "purpose": "email_marketing", "granted": True,
        "source": "checkout", "changed_at": at.isoformat(), "origin": "gdpr", "note": ""})


def test_double_opt_in_holds_a_grant_until_the_confirmation_link_is_used(database, smtp):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_settings(STORE, {"name": "Tea & Co", "email_double_opt_in": True})
    _contact(storage, email_consent=False)
    clock.now = T0 + timedelta(minutes=1)
    grant = _granted_at_checkout(clock.now)
    notifier.apply(grant)
    assert notifier.touched == [("contacts", f"{STORE}:{CUSTOMER}")]
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "pending"
    [held] = _owed(storage)
    assert held["data"]["pending"] is True and held["data"]["granted"] is False
    # Later than the grant, so gdpr's record moves on to it.
    assert datetime.fromisoformat(held["data"]["changed_at"]) > clock.now
    notifier.apply(grant)  # redelivered: no second confirmation
    Notifier(storage, clock).apply(_granted_at_checkout(clock.now + timedelta(seconds=5)))
    assert [s["_id"] for s in storage.sends.collection.find()] == [
        f"confirm:{CUSTOMER}:{grant.event_id}"]
    # Marketing waits; the confirmation goes.
    _schedule(storage, notifier, "m1")
    assert _sender(storage, clock, smtp).run_once() == {"sent": 1, "refused": 1}
    [mail] = smtp.wait_for(1)
    assert mail["List-Unsubscribe"] is None
    text = mail.get_body(("plain",)).get_content()
    url = next(w for w in text.split() if w.startswith(f"{PUBLIC}/confirm/"))
    token = url.rsplit("/", 1)[1]
    door = _door(storage, clock)
    assert door.confirm_page(token).response.status_code == 200
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "pending"
    answer = door.confirm(_post({}), token)
    assert answer.response.status_code == 200 and answer.touched
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "granted"
    assert [e["data"]["source"] for e in _owed(storage)][-1] == "email_confirmation"
    assert door.confirm(_post({}), token).touched == ()  # once


def test_without_double_opt_in_a_grant_is_in_force_at_once(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    _contact(storage, email_consent=False)
    Notifier(storage, clock).apply(_granted_at_checkout(T0 + timedelta(minutes=1)))
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "granted"
    assert storage.sends.collection.count_documents({}) == 0


def test_an_unsubscribe_withdraws_a_pending_opt_in(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    _contact(storage, email_consent=False)
    subscriptions = Subscriptions(storage, clock)
    taken, change = subscriptions.hold_for_confirmation(STORE, CUSTOMER, {"source": "import"},
                                                        T0 + timedelta(seconds=1))
    assert taken and change.changed == ("email_marketing",)
    clock.now = T0 + timedelta(minutes=1)
    assert subscriptions.unsubscribe(storage.contacts.get(STORE, CUSTOMER)).changed
    assert consent_state(storage.contacts.get(STORE, CUSTOMER), "email_marketing") == "off"
    assert subscriptions.confirm_email(storage.contacts.get(STORE, CUSTOMER)).changed == ()
