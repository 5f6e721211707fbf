"""Send failures an operator sees, through the real service on the real broker: the SMTP
stand-in with its port closed or refusing, the Twilio stand-in failing. Each failure is one
WARNING line, the send log's row says why, and `companion health` names the channel that keeps
failing until a message goes again (docs/notifications-failures.md)."""
from __future__ import annotations

import json
import logging

import pytest

from ops.cli import EXIT_FAILED, EXIT_OK, main
from tests.conftest import RABBIT_MANAGEMENT_URL
from tests.integration.test_notifications import STORE, customer, known, rpc, start  # noqa: F401
from tests.support import publish, wait_until

FAST_RETRIES = {"NOTIFY_RETRY_SECONDS": "0.1", "NOTIFY_MAX_ATTEMPTS": "5"}


@pytest.fixture(autouse=True)
def management_url(monkeypatch):
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", RABBIT_MANAGEMENT_URL)


def send_and_wait(rpc, customer_id: str, template: str) -> dict:
    """One transactional bulk send to one customer, waited for until it is done: its row."""
    status = rpc.notifications.bulk_send(STORE, {"customer_ids": [customer_id]}, template,
                                         None, "transactional")
    wait_until(lambda: rpc.notifications.bulk_status(STORE, status["bulk_id"])["done"] == 1,
               timeout=30, message="the send done")
    [row] = [r for r in rpc.notifications.list_sends(STORE, {"customer_id": customer_id})["items"]
             if r.get("bulk_id") == status["bulk_id"]]
    return row


def health(capsys, amqp_uri: str, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--amqp-uri", amqp_uri, *extra, "health", "--service", "notifications",
                 "--service-timeout", "5"])
    return code, capsys.readouterr().out


def sender_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "services.notifications.sender"]


@pytest.mark.parametrize("fault", ["port closed", "421 refusal"])
def test_smtp_failing_shows_on_the_row_in_the_log_and_in_companion_health(
        services, smtp, twilio, rpc, capsys, caplog, fault):
    caplog.set_level(logging.WARNING, logger="services.notifications.sender")
    start(services, smtp, twilio, **FAST_RETRIES)
    publish(services.amqp_uri, customer("f1", "ada@example.com"))
    known(rpc, "f1", None)
    assert health(capsys, services.amqp_uri)[0] == EXIT_OK
    if fault == "port closed":
        smtp.pause()
        said = f"SMTP connection to {smtp.host}:{smtp.port} failed: Connection refused"
    else:
        smtp.refuse_connections(5)
        said = "SMTP 421 4.3.2"

    row = send_and_wait(rpc, "f1", "welcome")
    # The row says why, not only its attempts array.
    assert row["status"] == "failed" and row["reason"].startswith(said)
    assert row["provider_error"] == row["reason"]
    assert [a["outcome"] for a in row["attempts"]] == ["retry"] * 4 + ["failed"]
    lines = sender_warnings(caplog)
    assert [r.getMessage().split("): ")[0] + ")" for r in lines] == [
        f"email send {row['_id']} failed (attempt {n} of 5, "
        + ("no attempts left)" if n == 5 else f"tried again in {0.1 * 2 ** (n - 1):g}s)")
        for n in range(1, 6)]
    assert all(r.levelno == logging.WARNING and r.exc_info is None and said in r.getMessage()
               for r in lines)

    code, out = health(capsys, services.amqp_uri, "--json")
    assert code == EXIT_FAILED
    report = json.loads(out)
    [problem] = report["problems"]
    assert problem.startswith("notifications: email: the last 5 attempts to send failed (since ")
    assert problem.split("; last error: ")[1].startswith(said)
    [service] = report["services"]
    assert service["channels"]["email"]["state"] == "failing"
    assert service["channels"]["sms"]["state"] == "ok"
    code, human = health(capsys, services.amqp_uri)
    assert code == EXIT_FAILED and "NEEDS ATTENTION" in human and problem in human

    # The server is back: the next message goes, and the channel is healthy again.
    if fault == "port closed":
        smtp.resume()
    assert send_and_wait(rpc, "f1", "welcome")["status"] == "sent"
    smtp.wait_for(1)
    code, out = health(capsys, services.amqp_uri, "--json")
    assert code == EXIT_OK, out
    assert json.loads(out)["services"][0]["channels"]["email"]["consecutive_failures"] == 0


def test_twilio_failing_shows_in_companion_health(services, smtp, twilio, rpc, capsys, caplog):
    caplog.set_level(logging.WARNING, logger="services.notifications.sender")
    start(services, smtp, twilio, **FAST_RETRIES)
    rpc.notifications.save_store_settings(STORE, {"quiet_start": "00:00", "quiet_end": "00:00"})
    publish(services.amqp_uri, customer("f2", "sam@example.com", phone="+447700900555"))
    known(rpc, "f2", None)
    twilio.fail_next(5, 500)

    row = send_and_wait(rpc, "f2", "win_back_sms")
    assert row["status"] == "failed" and row["reason"].startswith("Twilio 500 error 20500")
    lines = sender_warnings(caplog)
    assert len(lines) == 5 and all(r.exc_info is None for r in lines)
    assert all("+447700900555" not in r.getMessage() for r in lines)
    code, out = health(capsys, services.amqp_uri)
    assert code == EXIT_FAILED
    assert "notifications: sms: the last 5 attempts to send failed (since " in out
    assert "last error: Twilio 500 error 20500" in out
