"""`python -m bench.webhooks`: webhook throughput of one customer_sync process beside a bare
nameko endpoint on the same machine.

    python -m bench.webhooks [--seconds 30] [--senders 16] [--json PATH] [--strict]

1. A fresh RabbitMQ virtual host (management API on 127.0.0.1:15672, deleted at the end).
2. One `python -m services customer_sync` process (in-memory mongomock database), a store
   registered over RPC, and a private queue bound to `customer_sync.events` (routing key `#`)
   that counts the events published.
3. N sender threads (real OS threads, one keep-alive HTTP connection each) post signed
   `order.created` webhooks, each a distinct order of a distinct customer, for the given
   seconds; then the benchmark waits (at most --drain-timeout seconds) until an `order.placed`
   event has been published for every accepted webhook.
4. The same senders for the same time against `python -m bench.bare_service` (nameko's web
   server with an endpoint that does nothing): what the framework alone can do here.

The benchmark process itself is deliberately not monkey-patched by eventlet. Every subprocess
is stopped (and killed if it does not stop) on every exit path; every wait is bounded; all
traffic goes to 127.0.0.1. The figures are printed and written as JSON (default
bench/results/webhooks.json). Exit status: 0 when the run completed (targets met or not; with
--strict, 3 when a target is missed), 1 when the run itself failed.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import math
import os
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

# nameko (imported by the RPC client and tests.support) imports eventlet, which announces its
# maintenance mode; docs/design.md records that choice. This process is never monkey-patched.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import requests  # noqa: E402
from kombu import Connection, Exchange, Queue  # noqa: E402

from bench.common import (Child, DrainsConnection, broker_unavailable,  # noqa: E402
                          interrupt_on_signals, log, machine, process_cpu_seconds,
                          source_state)
from services.customer_sync.door.signature import sign  # noqa: E402
from tests import payloads  # noqa: E402
from tests.support import BrokerAdmin, free_port  # noqa: E402

HOST = "127.0.0.1"
AMQP_BASE = f"amqp://guest:guest@{HOST}:5672/"
MANAGEMENT_URL = f"http://guest:guest@{HOST}:15672"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench" / "results" / "webhooks.json"

STORE_ID = "bench"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
WEBHOOK_ID = "17"
# The registered shop is a closed local port: nothing the service might call (reconciliation)
# leaves 127.0.0.1.
SHOP_URL = f"http://{HOST}:9/"

CUSTOMER_SYNC_ENV = {
    "MONGO_URI": "mongomock://bench",
    "LOG_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
    # The schedule would look for stores due for REST reconciliation within the run and then
    # retry the (unreachable) shop: background work unrelated to webhooks. Keep it out.
    "RECONCILE_POLL_SECONDS": "3600",
}

TARGET_RATIO = 0.60
TARGET_P99_MS = 50.0
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0


def wait_http(child: Child, method: str, url: str, timeout: float = START_TIMEOUT_S,
              expect: int = 200, body: bytes | None = None) -> float:
    """Poll until `url` answers `expect`; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} while starting:\n"
                               f"{child.tail()}")
        try:
            response = requests.request(method, url, data=body, timeout=5)
            if response.status_code == expect:
                return time.monotonic() - started
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{child.name} not ready at {url} after {timeout:.0f}s ({last}):\n"
                       f"{child.tail()}")


# -- events ----------------------------------------------------------------------------------
class EventCounter(DrainsConnection):
    """A private queue bound to `customer_sync.events` (`#`), consumed in a thread.

    Counts by routing key (the outbox publishes each event with its event_type as routing key)
    and by message id (the event_id), so a re-published event is counted once among the unique
    events and shows up in the difference between raw deliveries and unique events.
    """

    def __init__(self, amqp_uri: str) -> None:
        self._conn = Connection(amqp_uri, connect_timeout=10)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.by_type: Counter = Counter()  # raw deliveries
        self.ids: dict[str, set[str]] = {}  # unique event ids by type
        self.placed_ids: set[str] = set()
        self.placed_times: list[float] = []  # monotonic arrival time of each new order.placed
        self.total = 0
        self.error: str | None = None
        exchange = Exchange("customer_sync.events", type="topic", durable=True)
        self.queue = Queue(f"bench-events-{uuid.uuid4().hex[:8]}", exchange=exchange,
                           routing_key="#", exclusive=True, auto_delete=True)
        channel = self._conn.channel()
        exchange(channel).declare()  # same arguments as the service's publisher
        self._consumer = self._conn.Consumer([self.queue], channel=channel, no_ack=True,
                                             on_message=self._on_message)
        self._consumer.consume()  # declared and bound here, before any webhook is sent
        self._thread = threading.Thread(target=self._loop, name="event-counter", daemon=True)
        self._thread.start()

    def _on_message(self, message) -> None:
        event_type = message.delivery_info.get("routing_key", "?")
        now = time.monotonic()
        with self._lock:
            self.total += 1
            self.by_type[event_type] += 1
            message_id = message.properties.get("message_id") or uuid.uuid4().hex
            self.ids.setdefault(event_type, set()).add(message_id)
            if event_type == "order.placed":
                if message_id not in self.placed_ids:
                    self.placed_ids.add(message_id)
                    self.placed_times.append(now)

    def snapshot(self) -> dict:
        with self._lock:
            return {"total": self.total, "placed": len(self.placed_ids),
                    "by_type": dict(self.by_type),
                    "unique_by_type": {k: len(v) for k, v in self.ids.items()},
                    "unique_total": sum(len(v) for v in self.ids.values()),
                    "placed_times": list(self.placed_times)}

    def placed(self) -> int:
        with self._lock:
            return len(self.placed_ids)


# -- the webhooks ----------------------------------------------------------------------------
class OrderFactory:
    """Distinct, realistic `order.created` deliveries: unique order id, customer, email and
    date_modified_gmt (second resolution, like WooCommerce's)."""

    def __init__(self, run_id: str, first_id: int = 100_000) -> None:
        self.run_id = run_id
        self._ids = itertools.count(first_id)  # next() on a count is atomic under the GIL
        self.base = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)

    def next(self) -> tuple[bytes, dict]:
        n = next(self._ids)
        modified = (self.base + timedelta(seconds=n)).isoformat()
        created = (self.base - timedelta(minutes=5) + timedelta(seconds=n)).isoformat()
        body = payloads.order(
            order_id=n, customer_id=n, modified=modified,
            email=f"customer-{self.run_id}-{n}@example.com",
            total=f"{45 + n % 50}.90", date_created=created, date_created_gmt=created,
            date_paid=created, date_paid_gmt=created,
        )
        raw = json.dumps(body, separators=(",", ":")).encode()
        second = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "WooCommerce/9.6.0 Hookshot (WordPress/6.7.1)",
            "X-WC-Webhook-Source": SHOP_URL,
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Resource": "order",
            "X-WC-Webhook-Event": "created",
            "X-WC-Webhook-Signature": sign(raw, WEBHOOK_SECRET),
            "X-WC-Webhook-ID": WEBHOOK_ID,
            "X-WC-Webhook-Delivery-ID": hashlib.md5(f"{WEBHOOK_ID}{second}".encode()).hexdigest(),
        }
        return raw, headers


class Sender(threading.Thread):
    """One keep-alive HTTP/1.1 connection; posts until the deadline."""

    def __init__(self, index: int, port: int, path: str, factory: OrderFactory,
                 start_at: float, deadline: float, abort: threading.Event) -> None:
        super().__init__(name=f"sender-{index}", daemon=True)
        self.port, self.path, self.factory = port, path, factory
        self.start_at, self.deadline, self.abort = start_at, deadline, abort
        self.latencies: list[float] = []  # seconds, one per completed request
        self.outcomes: Counter = Counter()  # "accepted", "200:duplicate", "503", "exc:..."
        self.last_done = start_at

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT_S)

    def run(self) -> None:
        conn = self._connect()
        try:
            pause = self.start_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            while not self.abort.is_set() and time.monotonic() < self.deadline:
                raw, headers = self.factory.next()
                began = time.perf_counter()
                try:
                    conn.request("POST", self.path, body=raw, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.latencies.append(time.perf_counter() - began)
                    self.outcomes[f"exc:{type(exc).__name__}"] += 1
                    conn.close()
                    conn = self._connect()
                    time.sleep(0.01)
                    continue
                self.latencies.append(time.perf_counter() - began)
                self.outcomes[self._outcome(response.status, data)] += 1
                if response.will_close:
                    conn.close()
                    conn = self._connect()
            self.last_done = time.monotonic()
        finally:
            conn.close()

    @staticmethod
    def _outcome(status: int, data: bytes) -> str:
        if status != 200:
            return str(status)
        try:
            answer = json.loads(data).get("status")
        except (ValueError, AttributeError):
            return "200:unparsable"
        return "accepted" if answer == "accepted" else f"200:{answer}"


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def drive(port: int, seconds: float, senders: int, factory: OrderFactory, server_pid: int,
          abort: threading.Event) -> dict:
    """Run the senders; returns the traffic figures and the window's monotonic bounds."""
    path = f"/webhooks/woocommerce/{STORE_ID}"
    start_at = time.monotonic() + 0.5
    deadline = start_at + seconds
    threads = [Sender(i, port, path, factory, start_at, deadline, abort) for i in range(senders)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu_client0, cpu_server0 = time.process_time(), process_cpu_seconds(server_pid)
    for thread in threads:
        # Every request has REQUEST_TIMEOUT_S; one in flight at the deadline ends soon after.
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + REQUEST_TIMEOUT_S + 5)
    window_end = time.monotonic()
    cpu_client1, cpu_server1 = time.process_time(), process_cpu_seconds(server_pid)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        abort.set()
        raise RuntimeError(f"sender threads did not finish: {stuck}")
    elapsed = window_end - start_at
    latencies = sorted(x for t in threads for x in t.latencies)
    outcomes: Counter = Counter()
    for t in threads:
        outcomes.update(t.outcomes)
    accepted = outcomes.get("accepted", 0)
    errors = {k: v for k, v in sorted(outcomes.items()) if k != "accepted"}
    return {
        "requests": len(latencies),
        "accepted": accepted,
        "window_seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "accepted_per_s": round(accepted / elapsed, 1),
        "latency_ms": {
            "p50": ms(percentile(latencies, 0.50)),
            "p90": ms(percentile(latencies, 0.90)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(latencies[-1] if latencies else None),
            "mean": ms(sum(latencies) / len(latencies) if latencies else None),
        },
        "errors_by_status": errors,
        "cpu_seconds": {
            "server": (round(cpu_server1 - cpu_server0, 2)
                       if cpu_server0 is not None and cpu_server1 is not None else None),
            "benchmark_process": round(cpu_client1 - cpu_client0, 2),
        },
        "_window": (start_at, window_end),
    }


# -- the two targets -------------------------------------------------------------------------
def run_customer_sync(args, vhost_uri: str, results_dir: Path, run_id: str,
                      children: list[Child], abort: threading.Event) -> dict:
    port = free_port()
    env = {**os.environ, **CUSTOMER_SYNC_ENV, "AMQP_URI": vhost_uri,
           "WEB_SERVER_ADDRESS": f"{HOST}:{port}"}
    child = Child("customer_sync", [sys.executable, "-m", "services", "customer_sync"], env,
                  results_dir / "customer_sync.log")
    children.append(child)
    log(f"customer_sync pid {child.pid} on {HOST}:{port}; waiting for /health/ready")
    ready_s = wait_http(child, "GET", f"http://{HOST}:{port}/health/ready")

    from nameko.standalone.rpc import ClusterRpcProxy  # nameko's client needs no monkey-patching

    with ClusterRpcProxy({"AMQP_URI": vhost_uri}, timeout=30) as rpc:
        rpc.customer_sync.register_store({
            "store_id": STORE_ID, "shop_url": SHOP_URL, "webhook_secret": WEBHOOK_SECRET,
            "consumer_key": "ck_bench", "consumer_secret": "cs_bench",
        })
    counter = EventCounter(vhost_uri)
    try:
        before = counter.snapshot()
        log(f"sending for {args.seconds:g}s with {args.senders} senders")
        figures = drive(port, args.seconds, args.senders, OrderFactory(run_id), child.pid, abort)
        start_at, window_end = figures.pop("_window")
        accepted = figures["accepted"]
        log(f"sent {figures['requests']} requests, {accepted} accepted; waiting for "
            f"{accepted} order.placed events (at most {args.drain_timeout:g}s)")
        drain_deadline = time.monotonic() + args.drain_timeout
        while (counter.placed() - before["placed"] < accepted and time.monotonic() < drain_deadline
               and child.alive() and counter.error is None and not abort.is_set()):
            time.sleep(0.05)
        drained_at = time.monotonic()
        after = counter.snapshot()
        if child.alive():
            time.sleep(0.5)  # stragglers of other types (customer.created) for the total
        final = counter.snapshot()
    finally:
        counter.close()
    placed = after["placed"] - before["placed"]
    drained = placed >= accepted
    times = after["placed_times"][before["placed"]:]
    in_window = sum(1 for t in times if t <= window_end)
    window = window_end - start_at
    last = times[-1] if drained and times else drained_at
    until = last - start_at
    after_window = max(0.0, last - window_end)

    def delta(key: str) -> dict:
        return {k: v - before[key].get(k, 0) for k, v in sorted(final[key].items())}

    figures["ready_after_s"] = round(ready_s, 2)
    figures["events"] = {
        "order_placed_expected": accepted,
        "order_placed_published": placed,
        "order_placed_in_window": in_window,
        "order_placed_per_s_in_window": round(in_window / window, 1),
        "drained": drained,
        "drain_timeout_s": args.drain_timeout,
        # seconds after the window until the last expected order.placed (or until giving up)
        "drain_seconds_after_window": round(after_window, 2),
        "order_placed_per_s_until_drained": round(placed / until, 1) if drained else None,
        "order_placed_per_s_until_timeout": None if drained else round(placed / until, 1),
        "order_placed_per_s_after_window": (round((placed - in_window) / after_window, 1)
                                            if after_window > 0 else None),
        "deliveries_total": final["total"] - before["total"],
        "unique_events_total": final["unique_total"] - before["unique_total"],
        "deliveries_by_type": delta("by_type"),
        "unique_events_by_type": delta("unique_by_type"),
        "consumer_error": counter.error,
    }
    if not child.alive():
        figures["crashed"] = {"returncode": child.proc.returncode, "log_tail": child.tail()}
    log("stopping customer_sync")
    figures["stop"] = child.stop()
    return figures


def run_bare(args, vhost_uri: str, results_dir: Path, run_id: str, children: list[Child],
             abort: threading.Event) -> dict:
    port = free_port()
    env = {**os.environ, "AMQP_URI": vhost_uri, "WEB_SERVER_ADDRESS": f"{HOST}:{port}",
           "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    child = Child("bare_service", [sys.executable, "-m", "bench.bare_service"], env,
                  results_dir / "bare_service.log")
    children.append(child)
    log(f"bare_service pid {child.pid} on {HOST}:{port}")
    ready_s = wait_http(child, "POST", f"http://{HOST}:{port}/webhooks/woocommerce/{STORE_ID}",
                        body=b"{}")
    log(f"sending for {args.seconds:g}s with {args.senders} senders")
    figures = drive(port, args.seconds, args.senders, OrderFactory(run_id, first_id=50_000_000),
                    child.pid, abort)
    figures.pop("_window")
    figures["ready_after_s"] = round(ready_s, 2)
    if not child.alive():
        figures["crashed"] = {"returncode": child.proc.returncode, "log_tail": child.tail()}
    log("stopping bare_service")
    figures["stop"] = child.stop()
    return figures


# -- report ----------------------------------------------------------------------------------
def verdicts(results: dict) -> dict:
    cs, bare = results["targets"]["customer_sync"], results["targets"]["bare"]
    ratio = (cs["accepted_per_s"] / bare["accepted_per_s"]) if bare["accepted_per_s"] else None
    p99 = cs["latency_ms"]["p99"]
    return {
        "ratio": round(ratio, 3) if ratio is not None else None,
        "checks": [
            {"target": f"ratio >= {TARGET_RATIO:.2f}",
             "value": round(ratio, 3) if ratio is not None else None,
             "met": ratio is not None and ratio >= TARGET_RATIO},
            {"target": f"p99 < {TARGET_P99_MS:g} ms", "value": p99,
             "met": p99 is not None and p99 < TARGET_P99_MS},
        ],
    }


def render(results: dict) -> str:
    t = results["targets"]
    cs, bare = t["customer_sync"], t["bare"]
    m = results["machine"]

    def fmt(v, digits=1):
        return "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.{digits}f}"

    def errs(f):
        return ", ".join(f"{k}: {v}" for k, v in f["errors_by_status"].items()) or "none"

    rows = [
        ("requests", fmt(cs["requests"]), fmt(bare["requests"])),
        ("accepted", fmt(cs["accepted"]), fmt(bare["accepted"])),
        ("accepted/s", fmt(cs["accepted_per_s"]), fmt(bare["accepted_per_s"])),
        ("latency p50 ms", fmt(cs["latency_ms"]["p50"], 2), fmt(bare["latency_ms"]["p50"], 2)),
        ("latency p90 ms", fmt(cs["latency_ms"]["p90"], 2), fmt(bare["latency_ms"]["p90"], 2)),
        ("latency p99 ms", fmt(cs["latency_ms"]["p99"], 2), fmt(bare["latency_ms"]["p99"], 2)),
        ("latency max ms", fmt(cs["latency_ms"]["max"], 2), fmt(bare["latency_ms"]["max"], 2)),
        ("errors", errs(cs), errs(bare)),
        ("server CPU s (of window)", f"{fmt(cs['cpu_seconds']['server'])} / {cs['window_seconds']:.1f}",
         f"{fmt(bare['cpu_seconds']['server'])} / {bare['window_seconds']:.1f}"),
        ("bench process CPU s", fmt(cs["cpu_seconds"]["benchmark_process"]),
         fmt(bare["cpu_seconds"]["benchmark_process"])),
    ]
    width = max(len(r[0]) for r in rows)
    c1 = max(len("customer_sync"), *(len(r[1]) for r in rows))
    c2 = max(len("bare nameko"), *(len(r[2]) for r in rows))
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu_model']}, Python {m['python']}",
        f"{results['seconds']:g} s per target, {results['senders']} senders, order.created webhooks",
        "",
        f"{'':<{width}}  {'customer_sync':>{c1}}  {'bare nameko':>{c2}}",
    ]
    lines += [f"{name:<{width}}  {a:>{c1}}  {b:>{c2}}" for name, a, b in rows]
    ev = cs["events"]
    lines += [
        "",
        f"events: order.placed {ev['order_placed_published']:,} of {ev['order_placed_expected']:,} "
        f"expected: " + (f"drained {ev['drain_seconds_after_window']:.2f} s after the window"
                         if ev["drained"] else
                         f"NOT drained, gave up {ev['drain_seconds_after_window']:.2f} s after "
                         f"the window (--drain-timeout {ev['drain_timeout_s']:g})"),
        f"        order.placed/s: during the window {fmt(ev['order_placed_per_s_in_window'])}, "
        + (f"until drained {fmt(ev['order_placed_per_s_until_drained'])}" if ev["drained"] else
           f"until giving up {fmt(ev['order_placed_per_s_until_timeout'])}")
        + f", after the window {fmt(ev['order_placed_per_s_after_window'])}",
        f"        unique events {ev['unique_events_total']:,}: "
        + ", ".join(f"{k} {v:,}" for k, v in ev["unique_events_by_type"].items()),
        f"        deliveries to the bench queue {ev['deliveries_total']:,} (re-publishes included)",
    ]
    if ev["consumer_error"]:
        lines.append(f"        event consumer failed: {ev['consumer_error']}")
    v = results["verdict"]
    lines += ["", f"ratio customer_sync ÷ bare accepted/s: {fmt(v['ratio'], 3)}"]
    for check in v["checks"]:
        lines.append(f"  target {check['target']:<14} value {fmt(check['value'], 3 if 'ratio' in check['target'] else 2)}: "
                     f"{'met' if check['met'] else 'NOT met'}")
    for name, f in t.items():
        if "crashed" in f:
            lines.append(f"WARNING: {name} exited during the run ({f['crashed']['returncode']})")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="sending time per target")
    parser.add_argument("--senders", type=int, default=16, help="concurrent sender threads")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="longest wait for the events after sending stops")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.senders < 1 or args.drain_timeout < 0:
        parser.error("--seconds and --drain-timeout must be positive, --senders at least 1")

    interrupt_on_signals()
    results_dir = DEFAULT_JSON.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    vhost = f"bench-webhooks-{run_id}"
    vhost_uri = f"{AMQP_BASE}{vhost}"
    admin = BrokerAdmin(MANAGEMENT_URL)
    if broker_unavailable(admin, HOST):
        return 1
    children: list[Child] = []
    abort = threading.Event()
    results: dict = {
        "benchmark": "webhooks", "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine(), "source": source_state(), "seconds": args.seconds, "senders": args.senders,
        "webhook": "order.created, a distinct order and a distinct new customer per request",
        "mongo": "mongomock://bench (in memory, in the customer_sync process)",
        "customer_sync_env": CUSTOMER_SYNC_ENV,
        "notes": [
            "closed loop: each sender waits for an answer before its next request, so latency "
            "and throughput are linked (mean latency ~ senders / requests per second)",
            "the benchmark process and the target share this machine's CPUs: see cpu_seconds",
            "latency is measured in the sender around one request/response on a kept-alive "
            "connection",
        ],
        "targets": {},
    }
    admin.create_vhost(vhost)
    log(f"vhost {vhost} created")
    try:
        results["targets"]["customer_sync"] = run_customer_sync(args, vhost_uri, results_dir,
                                                                run_id, children, abort)
        results["targets"]["bare"] = run_bare(args, vhost_uri, results_dir, run_id, children,
                                              abort)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 1
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        abort.set()
        for child in children:
            if child.alive():
                log(f"stopping {child.name} (pid {child.pid})")
            try:
                child.stop()
            except Exception as exc:  # never leave a child behind: last resort
                log(f"stopping {child.name} failed ({exc}); killing it")
                child.proc.kill()
        admin.delete_vhost(vhost)
        log(f"vhost {vhost} deleted")
    results["verdict"] = verdicts(results)
    print(render(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results written to {args.json}")
    if args.strict and not all(c["met"] for c in results["verdict"]["checks"]):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
