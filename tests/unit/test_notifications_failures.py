"""Send failures an operator can see: one WARNING line each (no traceback), the reason on the
send's row, and a channel that keeps failing named by notifications' health answer. On an
in-memory MongoDB with the local SMTP server and Twilio stand-in (the same through the real
services and `companion health` is in tests/integration/test_notifications_failures.py)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from demo.sms import FakeTwilio
from services.notifications import channel_health
from services.notifications.channel_health import FAILING_AFTER, describe, problem, report
from services.notifications.channels import (EmailChannel, SmsChannel, SmtpSettings,
                                             TwilioSettings)
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from tests.support import Clock, free_port
from tests.unit.test_notifications_suppression import PUBLIC_LINKS, STORE, _contact, _schedule

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)


@pytest.fixture
def storage(database):
    storage = NotificationsStorage(database)
    storage.ensure_indexes()
    return storage


def sender_for(storage, clock, smtp_port: int, twilio: FakeTwilio, host: str = "127.0.0.1",
               max_attempts: int = 5) -> Sender:
    email = EmailChannel(SmtpSettings(host, smtp_port, "none", "", "", 5, "s@example.com"))
    sms = SmsChannel(TwilioSettings(twilio.account_sid, twilio.auth_token, twilio.phone_number,
                                    twilio.base_url, 5))
    return Sender(storage, email, sms, SenderSettings(max_attempts=max_attempts, retry_seconds=1,
                                                      links=PUBLIC_LINKS), clock)


def run_until_done(sender: Sender, clock: Clock, rounds: int = 10) -> list[dict]:
    """Run the sender, moving the clock past each back-off, until nothing is due."""
    outcomes = []
    for _ in range(rounds):
        counts = sender.run_once()
        if not counts:
            break
        outcomes.append(counts)
        clock.now += timedelta(minutes=5)
    return outcomes


def send_of(storage, send_id: str) -> dict:
    return storage.sends.collection.find_one({"_id": send_id})


# -- the rule -----------------------------------------------------------------------------------
def test_failing_means_the_last_attempts_all_failed_with_none_accepted_since():
    assert describe("email", None) == {
        "channel": "email", "state": "ok", "consecutive_failures": 0, "failing_since": None,
        "last_error": None, "last_error_at": None, "recovered_at": None}
    four = {"consecutive_failures": FAILING_AFTER - 1, "failing_since": T0,
            "last_error": "SMTP 421 busy", "last_error_at": T0 + timedelta(minutes=3)}
    assert describe("email", four)["state"] == "ok" and problem(describe("email", four)) is None
    five = {**four, "consecutive_failures": FAILING_AFTER}
    assert describe("email", five)["state"] == "failing"
    assert problem(describe("email", five)) == (
        "email: the last 5 attempts to send failed (since 2026-11-29 12:00 UTC); last error: "
        "SMTP 421 busy")
    assert report({"sms": five})["problems"] == [
        "sms: the last 5 attempts to send failed (since 2026-11-29 12:00 UTC); last error: "
        "SMTP 421 busy"]
    assert list(report({})["channels"]) == ["email", "sms"] and report({})["problems"] == []


def test_the_recipient_is_taken_out_of_the_channels_error():
    said = "recipient refused: 550 5.1.1 <Ada@Example.com>: Recipient address rejected"
    assert channel_health.without_recipient(said, "ada@example.com") == (
        "recipient refused: 550 5.1.1 <<recipient>>: Recipient address rejected")
    assert len(channel_health.without_recipient("x" * 5000, None)) == channel_health.REASON_LIMIT


# -- the sender ---------------------------------------------------------------------------------
def test_a_closed_smtp_port_is_logged_once_an_attempt_shown_on_the_row_and_fails_the_channel(
        storage, twilio, caplog):
    clock = Clock(T0)
    port = free_port()  # nothing listens there
    sender = sender_for(storage, clock, port, twilio)
    _contact(storage, "c1", "ada@example.com")
    send_id = _schedule(storage, "c1", "one", purpose="transactional")
    caplog.set_level(logging.WARNING, logger="services.notifications.sender")

    assert sender.run_once() == {"retry": 1}
    waiting = send_of(storage, send_id)
    # The row says why it waits, not only its attempts array.
    assert waiting["status"] == "scheduled"
    assert waiting["reason"] == waiting["provider_error"] == (
        f"SMTP connection to 127.0.0.1:{port} failed: Connection refused")
    [line] = [r for r in caplog.records if r.name == "services.notifications.sender"]
    assert (line.levelno, line.exc_info) == (logging.WARNING, None)
    assert line.getMessage() == (
        f"email send {send_id} failed (attempt 1 of 5, tried again in 1s): SMTP connection to "
        f"127.0.0.1:{port} failed: Connection refused")
    assert line.store_id == STORE
    assert describe("email", storage.channel_state.all().get("email"))["state"] == "ok"

    clock.now += timedelta(minutes=5)
    assert run_until_done(sender, clock) == [{"retry": 1}, {"retry": 1}, {"retry": 1},
                                             {"failed": 1}]
    failed = send_of(storage, send_id)
    assert failed["status"] == "failed" and "Connection refused" in failed["reason"]
    messages = [r.getMessage() for r in caplog.records
                if r.name == "services.notifications.sender"]
    assert len(messages) == 5 and messages[-1].startswith(
        f"email send {send_id} failed (attempt 5 of 5, no attempts left): SMTP connection to")
    assert all(r.exc_info is None for r in caplog.records)
    state = report(storage.channel_state.all())
    assert state["channels"]["email"]["state"] == "failing"
    assert state["channels"]["email"]["failing_since"] == T0.isoformat()
    assert state["problems"] == [
        "email: the last 5 attempts to send failed (since 2026-11-29 12:00 UTC); last error: "
        f"SMTP connection to 127.0.0.1:{port} failed: Connection refused"]
    assert state["channels"]["sms"]["state"] == "ok"


def test_one_accepted_message_ends_the_run_of_failures(storage, smtp, twilio):
    clock = Clock(T0)
    sender = sender_for(storage, clock, smtp.port, twilio, max_attempts=6)
    _contact(storage, "c1", "ada@example.com")
    smtp.pause()  # the server is down: a new connection is refused
    first = _schedule(storage, "c1", "one", purpose="transactional")
    run_until_done(sender, clock)
    assert send_of(storage, first)["status"] == "failed"
    assert report(storage.channel_state.all())["channels"]["email"]["consecutive_failures"] == 6
    smtp.resume()
    second = _schedule(storage, "c1", "two", purpose="transactional")
    storage.sends.collection.update_one({"_id": second}, {"$set": {"due_at": clock.now}})
    assert sender.run_once() == {"sent": 1}
    email = report(storage.channel_state.all())["channels"]["email"]
    assert (email["state"], email["consecutive_failures"], email["failing_since"]) == ("ok", 0, None)
    assert email["recovered_at"] == clock.now.isoformat()
    assert "provider_error" not in send_of(storage, second)
    sender.email.close()


def test_a_refused_recipient_counts_without_naming_them(storage, smtp, twilio):
    clock = Clock(T0)
    sender = sender_for(storage, clock, smtp.port, twilio)
    _contact(storage, "c1", "Gone@Example.com")
    smtp.reject_recipient("gone@example.com")
    send_id = _schedule(storage, "c1", "one", purpose="transactional")
    assert sender.run_once() == {"failed": 1}
    assert "gone@example.com" in send_of(storage, send_id)["reason"].lower()  # the row: yes
    email = storage.channel_state.all()["email"]
    assert email["consecutive_failures"] == 1
    assert "example.com" not in email["last_error"].lower() and "<recipient>" in email["last_error"]
    sender.email.close()


def test_twilio_failing_fails_the_sms_channel(storage, smtp, twilio, caplog):
    clock = Clock(T0)
    sender = sender_for(storage, clock, smtp.port, twilio)
    _contact(storage, "c1", "ada@example.com")
    twilio.fail_next(5, 503)
    caplog.set_level(logging.WARNING, logger="services.notifications.sender")
    send_id = _schedule(storage, "c1", "one", channel="sms", purpose="transactional")
    run_until_done(sender, clock)
    failed = send_of(storage, send_id)
    assert failed["status"] == "failed" and "Twilio 503" in failed["reason"]
    [problem_line] = report(storage.channel_state.all())["problems"]
    assert problem_line.startswith("sms: the last 5 attempts to send failed (since "
                                   "2026-11-29 12:00 UTC); last error: Twilio 503")
    lines = [r for r in caplog.records if r.name == "services.notifications.sender"]
    assert len(lines) == 5 and all(r.exc_info is None and r.levelno == logging.WARNING
                                   for r in lines)
    assert "+447700900123" not in " ".join(r.getMessage() for r in lines)


# -- what `companion health` takes from a service's answer --------------------------------------
def test_a_services_own_problems_are_taken_bounded_and_as_text(monkeypatch):
    from nameko.standalone import rpc as standalone

    from ops import system_health

    answer = {"ready": True, "checks": {"broker": True}, "channels": {"email": {"state": "x"}},
              "problems": ["email: failing " + "x" * 1000, *range(20)]}

    class Proxy:
        def __init__(self, *args, **kwargs):
            self.notifications = type("Service", (), {"health": staticmethod(lambda: answer)})

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(standalone, "ClusterRpcProxy", Proxy)
    taken = system_health._ask_one("amqp://unused/", "notifications", 1.0)
    assert taken["state"] == "ready" and taken["channels"] == {"email": {"state": "x"}}
    assert len(taken["problems"]) == system_health.MAX_SERVICE_PROBLEMS
    assert len(taken["problems"][0]) == system_health.MAX_PROBLEM_LENGTH
    assert taken["problems"][1:3] == ["0", "1"]
    answer["problems"] = "not a list"
    assert system_health._ask_one("amqp://unused/", "notifications", 1.0)["problems"] == []


# -- the send log's row, as the console and the API show it --------------------------------------
def test_a_waiting_sends_reason_is_on_its_row_in_the_console_and_the_api(monkeypatch):
    from services.gateway.handlers.notifications import _send_view
    from tests.unit.test_console import Notifications, World

    waiting = {**Notifications.sends[0], "_id": "wait", "status": "scheduled",
               "reason": "SMTP connection to smtp.example:25 failed: Connection refused",
               "provider_error": "SMTP connection to smtp.example:25 failed: Connection refused"}
    monkeypatch.setattr(Notifications, "sends", [waiting])
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/messages").get_data(as_text=True)
    row = html.split('<tbody>')[1].split("</tr>")[0]
    assert "scheduled" in row
    assert row.count("SMTP connection to smtp.example:25 failed: Connection refused") == 1
    shown = _send_view(waiting)
    assert shown["reason"] == shown["provider_error"] == waiting["reason"]
