"""The companion itself for the demo: every service in one child process (`python -m services`)
on in-memory databases and free ports, on a RabbitMQ virtual host of its own, and the operator
CLI (`companion`) run as a separate process, as an operator runs it."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from shared.config import Config

if TYPE_CHECKING:
    from demo.mailbox import SmtpServer
    from demo.sms import FakeTwilio

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 6.0  # then SIGKILL: the whole demo stops within 10 s of Ctrl-C


def free_port() -> int:
    """A port free on 127.0.0.1 now (the services bind it moments later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stand_in_settings(smtp: "SmtpServer", twilio: "FakeTwilio") -> dict[str, str]:
    """The services' settings that send their email to the mail catcher and their SMS to the
    Twilio stand-in (the demo's and the whole-system tests')."""
    return {"SMTP_HOST": smtp.host, "SMTP_PORT": str(smtp.port),
            "TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_FROM_NUMBER": twilio.phone_number, "TWILIO_API_BASE": twilio.base_url}


def declare_topology(env: dict[str, str]) -> str:
    """Declare every consumer's queue on env's AMQP_URI first, as the deployment does; answers
    what it printed."""
    done = subprocess.run([sys.executable, "-m", "ops.topology"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"declaring the queues failed: {said[-1] if said else done.returncode}")
    return done.stdout.strip()


@dataclass
class Broker:
    """Where the demo's services meet: a virtual host made for this run when the management API
    answers (so a demo never shares queues with `make run`, nor a killed demo's leftovers), else
    the AMQP_URI as it is."""

    amqp_uri: str
    vhost: str | None = None
    management_url: str = ""
    auth: tuple[str, str] = ("guest", "guest")

    @classmethod
    def open(cls, config: Config) -> "Broker":
        base_uri = config.get("AMQP_URI")
        parts = urllib.parse.urlsplit(base_uri)
        address = (parts.hostname or "127.0.0.1", parts.port or 5672)
        try:
            socket.create_connection(address, timeout=5).close()
        except OSError as exc:
            raise RuntimeError(
                f"RabbitMQ does not answer at {address[0]}:{address[1]} (AMQP_URI; {exc}). "
                "Start it (e.g. `sudo systemctl start rabbitmq-server`, or "
                "`docker run -d -p 5672:5672 -p 15672:15672 rabbitmq:4-management`) "
                "and run the demo again.") from None
        auth = (config.get("RABBITMQ_MANAGEMENT_USER") or urllib.parse.unquote(parts.username or "guest"),
                config.get("RABBITMQ_MANAGEMENT_PASSWORD")
                or urllib.parse.unquote(parts.password or "guest"))
        api = config.get("RABBITMQ_MANAGEMENT_URL").rstrip("/") + "/api"
        vhost = f"companion-demo-{secrets.token_hex(4)}"
        quoted = urllib.parse.quote(vhost, safe="")
        try:
            requests.put(f"{api}/vhosts/{quoted}", auth=auth, timeout=5).raise_for_status()
            requests.put(f"{api}/permissions/{quoted}/{urllib.parse.quote(auth[0], safe='')}",
                         auth=auth, timeout=5,
                         json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        except requests.RequestException:
            return cls(base_uri)
        uri = urllib.parse.urlunsplit(parts._replace(path="/" + quoted))
        return cls(uri, vhost, api, auth)

    @property
    def shown_uri(self) -> str:
        """The URI to print: its password, if any, as ***."""
        parts = urllib.parse.urlsplit(self.amqp_uri)
        if not parts.password:
            return self.amqp_uri
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def close(self) -> None:
        if self.vhost:
            try:
                requests.delete(f"{self.management_url}/vhosts/"
                                f"{urllib.parse.quote(self.vhost, safe='')}",
                                auth=self.auth, timeout=5)
            except requests.RequestException:
                pass


@dataclass
class Services:
    """`python -m services` as a child process in its own session (a Ctrl-C at the terminal
    reaches the demo, which then stops it once, gracefully, then by force)."""

    amqp_uri: str
    log_path: Path
    extra_env: dict[str, str]
    ports: dict[str, int] = field(default_factory=lambda: {
        name: free_port() for name in ("webhooks", "notifications", "gateway", "metrics")})
    proc: subprocess.Popen | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def webhooks_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['webhooks']}"

    @property
    def notifications_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['notifications']}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "AMQP_URI": self.amqp_uri, "MONGO_URI": "mongomock://",
                "PYTHONUNBUFFERED": "1",
                "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.ports['webhooks']}",
                "NOTIFICATIONS_WEB_SERVER_ADDRESS": f"127.0.0.1:{self.ports['notifications']}",
                "GATEWAY_WEB_SERVER_ADDRESS": f"127.0.0.1:{self.ports['gateway']}",
                "METRICS_PORT": str(self.ports["metrics"]),
                "NOTIFY_PUBLIC_URL": self.notifications_url,
                # Made per run: the unsubscribe links of one demo mean nothing to the next.
                "NOTIFY_LINK_SECRET": secrets.token_hex(24),
                **self.extra_env}

    def start(self, timeout: float = 120.0) -> None:
        declare_topology(self.env())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "services"], cwd=ROOT,
                                         env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        ready = f"http://127.0.0.1:{self.ports['metrics']}/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the services exited ({self.proc.returncode}); "
                                   f"see {self.log_path}")
            try:
                if requests.get(ready, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the services were not ready in {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM (running workers finish), SIGKILL to the whole process group after
        STOP_SECONDS; nothing of it is left running."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: anything it started too
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(5)


def companion(amqp_uri: str, *argv: str, env: dict[str, str] | None = None,
              show: bool = False, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """The operator CLI in a process of its own. `show`: its output goes to the terminal (the
    backfill's progress bar), else it is captured and answered."""
    print(f"$ companion {' '.join(argv)}", flush=True)
    command = [sys.executable, "-m", "ops.cli", "--amqp-uri", amqp_uri, *argv]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=not show, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def companion_ok(amqp_uri: str, *argv: str, env: dict[str, str] | None = None,
                 show: bool = False) -> str:
    """`companion` that must succeed; answers what it printed (empty when shown)."""
    done = companion(amqp_uri, *argv, env=env, show=show)
    if done.returncode != 0:
        raise RuntimeError(f"companion {argv[0]} failed ({done.returncode}): "
                           f"{done.stdout or ''}{done.stderr or ''}")
    return done.stdout or ""
