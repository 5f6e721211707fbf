"""The whole system as separate OS processes, for scenario and (later) fault tests.

Each service runs as `python -m services NAME` in its own process with its own ports, so a test
can stop, SIGKILL and restart any one of them (`kill`, `restart`). With `MONGO_URI=mongomock://`
every process has its own in-memory database: each service owns its database, so that is
faithful, but a killed process loses its data. `MongoServerProcess` runs the wire-protocol
stand-in (tests/fakes/mongo_server.py) as "the database": point MONGO_URI at its `uri` and every
service keeps its own database there (`<MONGO_DB_PREFIX><service>`), surviving a kill -9.

Scale-out: `start("loyalty", instances=2)` runs two processes of one service, "loyalty" and
"loyalty@2" (`instance_name`): the same service name, so the same queues and database, each
with its own ports and log file, and each killable and restartable by its instance name. Their
database is shared only through the stand-in, so more than one instance needs MONGO_URI at it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Callable

import requests

from bench.common import Child, terminate
from demo.companion import declare_topology, stand_in_settings
from tests.support import BrokerAdmin, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAMES = ("customer_sync", "segmentation", "loyalty", "notifications", "gdpr", "gateway")
INSTANCE_MARK = "@"


def instance_name(service: str, number: int) -> str:
    """The name of a service's `number`th process (1-based): the first is the service's own
    name, so single-instance callers never see the difference."""
    return service if number == 1 else f"{service}{INSTANCE_MARK}{number}"


def service_of(instance: str) -> str:
    """The service an instance name runs ("loyalty@2" -> "loyalty")."""
    return instance.split(INSTANCE_MARK, 1)[0]
# customer_sync's applier: applies the deliveries customer_sync's door records (INBOX_APPLY).
APPLIER = "customer_sync_applier"


class MongoServerProcess:
    """tests/fakes/mongo_server.py in a process of its own: the database, not a service, so the
    fault tests never kill it. Holds every service's database in memory until `stop`."""

    def __init__(self, log_dir: Path, timeout: float = 30.0) -> None:
        self.port = free_port()
        self.child = Child("mongo_server", [sys.executable, "-m", "tests.fakes.mongo_server",
                                            "--port", str(self.port)],
                           {**os.environ, "PYTHONUNBUFFERED": "1"}, log_dir / "mongo_server.log")
        deadline = time.monotonic() + timeout
        while "ready on" not in self.child.tail(5):
            if not self.child.alive() or time.monotonic() > deadline:
                self.child.stop()
                raise RuntimeError(f"mongo_server did not start:\n{self.child.tail()}")
            time.sleep(0.1)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def stop(self) -> dict:
        return self.child.stop()


class SystemProcesses:
    """Every service in its own process against one vhost; see the module doc."""

    def __init__(self, amqp_uri: str, log_dir: Path, env: dict[str, str],
                 launcher: str = "services", customer_sync_mongo: str | None = None) -> None:
        """`customer_sync_mongo`: the database customer_sync and its applier share where the
        other services keep `mongomock://` (the bench gives them the wire stand-in)."""
        self.amqp_uri = amqp_uri
        self.customer_sync_mongo = customer_sync_mongo
        self.log_dir = log_dir
        self.launcher = launcher  # the module run with `python -m` to start a service
        self.base_env = {**os.environ, "AMQP_URI": amqp_uri, "LOG_LEVEL": "WARNING",
                         "PYTHONUNBUFFERED": "1", **env}
        self.children: dict[str, Child] = {}
        self.ports: dict[str, dict[str, int]] = {}
        self.starts: dict[str, int] = {}

    def _mongo_uri(self, name: str) -> str:
        if name in ("customer_sync", APPLIER) and self.customer_sync_mongo:
            return self.customer_sync_mongo
        return self.base_env.get("MONGO_URI", "mongomock://") or "mongomock://"

    @property
    def names(self) -> tuple[str, ...]:
        """Every process of the system: the services, and customer_sync's applier where it
        can share customer_sync's database (with `mongomock://` each process has its own, so
        customer_sync then applies its deliveries itself)."""
        split = not self._mongo_uri("customer_sync").startswith("mongomock")
        return SERVICE_NAMES + ((APPLIER,) if split else ())

    def _env(self, name: str) -> dict[str, str]:
        """The environment of instance `name`: the base one with ports of its own."""
        ports = self.ports.setdefault(name, {"web": free_port(), "metrics": free_port()})
        env = dict(self.base_env)
        if service_of(name) == "customer_sync" and APPLIER in self.names:
            env.setdefault("INBOX_APPLY", "applier")
        env.update({
            "MONGO_URI": self._mongo_uri(name),
            "WEB_SERVER_ADDRESS": f"127.0.0.1:{ports['web']}",
            "NOTIFICATIONS_WEB_SERVER_ADDRESS": f"127.0.0.1:{ports['web']}",
            "GATEWAY_WEB_SERVER_ADDRESS": f"127.0.0.1:{ports['web']}",
            "METRICS_PORT": str(ports["metrics"]),
        })
        if service_of(name) == "notifications":  # the links in its messages lead to its pages
            env.setdefault("NOTIFY_PUBLIC_URL", f"http://127.0.0.1:{ports['web']}")
        return env

    def web_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]['web']}"

    def topology(self) -> str:
        """Declare every consumer's queue first, as the deployment does."""
        return declare_topology(self.base_env)

    def start(self, *names: str, instances: int = 1, timeout: float = 90.0) -> None:
        """Start each named service (or instance, "loyalty@2") and wait until all are ready.
        `instances`: how many processes of each named service, "NAME" to "NAME@<instances>"."""
        if instances < 1:
            raise ValueError("a service runs in one instance at least")
        started = [instance_name(name, n) if INSTANCE_MARK not in name else name
                   for name in names for n in range(1, instances + 1)]
        if any(INSTANCE_MARK in name for name in started) and (
                self.base_env.get("MONGO_URI") or "mongomock://").startswith("mongomock"):
            raise ValueError("instances of one service share its database: point MONGO_URI at "
                             "the wire-protocol stand-in (MongoServerProcess), not mongomock")
        for name in started:
            self.starts[name] = self.starts.get(name, 0) + 1
            log = self.log_dir / f"{name}.{self.starts[name]}.log"
            self.children[name] = Child(name, [sys.executable, "-m", self.launcher,
                                               service_of(name)], self._env(name), log)
        for name in started:
            self.wait_ready(name, timeout)

    def instances(self, service: str) -> list[str]:
        """The instance names started for `service`, first to last."""
        return [name for name in self.children if service_of(name) == service]

    def metric(self, name: str, metric: str, **labels: str) -> float:
        """The sum of the samples of `metric` with these labels in instance `name`'s /metrics
        (0 when there is none): each process counts only what it did itself."""
        text = requests.get(f"http://127.0.0.1:{self.ports[name]['metrics']}/metrics",
                            timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(metric + "{") and not line.startswith(metric + " "):
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        url = f"http://127.0.0.1:{self.ports[name]['metrics']}/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = self.children[name]
            if not child.alive():
                raise RuntimeError(f"{name} exited ({child.proc.returncode}):\n{child.tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} not ready after {timeout}s:\n{self.children[name].tail()}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one instance's process ("loyalty", "loyalty@2"; SIGKILL by default) and wait
        for it to end."""
        child = self.children[name]
        child.proc.send_signal(sig)
        child.proc.wait(30)
        child.stop()

    def restart(self, name: str) -> None:
        if self.children[name].alive():
            terminate(self.children[name])
        self.start(name)

    def stop_all(self) -> dict[str, dict]:
        results = {}
        for name in reversed(list(self.children)):
            try:
                results[name] = terminate(self.children[name])
            except Exception as exc:  # never leave a child behind
                self.children[name].proc.kill()
                results[name] = {"how": f"killed ({exc})"}
        return results

    def logs_with(self, needle: str) -> dict[str, list[str]]:
        """Log lines containing `needle`, per log file (for a failure's evidence)."""
        found: dict[str, list[str]] = {}
        for path in sorted(self.log_dir.glob("*.log")):
            lines = [l for l in path.read_text(errors="replace").splitlines() if needle in l]
            if lines:
                found[path.name] = lines
        return found


def system_env(smtp, twilio, **overrides: str) -> dict[str, str]:
    """The services' environment for a whole-system run (scenario tests and `make bench`):
    in-memory databases, the local SMTP server and Twilio stand-in, fast sweeps and retries,
    and the REST reconciliation schedule pushed out of the run."""
    return {
        "MONGO_URI": "mongomock://",
        "EVENT_RETRY_DELAYS_MS": "200,1000,3000",
        "OUTBOX_SWEEP_SECONDS": "1", "INBOX_SWEEP_SECONDS": "1",
        "RECONCILE_POLL_SECONDS": "86400", "RECONCILE_INTERVAL_MINUTES": "100000",
        **stand_in_settings(smtp, twilio),
        "NOTIFY_POLL_SECONDS": "0.5", "NOTIFY_RETRY_SECONDS": "1",
        "GDPR_PROCESS_SECONDS": "1", "GATEWAY_KEY_CACHE_SECONDS": "0",
        "NOTIFY_LINK_SECRET": "system-run-link-secret-0123456789abcdef",
        **overrides,
    }


def register_store(procs: "SystemProcesses", shop, store: str, secret: str,
                   door_url: str | None = None) -> None:
    """Add the store over the operator CLI and register its webhooks in the shop (which pings
    each, as WooCommerce does on saving a webhook), as an operator sets a shop up. `door_url`:
    where the shop delivers (a load balancer before several customer_sync instances); the
    first customer_sync instance by default."""
    env = {"WOO_WEBHOOK_SECRET": secret, "WOO_CONSUMER_KEY": shop.consumer_key,
           "WOO_CONSUMER_SECRET": shop.consumer_secret}
    added = companion(procs.amqp_uri, "stores", "add", "--store", store, "--shop-url",
                      shop.base_url, env=env)
    if added.returncode != 0:
        raise RuntimeError(f"companion stores add failed: {added.stdout}{added.stderr}")
    registered = companion(procs.amqp_uri, "webhooks", "register", "--store", store,
                           "--delivery-url", door_url or procs.web_url("customer_sync"))
    if registered.returncode != 0:
        raise RuntimeError(f"companion webhooks register failed: "
                           f"{registered.stdout}{registered.stderr}")


def companion(amqp_uri: str, *argv: str, env: dict[str, str] | None = None,
              timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The operator CLI as a separate process, as an operator runs it."""
    return subprocess.run([sys.executable, "-c", "import sys; from ops.cli import main; "
                           "sys.exit(main())", "--amqp-uri", amqp_uri, *argv],
                          cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def wait_quiet(admin: BrokerAdmin, vhost: str, counters: Callable[[], tuple],
               settle: float = 8.0, timeout: float = 1800.0, poll: float = 1.0,
               parked_ok: bool = False) -> float:
    """Until every queue of the vhost is empty with nothing unacknowledged, and neither the
    vhost's publish count nor `counters()` (messages at the SMTP server and Twilio, say) moved
    for `settle` seconds. Answers the seconds waited. `parked_ok`: parked messages
    (`<service>.parked`) may stay (a fault test parks some on purpose)."""
    name = urllib.parse.quote(vhost, safe="")
    began = time.monotonic()
    last, since = None, None
    while time.monotonic() - began < timeout:
        queues = admin.session.get(
            f"{admin.base}/queues/{name}", auth=admin.auth, timeout=10,
            params={"columns": "name,messages,messages_unacknowledged,message_stats.publish"}
        ).json()
        # RPC queues carry the services' own timers' calls (gdpr polls, health): not work.
        work = [q for q in queues if not q["name"].startswith("rpc")
                and not (parked_ok and q["name"].endswith(".parked"))]
        busy = sum(int(q.get("messages") or 0) + int(q.get("messages_unacknowledged") or 0)
                   for q in work)
        routed = sum(int((q.get("message_stats") or {}).get("publish") or 0) for q in work)
        state = (busy, routed, counters())
        now = time.monotonic()
        if busy == 0 and state == last:
            if now - since >= settle:
                return round(now - began, 1)
        else:
            last, since = state, now
        time.sleep(poll)
    raise TimeoutError(f"the system did not go quiet in {timeout}s (last: {json.dumps(last, default=str)})")
