"""notifications' sending pieces on an in-memory MongoDB and the local stand-ins: the lapse
date rule, and how each channel reports Twilio's and SMTP's failures."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.notifications.channels import (DeliveryFailed, EmailChannel, SmsChannel,
                                             SmtpSettings, TwilioSettings, new_message_id)
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from shared.events import build_event, contract
from demo.mailbox import SmtpServer
from demo.sms import FakeTwilio
from tests.support import Clock, storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)


def test_a_lapse_schedules_once_per_last_order(database):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_workflow("s1", {"workflow_id": "lapsed", "name": "Lapsed 90 days",
                                  "trigger": {"date": "days_since_last_order", "days": 90},
                                  "channel": "email", "template": "win_back",
                                  "purpose": "marketing"})
    for customer, days in (("old", 91), ("recent", 30)):
        storage.contacts.add_order("s1", customer, {
            "order_id": f"o-{customer}", "number": "1", "total": "10.00 EUR",
            "date": T0 - timedelta(days=days), "seen_at": T0 - timedelta(days=days)})
    assert notifier.run_date_rules("s1") == 1
    assert notifier.run_date_rules("s1") == 0  # once for that last order
    [send] = storage.sends.collection.find()
    assert send["customer_id"] == "old" and send["_id"] == "wf:lapsed:old:after-o-old"
    # a new order, then another lapse: once more
    storage.contacts.add_order("s1", "old", {"order_id": "o-2", "number": "2", "total": "1.00 EUR",
                                             "date": T0, "seen_at": T0})
    clock.now = T0 + timedelta(days=95)
    assert notifier.run_date_rules("s1") == 2  # "old" after o-2, and "recent" now lapsed too


def _first_order_sms(database) -> tuple[NotificationsStorage, Notifier]:
    """A store whose first order starts a transactional SMS."""
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    notifier = Notifier(storage, Clock(T0))
    notifier.save_workflow("s1", {"workflow_id": "first", "name": "First order",
                                  "trigger": {"event": "order.placed", "first_order": True},
                                  "channel": "sms", "template": "win_back_sms",
                                  "purpose": "transactional"})
    return storage, notifier


def _placed(customer: str, order_id: str, created: datetime):
    data = {**contract("order.placed").sample, "customer_id": customer, "order_id": order_id,
            "date_created": created.isoformat()}
    return build_event("order.placed", store_id="s1", occurred_at=T0, data=data)


def test_a_backfilled_old_order_starts_no_workflow_a_new_one_does(database):
    """A shop's history arriving by backfill must not message its customers about orders of
    months ago: the store's max_trigger_age_hours (72 by default) bounds a trigger's age."""
    storage, notifier = _first_order_sms(database)

    def placed(customer: str, age: timedelta):
        return _placed(customer, f"o-{customer}", T0 - age)

    assert notifier.settings("s1").max_trigger_age_hours == 72
    assert notifier.apply(placed("history", timedelta(days=200))) == 0
    assert notifier.apply(placed("edge", timedelta(hours=73))) == 0
    assert notifier.apply(placed("today", timedelta(hours=2))) == 1
    assert [s["customer_id"] for s in storage.sends.collection.find()] == ["today"]
    # The order still counts as the customer's first: a later order is not a "first" again.
    assert storage.contacts.collection.find_one({"customer_id": "history"})["last_order"]
    # 0 lifts the limit (a store that wants history replayed as news).
    notifier.save_settings("s1", {"max_trigger_age_hours": 0})
    assert notifier.apply(placed("replayed", timedelta(days=200))) == 1


def test_a_first_order_redelivered_after_a_failure_still_starts_its_workflow_once(database):
    """The order was recorded, then scheduling failed (a crash, the database gone): the
    redelivery must still see it as the customer's first order, and any further copy must not
    schedule a second message. A later order is not a first order."""
    storage, notifier = _first_order_sms(database)

    def placed(order_id: str):
        return _placed("c1", order_id, T0)

    first = placed("o-1")
    # What the failed first delivery left behind: the order recorded, no send scheduled.
    assert storage.contacts.add_order("s1", "c1", {
        "order_id": "o-1", "number": "1", "total": "1.00 EUR", "date": T0, "seen_at": T0}) \
        == (True, True)
    assert notifier.apply(first) == 1  # the redelivery schedules it
    assert notifier.apply(first) == 0  # a duplicate does not schedule it again
    assert notifier.apply(placed("o-2")) == 0  # the second order is no first order
    assert [s["trigger_event_id"] for s in storage.sends.collection.find()] == [first.event_id]


def test_twilio_failures_are_transient_or_permanent_as_twilio_says():
    with FakeTwilio(seed=9) as twilio:
        sms = SmsChannel(TwilioSettings(twilio.account_sid, twilio.auth_token,
                                        twilio.phone_number, twilio.base_url, 5))
        assert sms.send("+447700900001", "hi", None).startswith("SM")
        twilio.fail_next(1, 429)
        with pytest.raises(DeliveryFailed) as busy:
            sms.send("+447700900001", "hi", None)
        assert busy.value.transient
        twilio.fail_next(1, 500)
        with pytest.raises(DeliveryFailed) as down:
            sms.send("+447700900001", "hi", None)
        assert down.value.transient
        twilio.unsubscribe("+447700900002")
        with pytest.raises(DeliveryFailed) as stopped:
            sms.send("+447700900002", "hi", None)
        assert not stopped.value.transient and "21610" in stopped.value.reason
        unconfigured = SmsChannel(TwilioSettings("", "", "", twilio.base_url, 5))
        with pytest.raises(DeliveryFailed, match="not configured"):
            unconfigured.send("+447700900001", "hi", None)


def test_smtp_failures_are_transient_or_permanent_as_the_server_says():
    with SmtpServer() as smtp:
        email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "shop@example.com"))
        def message(to: str):
            return email.build(to, "Hi", "text", "<p>html</p>", None,
                               new_message_id(f"wf:x:{to}", "example.com"))

        sent_id = email.send(message("a@example.com"))
        assert sent_id.endswith("@example.com>") and "wf.x.a" in sent_id
        smtp.reject_recipient("gone@example.com", 550)
        with pytest.raises(DeliveryFailed) as rejected:
            email.send(message("gone@example.com"))
        assert not rejected.value.transient and "550" in rejected.value.reason
        smtp.fail_data(1, 451)
        with pytest.raises(DeliveryFailed) as later:
            email.send(message("b@example.com"))
        assert later.value.transient
        assert email.send(message("c@example.com"))  # the connection is still good
        [first, *_] = smtp.wait_for(2)
        assert first.get_body(("plain",)).get_content().strip() == "text"
        email.close()


def test_a_workflow_send_waits_for_contact_details_that_trail_its_trigger(database):
    """order.placed and the customer.created that brings a guest's phone travel on different
    queues: a first-order SMS due before the phone arrives waits for it (up to CONTACT_GRACE)
    instead of being refused "no phone number" (found by tests/system)."""
    from services.notifications.policy import CONTACT_GRACE
    from services.notifications.sender import Sender, SenderSettings

    storage, clock = storage_at(NotificationsStorage, database, T0)
    with FakeTwilio(seed=4) as twilio, SmtpServer() as smtp:
        sms = SmsChannel(TwilioSettings(twilio.account_sid, twilio.auth_token,
                                        twilio.phone_number, twilio.base_url, 5))
        email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))
        sender = Sender(storage, email, sms, SenderSettings(), clock)
        notifier = Notifier(storage, clock)
        notifier.save_workflow("s1", {"workflow_id": "first", "name": "First order",
                                      "trigger": {"event": "order.placed", "first_order": True},
                                      "channel": "sms", "template": "win_back_sms",
                                      "purpose": "transactional"})
        for customer in ("late-phone", "never-phone"):
            storage.sends.schedule(notifier._send("s1", customer, f"wf:first:{customer}:e1", T0,
                                                  workflow=notifier.workflows("s1")[0],
                                                  trigger="e1"))
        assert sender.run_once() == {"held": 2}  # no contact yet: neither is refused
        assert twilio.messages == []
        storage.contacts.apply("s1", "late-phone", "contact_at", T0, {
            "email": "g@example.com", "phone": "+33 612345678", "phone_key": "33612345678",
            "first_name": "G", "last_name": "", "birthday": None, "country": "FR"})
        clock.now = T0 + timedelta(seconds=10)
        assert sender.run_once() == {"sent": 1, "held": 1}
        assert [m.to for m in twilio.messages] == ["+33612345678"]
        clock.now = T0 + CONTACT_GRACE + timedelta(seconds=1)
        assert sender.run_once() == {"refused": 1}  # the grace is bounded
        assert len(twilio.messages) == 1


def test_the_store_send_log_pages_newest_first_by_keyset_and_filters(database):
    from shared.errors import ValidationError

    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    base = datetime(2026, 3, 1, tzinfo=timezone.utc)
    for i in range(7):
        storage.sends.collection.insert_one({
            "_id": f"send-{i}", "store_id": "s1", "customer_id": f"c{i % 2}",
            "channel": "sms" if i % 3 == 0 else "email", "template": "t", "status": "sent",
            "attempts": [], "created_at": base + timedelta(minutes=i // 2)})  # ties in time
    storage.sends.collection.insert_one({"_id": "other", "store_id": "s2", "channel": "email",
                                         "status": "sent", "created_at": base})
    seen, cursor = [], None
    while True:
        docs, cursor = storage.sends.page("s1", {}, 3, cursor)
        seen.extend(d["_id"] for d in docs)
        if cursor is None:
            break
    expected = [d["_id"] for d in sorted(storage.sends.collection.find({"store_id": "s1"}),
                                         key=lambda d: (d["created_at"], d["_id"]),
                                         reverse=True)]
    assert seen == expected and len(seen) == 7
    sms, _ = storage.sends.page("s1", {"channel": "sms"}, 10, None)
    assert sorted(d["_id"] for d in sms) == ["send-0", "send-3", "send-6"]
    with pytest.raises(ValidationError):
        storage.sends.page("s1", {}, 3, "not-a-cursor")


def test_a_stores_cached_settings_go_with_the_storage_they_were_read_from(database):
    """Settings are cached a few seconds per storage. An entry must not outlive its storage:
    keyed by the object's address, it was read by a later storage (another database) that
    happened to be given the same address, and sent another shop's unsubscribe address."""
    import gc

    from services.notifications import notifier as notifier_module

    gc.collect()
    storages_cached_before = notifier_module._read_cache.storages()
    storage = NotificationsStorage(database)
    notifier = Notifier(storage, Clock(T0))
    notifier.save_settings("s1", {"name": "Tea & Co", "url": "https://tea.example",
                                  "unsubscribe_mailto": "optout@tea.example"})
    assert notifier.settings("s1").unsubscribe_mailto == "optout@tea.example"
    assert notifier_module._read_cache.storages() == storages_cached_before + 1
    del notifier, storage
    gc.collect()
    assert notifier_module._read_cache.storages() == storages_cached_before
