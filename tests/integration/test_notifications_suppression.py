"""Suppression on the real broker with the running notifications service, the local SMTP
server and the Twilio stand-in: a 550 at send time, Twilio 21610, a signed bounce report
over HTTP, a forged one, and an operator lifting a suppression."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from services.notifications.email_reports import REPORT_PATH, SIGNATURE_HEADER, signature_of
from shared.errors import NotFound
from tests.integration.test_notifications import STORE, customer, known, rpc, start  # noqa: F401
from tests.support import publish, wait_until

SECRET = "integration-report-secret-0123456789"


def _statuses(rpc, customer_id: str) -> list[tuple[str, str | None]]:
    return [(e["status"], e.get("held_reason")) for e in rpc.notifications.send_log(
        STORE, customer_id)]


def _send_and_wait(rpc, customer_id: str, template: str = "welcome",
                   purpose: str = "transactional") -> dict:
    """One bulk send to one customer, waited for until it is done; its log entry."""
    status = rpc.notifications.bulk_send(STORE, {"customer_ids": [customer_id]}, template,
                                         None, purpose)
    wait_until(lambda: rpc.notifications.bulk_status(STORE, status["bulk_id"])["done"] == 1,
               timeout=15, message="the send done")
    return next(e for e in rpc.notifications.send_log(STORE, customer_id)
                if e.get("bulk_id") == status["bulk_id"])


def _report(base: str, body: dict, secret: str | None = SECRET, **headers) -> requests.Response:
    raw = json.dumps(body).encode()
    if secret is not None:
        headers.setdefault(SIGNATURE_HEADER, signature_of(secret, raw))
    return requests.post(base + REPORT_PATH, data=raw, timeout=10,
                         headers={"Content-Type": "application/json", **headers})


def test_a_550_at_send_time_suppresses_and_the_next_send_is_held_until_lifted(
        services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    publish(services.amqp_uri, customer("s1", "gone@example.com"))
    known(rpc, "s1", None)
    smtp.reject_recipient("gone@example.com", 550)
    first = _send_and_wait(rpc, "s1")
    assert first["status"] == "failed" and "550" in first["provider_error"]
    [suppression] = rpc.notifications.list_suppressions(STORE, {"address": "gone@example.com"}
                                                        )["items"]
    assert suppression["kinds"] == ["smtp_refusal"] and suppression["blocks"] == "all"
    # The server would take it now, but the address is suppressed: held, not tried.
    smtp.accept_recipient("gone@example.com")
    second = _send_and_wait(rpc, "s1")
    assert (second["status"], second["held_reason"]) == ("refused", "suppressed")
    assert second["attempts"] == [] and smtp.received == 0
    # An operator lifts it, saying why; the history keeps who and why, and mail goes again.
    lifted = rpc.notifications.lift_suppression(STORE, "email", "Gone@Example.com",
                                                "the customer fixed the mailbox", "key ops")
    assert [(h["action"], h.get("actor"), h.get("detail")) for h in lifted["history"]][1:] == [
        ("lifted", "key ops", "the customer fixed the mailbox")]
    assert rpc.notifications.list_suppressions(STORE)["items"] == []
    assert len(rpc.notifications.list_suppressions(STORE, {"include_lifted": True})["items"]) == 1
    with pytest.raises(NotFound):
        rpc.notifications.lift_suppression(STORE, "email", "gone@example.com", "again", "ops")
    assert _send_and_wait(rpc, "s1")["status"] == "sent"
    [mail] = smtp.wait_for(1)
    assert mail["To"] == "gone@example.com"


def test_twilio_21610_suppresses_sms_to_the_number(services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    rpc.notifications.save_store_settings(STORE, {"quiet_start": "00:00", "quiet_end": "00:00"})
    publish(services.amqp_uri, customer("s2", "sam@example.com", phone="+447700900777"))
    known(rpc, "s2", None)
    twilio.unsubscribe("+447700900777")
    first = _send_and_wait(rpc, "s2", "win_back_sms")
    assert first["status"] == "failed" and "21610" in first["provider_error"]
    [suppression] = rpc.notifications.list_suppressions(STORE, {"channel": "sms"})["items"]
    assert suppression["address"] == "447700900777"
    assert suppression["kinds"] == ["sms_unsubscribed"]
    second = _send_and_wait(rpc, "s2", "win_back_sms")
    assert second["held_reason"] == "suppressed" and len(twilio.messages) == 0


def test_a_signed_bounce_report_suppresses_and_a_forged_one_changes_nothing(
        services, smtp, twilio, rpc):
    _, base = start(services, smtp, twilio, EMAIL_REPORT_SECRET=SECRET)
    publish(services.amqp_uri, customer("s3", "ada@example.com"))
    known(rpc, "s3", None)
    at = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    bounce = {"store_id": STORE, "email": "ada@example.com", "kind": "bounce", "time": at}
    # forged: no signature, a made-up one, one made with another secret
    for answer in (_report(base, bounce, secret=None), _report(base, bounce, **{
            SIGNATURE_HEADER: "sha256=" + "0" * 64}), _report(base, bounce, "not-the-secret")):
        assert answer.status_code == 401, answer.text
    assert rpc.notifications.list_suppressions(STORE, {"include_lifted": True})["items"] == []
    assert _send_and_wait(rpc, "s3")["status"] == "sent"
    # malformed but signed: 400 naming the field, nothing stored
    answer = _report(base, {**bounce, "kind": "soft-bounce"})
    assert answer.status_code == 400 and "kind" in answer.json()["errors"]
    assert rpc.notifications.list_suppressions(STORE, {"include_lifted": True})["items"] == []
    # signed: suppressed at once; the relay's retry changes nothing
    answer = _report(base, bounce)
    assert answer.status_code == 200 and answer.json()["changed"] is True
    again = _report(base, bounce)
    assert again.status_code == 200 and again.json() == {**answer.json(), "changed": False}
    [suppression] = rpc.notifications.list_suppressions(STORE)["items"]
    assert suppression["kinds"] == ["bounce"] and len(suppression["history"]) == 1
    held = _send_and_wait(rpc, "s3")
    assert (held["status"], held["held_reason"]) == ("refused", "suppressed")
    assert smtp.received == 1


def test_a_delivery_failing_with_21610_later_suppresses_the_number(services, smtp, twilio, rpc):
    """Twilio can accept a message and report the opt-out only in its status callback."""
    start(services, smtp, twilio)
    rpc.notifications.save_store_settings(STORE, {"quiet_start": "00:00", "quiet_end": "00:00"})
    publish(services.amqp_uri, customer("s4", "tom@example.com", phone="+447700900888"))
    known(rpc, "s4", None)
    sent = _send_and_wait(rpc, "s4", "win_back_sms")
    assert sent["status"] == "sent"
    assert twilio.send_status_callback(sent["provider_id"], "failed", error_code=21610,
                                       signature="forged").status == 403
    assert rpc.notifications.list_suppressions(STORE)["items"] == []
    assert twilio.send_status_callback(sent["provider_id"], "failed",
                                       error_code=21610).status == 200
    [suppression] = rpc.notifications.list_suppressions(STORE)["items"]
    assert suppression["address"] == "447700900888"
    assert suppression["history"][0]["source"] == "twilio_status"
    [entry] = [e for e in rpc.notifications.send_log(STORE, "s4") if e["_id"] == sent["_id"]]
    assert entry["delivery_error"] == "21610"
    assert _send_and_wait(rpc, "s4", "win_back_sms")["held_reason"] == "suppressed"
    assert len(twilio.messages) == 1
