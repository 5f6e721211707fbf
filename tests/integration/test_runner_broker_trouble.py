"""`python -m services` as an operator runs it (`make run`), against a broker it cannot use: the
broker's port closed, or a vhost that does not exist. It names the cause in one line per
attempt, backs off, writes no traceback, and Ctrl-C or SIGTERM ends it within 10 s. Started
against a working broker, it prints every address it serves once the services are up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import free_port, wait_until

STOP_WITHIN_SECONDS = 10
# After the first cause is logged, the output of this window is measured: with the backoff
# (1, 2, 4 s...) it holds at most three more attempts, a few hundred bytes each.
WINDOW_SECONDS = 4
MOST_BYTES_IN_WINDOW = 4000


class Run:
    """`python -m services` in the background, its output (JSON lines) in a file."""

    def __init__(self, tmp_path: Path, amqp_uri: str) -> None:
        self.log = tmp_path / f"run-{uuid.uuid4().hex[:6]}.log"
        self.ports = {"web": free_port(), "notifications": free_port(),
                      "gateway": free_port(), "metrics": free_port()}
        env = {**os.environ, "AMQP_URI": amqp_uri, "MONGO_URI": "mongomock://",
               "METRICS_PORT": str(self.ports["metrics"]),
               "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.ports['web']}",
               "NOTIFICATIONS_WEB_SERVER_ADDRESS": f"127.0.0.1:{self.ports['notifications']}",
               "GATEWAY_WEB_SERVER_ADDRESS": f"127.0.0.1:{self.ports['gateway']}",
               "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.child = subprocess.Popen([sys.executable, "-m", "services"], env=env,
                                          stdout=out, stderr=subprocess.STDOUT)

    def messages(self) -> list[str]:
        found = []
        for line in self.text().splitlines():
            try:
                found.append(json.loads(line)["message"])
            except (ValueError, KeyError, TypeError):
                found.append(line)
        return found

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        wait_until(lambda: any(needle in m for m in self.messages()), timeout=timeout,
                   interval=0.1, message=f"{needle!r} logged")

    def stop(self, sig: int) -> float:
        """Send `sig`; the seconds until the process ended (the test fails if it outlives
        the limit)."""
        sent = time.monotonic()
        self.child.send_signal(sig)
        try:
            self.child.wait(STOP_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_WITHIN_SECONDS} s after signal {sig}")
        return time.monotonic() - sent

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def unusable_broker(kind: str, broker_admin) -> tuple[str, str]:
    """(AMQP_URI, the cause the runner must name) for a closed port or a missing vhost."""
    if kind == "port closed":
        port = free_port()
        return (f"amqp://guest:guest@127.0.0.1:{port}/",
                f"connection refused at amqp://127.0.0.1:{port}/: is RabbitMQ running there?")
    vhost = f"missing-{uuid.uuid4().hex[:8]}"  # never created
    host = os.environ.get("RABBIT_AMQP_HOST", "127.0.0.1:5672")
    return (f"amqp://guest:guest@{host}/{vhost}",
            f"vhost '{vhost}' not found at amqp://{host}/{vhost}: create it")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["port closed", "vhost missing"])
def test_an_unusable_broker_is_named_and_a_signal_stops_the_runner(tmp_path, broker_admin,
                                                                  kind, sig):
    amqp_uri, cause = unusable_broker(kind, broker_admin)
    with Run(tmp_path, amqp_uri) as run:
        run.wait_for(cause)
        before = run.log.stat().st_size
        time.sleep(WINDOW_SECONDS)
        in_window = run.log.stat().st_size - before
        run.stop(sig)
    text = run.text()
    assert "Traceback" not in text
    assert in_window <= MOST_BYTES_IN_WINDOW
    attempts = [m for m in run.messages() if m.startswith("broker unavailable: ")]
    for number, message in enumerate(attempts):  # one line each, naming the cause
        assert cause in message
        assert message.endswith(f"; next attempt in {2 ** number} s")
    assert len(attempts) >= 1
    assert "guest:guest" not in text  # the password stays out of the log
    assert run.messages()[-1] == "stopped before the broker answered; no service was started"
    assert run.child.returncode == 0


def test_startup_prints_every_address_it_serves_then_stops_cleanly(tmp_path, amqp_uri):
    with Run(tmp_path, amqp_uri) as run:
        run.wait_for("metrics: ", timeout=90)
        took = run.stop(signal.SIGINT)
    lines = run.messages()
    started = lines.index("started customer_sync, segmentation, loyalty, notifications, "
                          "gdpr, gateway")
    web, gateway, own, metrics = (f"http://127.0.0.1:{run.ports[k]}"
                                  for k in ("web", "gateway", "notifications", "metrics"))
    assert lines[started + 1:started + 7] == [
        f"webhooks: {web}/webhooks/woocommerce/<store_id>",
        f"API: {gateway}/api/v1/",
        f"console: {gateway}/console/",
        f"Twilio callbacks: {own}/twilio/status {own}/twilio/inbound",
        f"email reports: {own}/email/reports",
        f"metrics: {metrics.replace('127.0.0.1', 'localhost')}/metrics",
    ]
    assert lines[-1] == "stopped"
    assert run.child.returncode == 0 and took < STOP_WITHIN_SECONDS
    assert "Traceback" not in run.text()


def test_the_services_start_once_the_vhost_appears(tmp_path, broker_admin):
    vhost = f"late-{uuid.uuid4().hex[:8]}"
    host = os.environ.get("RABBIT_AMQP_HOST", "127.0.0.1:5672")
    try:
        with Run(tmp_path, f"amqp://guest:guest@{host}/{vhost}") as run:
            run.wait_for(f"vhost '{vhost}' not found")
            broker_admin.create_vhost(vhost)
            run.wait_for("metrics: ", timeout=90)
            run.stop(signal.SIGTERM)
    finally:
        broker_admin.delete_vhost(vhost)
    assert run.messages()[-1] == "stopped" and run.child.returncode == 0
    assert "Traceback" not in run.text()


@pytest.mark.parametrize("second_ctrl_c", [False, True], ids=["SIGTERM", "Ctrl-C twice"])
def test_a_broker_lost_after_the_start_is_named_and_the_runner_still_stops(
        tmp_path, broker_admin, amqp_uri, second_ctrl_c):
    vhost = amqp_uri.rsplit("/", 1)[1]
    with Run(tmp_path, amqp_uri) as run:
        run.wait_for("metrics: ", timeout=90)
        broker_admin.delete_vhost(vhost)
        run.wait_for(f"vhost '{vhost}' not found")
        if second_ctrl_c:  # the second kills at once
            run.child.send_signal(signal.SIGINT)
            run.wait_for("stopping (again to kill)")
            took = run.stop(signal.SIGINT)
            assert took < 3
        else:
            run.stop(signal.SIGTERM)
    assert "Traceback" not in run.text()


# -- the operator CLI names the same causes --------------------------------------------------------
@pytest.mark.parametrize("kind", ["port closed", "vhost missing"])
@pytest.mark.parametrize("command", [["health"], ["dlq", "list", "--service", "loyalty"]])
def test_the_cli_names_the_cause_in_one_line(broker_admin, capsys, kind, command):
    from ops.cli import EXIT_UNREACHABLE, main

    amqp_uri, cause = unusable_broker(kind, broker_admin)
    assert main(["--amqp-uri", amqp_uri, *command]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith(f"cannot reach the broker: {cause}")
    assert err.count("\n") == 1 and "Traceback" not in err and "guest:guest" not in err


@pytest.mark.parametrize("kind", ["port closed", "vhost missing"])
def test_the_topology_job_names_the_cause_in_one_line(broker_admin, monkeypatch, capsys, kind):
    from ops.topology import main

    amqp_uri, cause = unusable_broker(kind, broker_admin)
    monkeypatch.setenv("AMQP_URI", amqp_uri)
    assert main([]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"cannot reach the broker: {cause}")
    assert err.count("\n") == 1 and "Traceback" not in err
