"""The fault tests' system: the six services as OS processes (harness.SystemProcesses) with the
SMTP server and Twilio stand-ins, on any broker (the shared one, or a private node that a test
may stop), and one store with its own fake shop and seeded scenario per fault.

Each fault gets a store of its own, so one set of processes serves several faults in turn and
each store's oracle (demo/traffic.py) stays exact; the messages the SMTP server and
Twilio received while a store's scenario ran are its own (faults run one after the other).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from nameko.standalone.rpc import ClusterRpcProxy

from demo.mailbox import SmtpServer
from demo.sms import FakeTwilio
from demo.shop import FakeWooShop
from demo.traffic import WooTraffic
from tests.support import BrokerAdmin
from tests.system.harness import (APPLIER, SERVICE_NAMES, MongoServerProcess, SystemProcesses,
                                  companion, system_env, wait_quiet)

# The services that consume events and can run as several instances (the gateway runs once).
CONSUMER_SERVICES = ("customer_sync", "segmentation", "loyalty", "notifications", "gdpr")
from tests.system.scenario import check_consistency, configure, pages


def size(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def log_dir(name: str) -> Path:
    """A directory for one stack's service logs: under SYSTEM_LOG_DIR when set."""
    base = os.environ.get("SYSTEM_LOG_DIR")
    path = Path(base) / name if base else Path(tempfile.mkdtemp(prefix=f"{name}-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cli_json(done: subprocess.CompletedProcess) -> dict | list:
    """What a `companion --json ...` run printed."""
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


class FaultStack:
    """Six service processes, SMTP and Twilio stand-ins, on one vhost; see the module doc."""

    def __init__(self, admin: BrokerAdmin, vhost: str, amqp_uri: str, log_dir: Path,
                 env: dict[str, str] | None = None, instances: int = 1) -> None:
        """`instances`: processes of each consumer service; above 1 they share their databases
        in the wire stand-in (tests/fakes/mongo_server.py), and customer_sync's door hands its
        deliveries to `customer_sync_applier` as deployed."""
        self.admin, self.vhost, self.amqp_uri, self.log_dir = admin, vhost, amqp_uri, log_dir
        self.instances = instances
        self.fault_file = log_dir / "failing-handlers"
        self.mongo = MongoServerProcess(log_dir) if instances > 1 else None
        self.smtp = SmtpServer().start()
        self.twilio = FakeTwilio(seed=5).start()
        if self.mongo is not None:
            env = {**(env or {}), "MONGO_URI": self.mongo.uri}
        self.procs = SystemProcesses(amqp_uri, log_dir, system_env(
            self.smtp, self.twilio,
            # Reconciliation looks for due stores every 2 s; a store's interval is its own
            # (`stores add --reconcile-minutes`), and effectively never unless set.
            RECONCILE_POLL_SECONDS="2", WOO_MAX_RETRIES="2",
            FAULT_FAILING_HANDLERS_FILE=str(self.fault_file), **(env or {})),
            launcher="tests.system.fault_launcher")

    def start(self) -> "FaultStack":
        began = time.monotonic()
        self.procs.topology()
        if self.instances == 1:
            self.procs.start(*SERVICE_NAMES)
        else:
            self.procs.start(*CONSUMER_SERVICES, instances=self.instances)
            self.procs.start(*(n for n in SERVICE_NAMES if n not in CONSUMER_SERVICES))
        if APPLIER in self.procs.names:
            self.procs.start(APPLIER)
        print(f"{len(self.procs.children)} processes started in "
              f"{time.monotonic() - began:.1f}s")
        return self

    def stop(self) -> None:
        try:
            # SIGTERM to all at once, so they stop gracefully side by side; then stop_all
            # escalates for any that did not end in 30 s.
            children = [c for c in self.procs.children.values() if c.alive()]
            for child in children:
                child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            for child in children:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            self.procs.stop_all()
        finally:
            self.twilio.stop()
            self.smtp.stop()
            if self.mongo is not None:
                self.mongo.stop()

    @contextmanager
    def rpc(self, timeout: float = 60.0) -> Iterator:
        """A fresh RPC client (a broker restart ends the old one's connection)."""
        with ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=timeout) as proxy:
            yield proxy

    def companion(self, *argv: str, env: dict[str, str] | None = None):
        return companion(self.amqp_uri, *argv, env={
            "RABBITMQ_MANAGEMENT_URL": self.admin.base.removesuffix("/api"), **(env or {})})

    def quiet(self, parked_ok: bool = False, timeout: float = 600.0) -> float:
        """harness.wait_quiet with its 8 s settle: the management API's queue figures are
        samples taken every 5 s, and a message bouncing through a 3 s retry queue between two
        samples is seen by neither (a 4 s settle missed retries in flight)."""
        return wait_quiet(self.admin, self.vhost,
                          lambda: (self.smtp.received, len(self.twilio.messages)),
                          timeout=timeout, parked_ok=parked_ok)

    def metric(self, process: str, name: str, **labels: str) -> float:
        """The sum of the samples of `name` with these labels in a service process's
        /metrics (0 when there is none)."""
        return self.procs.metric(process, name, **labels)

    def fail_handlers(self, *handler_keys: str) -> None:
        """Make these handlers fail (tests/system/fault_launcher.py) until `clear_handler_faults()`."""
        self.fault_file.write_text("".join(f"{key}\n" for key in handler_keys))

    def clear_handler_faults(self) -> None:
        self.fault_file.unlink(missing_ok=True)


class StoreScenario:
    """One store, its fake shop and a seeded WooTraffic plan, driven through the running stack."""

    def __init__(self, stack: FaultStack, store: str, seed: int, customers: int, orders: int,
                 *, reconcile_minutes: int | None = None, consent_ratio: float = 0.5,
                 start: datetime | None = None, span_days: int = 199,
                 max_trigger_age_hours: int | None = 0) -> None:
        self.stack, self.store = stack, store
        self.secret = f"whsec-{store}-1"
        self.shop = FakeWooShop(seed=seed, ping_webhooks=True).start()
        self.timings: dict[str, float] = {}
        self._began = time.monotonic()
        env = {"WOO_WEBHOOK_SECRET": self.secret, "WOO_CONSUMER_KEY": self.shop.consumer_key,
               "WOO_CONSUMER_SECRET": self.shop.consumer_secret}
        argv = ["stores", "add", "--store", store, "--shop-url", self.shop.base_url]
        if reconcile_minutes is not None:
            argv += ["--reconcile-minutes", str(reconcile_minutes)]
        added = stack.companion(*argv, env=env)
        assert added.returncode == 0, added.stdout + added.stderr
        registered = stack.companion("webhooks", "register", "--store", store, "--delivery-url",
                                     stack.procs.web_url("customer_sync"))
        assert registered.returncode == 0, registered.stdout + registered.stderr
        with stack.rpc() as rpc:
            configure(rpc, store, max_trigger_age_hours)
            # A new store is reconciled at once: let that first (empty) pass finish before the
            # shop fills, so what arrives later comes by the path each fault test chooses.
            deadline = time.monotonic() + 60
            while rpc.customer_sync.store_health(store)["last_reconciled_at"] is None:
                assert time.monotonic() < deadline, "the store's first reconciliation never ran"
                time.sleep(0.5)
        self.mail_from, self.sms_from = len(stack.smtp.messages), len(stack.twilio.messages)
        if start is None:
            now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
            start = now - timedelta(days=200)
        self.traffic = WooTraffic(self.shop, seed, customers, orders, start=start,
                                  span_days=span_days, consent_ratio=consent_ratio).build()
        print(f"{store} plan:", self.traffic.summary())

    def lap(self, label: str) -> None:
        self.timings[label] = round(time.monotonic() - self._began, 1)

    def sign_up(self) -> None:
        """Customers' webhooks, then the consent of those who opt in to marketing email."""
        report = self.traffic.deliver(self.traffic.customer_deliveries)
        assert not report.failures, report.failures[:10]
        self.stack.quiet()
        if self.traffic.consenting:
            with self.stack.rpc() as rpc:
                registered = {c["woo_customer_id"]: c for c in pages(
                    rpc.customer_sync.list_customers, self.store, None) if c.get("registered")}
                for woo_id in sorted(self.traffic.consenting):
                    rpc.gdpr.set_consent(self.store, registered[woo_id]["customer_id"],
                                         "email_marketing", True, "operator", "fault-test",
                                         "opted in at checkout")
            self.stack.quiet()
        self.lap("customers signed up")

    def order_slices(self, parts: int) -> list[list]:
        deliveries = self.traffic.order_deliveries
        step = -(-len(deliveries) // parts)
        return [deliveries[i:i + step] for i in range(0, len(deliveries), step)]

    def deliver(self, deliveries: list, **options) -> dict:
        report = self.traffic.deliver(deliveries, **options)
        assert not report.failures, report.failures[:10]
        return {"sent": report.sent, "skipped": report.skipped, "statuses": report.statuses}

    def settle_and_check(self, parked_ok: bool = False) -> dict:
        """Quiet, a segmentation recompute (time-based segments), quiet, then the oracle."""
        self.stack.quiet(parked_ok=parked_ok)
        with self.stack.rpc() as rpc:
            rpc.segmentation.recompute_store(self.store)
        self.stack.quiet(parked_ok=parked_ok)
        self.lap("quiet")
        with self.stack.rpc() as rpc:
            checked = check_consistency(rpc, self.store, self.traffic,
                                        self.stack.smtp.messages[self.mail_from:],
                                        self.stack.twilio.messages[self.sms_from:])
        self.lap("checked")
        print(f"{self.store} timings:", json.dumps(self.timings))
        return checked

    def close(self) -> None:
        self.shop.stop()
