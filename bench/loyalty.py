"""`python -m bench.loyalty`: how fast one loyalty process turns a backlog of `order.placed`
events into points, beside an empty nameko handler draining the same backlog.

    python -m bench.loyalty [--events 20000] [--customers 2000] [--timeout 900]
                            [--max-workers 10] [--json PATH] [--only-empty] [--strict]

For each target, in a fresh RabbitMQ virtual host of its own (management API on
127.0.0.1:15672; deleted at the end, also on failure):

1. Start the target once (`python -m services loyalty`, or `python -m bench.empty_handler`) so
   it declares its durable queues; wait until the queue bound to `order.placed` exists (found
   by name through the management API, never hard-coded) and has a consumer; stop it.
2. Queue the backlog ahead: N `order.placed` envelopes (`shared.events.build_event`, the
   contract's sample varied: distinct orders, `--customers` customers with N/customers orders
   each, status processing, totals in minor units), published to `customer_sync.events` with
   publisher confirms in batches of 500. Both targets get the same messages.
3. Start the target again and time the drain. Loyalty is done when N distinct
   `loyalty.points_changed` events (one per earning order) have reached a private queue bound
   to `loyalty.events`, declared before the restart; the empty handler when its queue holds no
   ready message. Queue depths are read with passive declares (exact and immediate; the
   management API's figures lag by its statistics interval, 5 s by default).

Rates are N / seconds from the moment the restarted process had a consumer on the queue (its
start-up, imports and index creation, is reported apart, as "from process start"). Also
recorded: CPU seconds of each child and of the broker during its drain, loyalty's peak RSS
(VmHWM), the machine's load, the code measured. Target: loyalty's rate at least
0.50 of the empty handler's. The figures are printed and written as JSON (default
bench/results/loyalty.json; with --only-empty, bench/results/loyalty-empty.json). Exit status:
0 when the run completed (target met or not; with --strict, 3 when missed), 1 when it failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

# shared.events and tests.support import nameko, which imports eventlet, which announces its
# maintenance mode (docs/design.md records that choice). This process is never monkey-patched.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import amqp  # noqa: E402
from kombu import Connection, Exchange, Queue  # noqa: E402

from bench.common import (Child, DrainsConnection, broker_unavailable,  # noqa: E402
                          interrupt_on_signals, log, machine, process_cpu_seconds,
                          source_state, stop_children_and_vhosts, terminate, write_results)
from shared.events import build_event, contract  # noqa: E402
from shared.messaging.publisher import (ConfirmingPublisher, OutgoingMessage,  # noqa: E402
                                        events_exchange)
from tests.support import BrokerAdmin, free_port  # noqa: E402

HOST = "127.0.0.1"
AMQP_BASE = f"amqp://guest:guest@{HOST}:5672/"
MANAGEMENT_URL = f"http://guest:guest@{HOST}:15672"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_JSON = RESULTS_DIR / "loyalty.json"
EMPTY_ONLY_JSON = RESULTS_DIR / "loyalty-empty.json"

STORE_ID = "bench"
SOURCE = "customer_sync"
EVENT_TYPE = "order.placed"
POINTS_EVENT = "loyalty.points_changed"
CURRENCY = "EUR"

TARGET_RATIO = 0.50
PUBLISH_BATCH = 500
POLL_S = 0.05  # passive declares while draining: the end of a drain is known to within this
START_TIMEOUT_S = 60.0
SETTLE_S = 1.0  # after the drain: late or duplicate events still counted
# Queue empty but events missing: give up after this long without a new one (beyond the
# outbox's 30 s safety sweep), and report the drain as incomplete rather than time out.
STALL_S = 40.0

LOYALTY_ENV = {
    "MONGO_URI": "mongomock://bench-loyalty",
    # One log line per event at INFO would measure the terminal, not loyalty; errors still show.
    "LOG_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
}


# -- the backlog -----------------------------------------------------------------------------
def _money(amount: int) -> dict:
    return {"amount": amount, "currency": CURRENCY}


def build_backlog(events: int, customers: int) -> list[OutgoingMessage]:
    """N valid `order.placed` envelopes from the contract's sample: order i belongs to customer
    i mod `customers` (so consecutive events mostly touch different customers, as in a shop),
    dated over the past 30 days in order, items 15.00 to 194.99 plus 4.90 shipping."""
    return list(iter_backlog(events, customers))


def iter_backlog(events: int, customers: int, store_id: str = STORE_ID,
                 first_order: int = 500_000):
    """build_backlog's envelopes one at a time (a backlog of 100,000 need not sit in memory
    at once), for any store; order i is `first_order + i`."""
    sample = contract(EVENT_TYPE).sample
    line = sample["line_items"][0]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(days=30)
    step = timedelta(days=30) / max(events, 1)
    for i in range(events):
        created = start + step * i
        items = 1500 + (i * 7919) % 18000
        shipping = 490
        order_id = str(first_order + i)
        data = {
            **sample,
            "order_id": order_id, "number": order_id,
            "customer_id": f"c-bench-{i % customers:05d}", "is_guest": False,
            "status": "processing", "currency": CURRENCY,
            "total": _money(items + shipping), "subtotal": _money(items),
            "discount_total": _money(0), "shipping_total": _money(shipping),
            "tax_total": _money(0), "total_refunded": _money(0),
            "date_created": created.isoformat(),
            "date_paid": (created + timedelta(minutes=1)).isoformat(), "date_completed": None,
            "line_items": [{**line, "quantity": 1, "subtotal": _money(items),
                            "total": _money(items)}],
            "coupon_codes": [],
        }
        event = build_event(EVENT_TYPE, store_id=store_id, data=data,
                            occurred_at=created + timedelta(minutes=1))
        yield OutgoingMessage(events_exchange(SOURCE), EVENT_TYPE, event.to_message(),
                              message_id=event.event_id)


def publish_backlog(amqp_uri: str, messages: list[OutgoingMessage]) -> dict:
    publisher = ConfirmingPublisher(amqp_uri)
    started = time.monotonic()
    try:
        for first in range(0, len(messages), PUBLISH_BATCH):
            publisher.publish_batch(messages[first:first + PUBLISH_BATCH])
    finally:
        publisher.close()
    seconds = time.monotonic() - started
    return {"messages": len(messages), "seconds": round(seconds, 3),
            "per_s": round(len(messages) / seconds, 1) if seconds > 0 else None}


# -- observing the broker --------------------------------------------------------------------
class QueueProbe:
    """Passive queue declares on a connection of its own: a queue's ready messages and its
    consumers as the broker holds them now (the management API's figures lag)."""

    def __init__(self, amqp_uri: str) -> None:
        self._conn = Connection(amqp_uri, connect_timeout=10)
        self._conn.connect()
        self._channel = self._conn.channel()

    def state(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers), or None when the queue does not exist."""
        try:
            ok = self._channel.queue_declare(queue=queue, passive=True)
        except amqp.exceptions.NotFound:
            self._channel = self._conn.channel()  # the broker closed the channel
            return None
        return ok.message_count, ok.consumer_count

    def close(self) -> None:
        try:
            self._conn.release()
        except Exception:  # closing is best effort; the vhost is deleted anyway
            pass


def list_queues(admin: BrokerAdmin, vhost: str) -> list[dict]:
    name = urllib.parse.quote(vhost, safe="")
    response = admin.session.get(f"{admin.base}/queues/{name}", auth=admin.auth, timeout=10,
                                 params={"columns": "name,messages,consumers"})
    response.raise_for_status()
    return response.json()


class EventCounter(DrainsConnection):
    """A private queue bound to an events exchange (`#`), consumed in a thread: raw deliveries
    and distinct event ids by routing key, the arrival time of each new `points_changed`, and
    the points those carry by entry kind."""

    def __init__(self, amqp_uri: str, exchange_name: str) -> None:
        self._conn = Connection(amqp_uri, connect_timeout=10)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.by_type: Counter = Counter()
        self.ids: dict[str, set[str]] = {}
        self.points_times: list[float] = []  # monotonic arrival of each new points_changed
        self.points_by_kind: Counter = Counter()
        self.unparsable = 0
        self.error: str | None = None
        exchange = Exchange(exchange_name, type="topic", durable=True)
        self.queue = Queue(f"bench-count-{uuid.uuid4().hex[:8]}", exchange=exchange,
                           routing_key="#", exclusive=True, auto_delete=True)
        channel = self._conn.channel()
        exchange(channel).declare()  # the same arguments as the service's publisher
        self._consumer = self._conn.Consumer([self.queue], channel=channel, no_ack=True,
                                             on_message=self._on_message)
        self._consumer.consume()
        self._thread = threading.Thread(target=self._loop, name="event-counter", daemon=True)
        self._thread.start()

    def _on_message(self, message) -> None:
        now = time.monotonic()
        event_type = message.delivery_info.get("routing_key", "?")
        try:
            body = json.loads(message.body)
        except (TypeError, ValueError):
            body = None
        message_id = (message.properties.get("message_id")
                      or (body or {}).get("event_id") or uuid.uuid4().hex)
        with self._lock:
            self.by_type[event_type] += 1
            seen = self.ids.setdefault(event_type, set())
            if message_id in seen:
                return
            seen.add(message_id)
            if event_type == POINTS_EVENT:
                self.points_times.append(now)
                data = (body or {}).get("data") or {}
                if isinstance(data.get("delta"), int):
                    self.points_by_kind[data.get("kind", "?")] += data["delta"]
                else:
                    self.unparsable += 1

    def points_events(self) -> int:
        with self._lock:
            return len(self.points_times)

    def snapshot(self) -> dict:
        with self._lock:
            return {"deliveries_by_type": dict(sorted(self.by_type.items())),
                    "unique_by_type": {k: len(v) for k, v in sorted(self.ids.items())},
                    "points_by_kind": dict(sorted(self.points_by_kind.items())),
                    "points_events_without_delta": self.unparsable,
                    "points_times": list(self.points_times)}


def measured_code() -> dict:
    """source_state() lists modified tracked files only; the service measured here may be new
    (untracked), so record its files' state and a digest of their content too."""
    paths = ["services/loyalty", "bench/loyalty.py", "bench/empty_handler.py"]
    digest = hashlib.sha256()
    for path in sorted(p for base in paths for p in ([ROOT / base] if (ROOT / base).is_file()
                                                    else (ROOT / base).rglob("*.py"))):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    try:
        status = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--",
                                 *paths], cwd=ROOT, timeout=10, capture_output=True, text=True)
        changes = status.stdout.splitlines() if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        changes = None
    return {"paths": paths, "uncommitted": changes, "sha256": digest.hexdigest()}


# -- the machine -----------------------------------------------------------------------------
def system_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def broker_pid() -> int | None:
    """The local RabbitMQ (beam.smp) process, whose CPU competes with the targets'."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


def memory_kib(pid: int, key: str) -> int | None:
    """A VmHWM/VmRSS line of /proc/<pid>/status, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class LoadWindow:
    """What the machine did between start() and stop(): all CPUs' busy share, the broker's and
    this process's CPU seconds, the load average at both ends."""

    def __init__(self) -> None:
        self._broker = broker_pid()
        self._ticks = system_cpu_ticks()
        self._broker_cpu = process_cpu_seconds(self._broker) if self._broker else None
        self._own_cpu = time.process_time()
        self._load = os.getloadavg()

    def stop(self) -> dict:
        busy1, total1 = system_cpu_ticks()
        busy0, total0 = self._ticks
        broker = process_cpu_seconds(self._broker) if self._broker else None
        return {
            "system_busy_share": round((busy1 - busy0) / (total1 - total0), 3)
            if total1 > total0 else None,
            "broker_cpu_seconds": round(broker - self._broker_cpu, 2)
            if broker is not None and self._broker_cpu is not None else None,
            "benchmark_process_cpu_seconds": round(time.process_time() - self._own_cpu, 2),
            "loadavg_at_start": [round(x, 2) for x in self._load],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        }


# -- one target ------------------------------------------------------------------------------
@dataclass
class Target:
    """A consumer process and how to tell its `order.placed` queue and its end of the drain."""

    name: str
    argv: list[str]
    env: dict
    queue_matches: Callable[[str], bool]
    counts_points: bool  # done when N points_changed arrived (else when the queue is empty)


def _is_loyalty_order_placed(name: str) -> bool:
    # nameko names a handler's queue evt-<source>-<event>--<service>.<method>; the reliable
    # handler's delay queues add `.retry.<ms>` and receive nothing from the exchange.
    return (EVENT_TYPE in name and "loyalty" in name and ".retry." not in name
            and not name.endswith(".parked"))


def _is_empty_order_placed(name: str) -> bool:
    return EVENT_TYPE in name and "bench_empty_handler" in name


def wait_for_queues(child: Child, admin: BrokerAdmin, vhost: str, probe: QueueProbe,
                    matches: Callable[[str], bool]) -> list[str]:
    """Until the target's order.placed queue(s) exist and have a consumer; their names."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} while "
                               f"starting:\n{child.tail()}")
        names = sorted(q["name"] for q in list_queues(admin, vhost) if matches(q["name"]))
        states = [probe.state(n) for n in names]
        if names and all(s is not None and s[1] >= 1 for s in states):
            return names
        time.sleep(0.2)
    raise RuntimeError(f"no consumed {EVENT_TYPE} queue of {child.name} after "
                       f"{START_TIMEOUT_S:.0f}s:\n{child.tail()}")


def quarter_rates(times: list[tuple[int, float]], events: int) -> list[float | None]:
    """Events/s within each quarter of the backlog, from (done, seconds) marks: a drain that
    slows as the database grows shows here, not in the overall rate."""
    rates: list[float | None] = []
    previous_done, previous_t = 0, 0.0
    for q in (1, 2, 3, 4):
        wanted = events * q // 4
        mark = next(((d, t) for d, t in times if d >= wanted), None)
        if mark is None:
            rates.append(None)
            continue
        done, t = mark
        rates.append(round((done - previous_done) / (t - previous_t), 1) if t > previous_t
                     else None)
        previous_done, previous_t = done, t
    return rates


def run_target(target: Target, args: argparse.Namespace, admin: BrokerAdmin,
               backlog: list[OutgoingMessage], children: list[Child],
               vhosts: list[str], abort: threading.Event) -> dict:
    vhost = f"bench-loyalty-{target.name}-{uuid.uuid4().hex[:8]}"
    vhost_uri = f"{AMQP_BASE}{urllib.parse.quote(vhost, safe='')}"
    admin.create_vhost(vhost)
    vhosts.append(vhost)
    log(f"{target.name}: vhost {vhost}")
    env = {**os.environ, **target.env, "AMQP_URI": vhost_uri,
           "MAX_WORKERS": str(args.max_workers), "WEB_SERVER_ADDRESS": f"{HOST}:{free_port()}"}
    n = len(backlog)
    probe = QueueProbe(vhost_uri)
    counter: EventCounter | None = None
    figures: dict = {"vhost": vhost, "argv": target.argv[1:],
                     "env": {k: v for k, v in target.env.items() if k != "PYTHONUNBUFFERED"}}
    try:
        # 1. Declare the queues, then stop: the backlog must wait for the second start.
        first = Child(f"{target.name}-declare", target.argv, env,
                      RESULTS_DIR / f"loyalty-bench-{target.name}-declare.log")
        children.append(first)
        started = time.monotonic()
        queues = wait_for_queues(first, admin, vhost, probe, target.queue_matches)
        figures["cold_start_seconds"] = round(time.monotonic() - started, 2)
        figures["queues"] = queues
        figures["declare_stop"] = terminate(first)
        log(f"{target.name}: queue(s) {', '.join(queues)} declared in "
            f"{figures['cold_start_seconds']:.1f}s; stopped ({figures['declare_stop']['how']})")
        if first.proc.returncode not in (0, None):
            raise RuntimeError(f"{first.name} exited with {first.proc.returncode} on stop:\n"
                               f"{first.tail()}")

        # 2. The backlog, and the counter bound before anything can be published.
        if target.counts_points:
            counter = EventCounter(vhost_uri, events_exchange("loyalty"))
        log(f"{target.name}: publishing {n:,} {EVENT_TYPE} events")
        figures["publish"] = publish_backlog(vhost_uri, backlog)
        ready = {q: (probe.state(q) or (0, 0))[0] for q in queues}
        figures["queued"] = ready
        if any(r != n for r in ready.values()):
            raise RuntimeError(f"expected {n} ready messages in each queue, found {ready}")
        log(f"{target.name}: {n:,} queued in {figures['publish']['seconds']:.1f}s; "
            f"restarting")

        # 3. The drain.
        child = Child(target.name, target.argv, env,
                      RESULTS_DIR / f"loyalty-bench-{target.name}.log")
        children.append(child)
        load = LoadWindow()
        t_spawn = time.monotonic()
        deadline = t_spawn + args.timeout
        t_consuming = t_first_taken = t_end = None
        cpu_consuming = None
        # (messages taken off the queue, seconds since t_spawn), from the ready count
        taken: list[tuple[int, float]] = []
        t_queue_empty = None
        points_at_queue_empty = None
        last_log = last_change = t_spawn
        last_done, complete = 0, True
        while True:
            now = time.monotonic()
            if abort.is_set():
                raise KeyboardInterrupt
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode} during "
                                   f"the drain:\n{child.tail()}")
            if now > deadline:
                raise RuntimeError(f"{target.name} did not drain {n:,} events within "
                                   f"--timeout {args.timeout:g}s")
            if counter is not None and counter.error:
                raise RuntimeError(f"event counter failed: {counter.error}")
            states = [probe.state(q) or (0, 0) for q in queues]
            remaining = sum(s[0] for s in states)
            if t_consuming is None and all(s[1] >= 1 for s in states):
                t_consuming, cpu_consuming = now, process_cpu_seconds(child.pid)
            if t_first_taken is None and remaining < n * len(queues):
                t_first_taken = now
            taken.append((n - max(s[0] for s in states), now - t_spawn))
            if t_queue_empty is None and remaining == 0:
                t_queue_empty = now
                points_at_queue_empty = counter.points_events() if counter else None
            if counter is not None:
                done = counter.points_events()
                if done != last_done:
                    last_done, last_change = done, now
                if done >= n and remaining == 0:
                    t_end = counter.snapshot()["points_times"][n - 1]
                    break
                if remaining == 0 and now - last_change > STALL_S:
                    times = counter.snapshot()["points_times"]
                    t_end = times[-1] if times else now
                    complete = False
                    log(f"{target.name}: queue empty but only {done:,} of {n:,} events, none "
                        f"new for {STALL_S:g}s: the drain is incomplete")
                    break
            else:
                done = taken[-1][0]
                if remaining == 0:
                    t_end = now
                    break
            if now - last_log >= 10:
                last_log = now
                log(f"{target.name}: {done:,} of {n:,} after {now - t_spawn:.0f}s")
            time.sleep(POLL_S)
        cpu_end = process_cpu_seconds(child.pid)
        peak_kib, rss_kib = memory_kib(child.pid, "VmHWM"), memory_kib(child.pid, "VmRSS")
        figures["load"] = load.stop()
        if t_consuming is None:  # drained between two polls (tiny backlogs only)
            t_consuming, cpu_consuming = t_first_taken or t_end, cpu_end
        drain = t_end - t_consuming
        from_spawn = t_end - t_spawn
        if counter is None:
            finished = n
        else:
            finished = min(n, counter.points_events())
        figures.update({
            "complete": complete,
            "events_done": finished,
            "seconds_to_consumer": round(t_consuming - t_spawn, 3),
            "drain_seconds": round(drain, 3),
            "seconds_from_process_start": round(from_spawn, 3),
            "per_s": round(finished / drain, 1) if drain > 0 else None,
            "per_s_from_process_start": round(finished / from_spawn, 1) if from_spawn > 0
            else None,
            "cpu_seconds": {
                "start_up": round(cpu_consuming, 2) if cpu_consuming is not None else None,
                "drain": round(cpu_end - cpu_consuming, 2)
                if cpu_end is not None and cpu_consuming is not None else None,
            },
            "peak_rss_mib": round(peak_kib / 1024, 1) if peak_kib else None,
            "rss_at_end_mib": round(rss_kib / 1024, 1) if rss_kib else None,
        })
        cpu_drain = figures["cpu_seconds"]["drain"]
        figures["cpu_ms_per_event"] = (round(1000 * cpu_drain / finished, 3)
                                       if cpu_drain and finished else None)
        figures["cpu_share_of_one_core"] = round(cpu_drain / drain, 2) if cpu_drain and drain \
            else None

        if counter is not None:
            time.sleep(SETTLE_S)  # duplicates or other events published just after the last
            snap = counter.snapshot()
            times = snap.pop("points_times")
            published = [(i + 1, t - t_spawn) for i, t in enumerate(times)]
            # Events leave through the outbox relay, which can trail the handlers: how far.
            figures["outbox_trail"] = {
                "queue_empty_seconds_from_consumer": round(t_queue_empty - t_consuming, 3)
                if t_queue_empty else None,
                "points_events_published_when_queue_empty": points_at_queue_empty,
                "last_event_seconds_after_queue_empty": round(t_end - t_queue_empty, 3)
                if t_queue_empty else None,
            }
            figures["quarter_rates_published_per_s"] = quarter_rates(
                [(d, t - (t_consuming - t_spawn)) for d, t in published
                 if t >= t_consuming - t_spawn], n)
            figures["seconds_to_first_event"] = round(times[0] - t_spawn, 3) if times else None
            figures["seconds_to_first_event_from_consumer"] = (round(times[0] - t_consuming, 3)
                                                               if times else None)
            figures["events"] = snap
            figures["points_awarded"] = snap["points_by_kind"].get("earn")
            left = {q: probe.state(q) for q in queues}
            figures["queue_ready_after"] = {q: (s[0] if s else None) for q, s in left.items()}
        else:
            figures["end_note"] = (f"ready count 0 (passive declare every {POLL_S:g}s); at most "
                                   f"MAX_WORKERS={args.max_workers} deliveries were then still "
                                   "unacknowledged, each an empty handler")
        # Both targets alike: progress by messages taken off the order.placed queue.
        figures["quarter_rates_per_s"] = quarter_rates(
            [(d, t - (t_consuming - t_spawn)) for d, t in taken
             if t >= t_consuming - t_spawn], n)
        figures["stop"] = terminate(child)
        log(f"{target.name}: drained {finished:,} in {drain:.2f}s from consumer "
            f"({figures['per_s']:,}/s), {from_spawn:.2f}s from process start")
        return figures
    finally:
        if counter is not None:
            counter.close()
        probe.close()


# -- report ----------------------------------------------------------------------------------
def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def verdict(results: dict) -> dict | None:
    t = results["targets"]
    if "loyalty" not in t or "empty" not in t:
        return None
    ratio = t["loyalty"]["per_s"] / t["empty"]["per_s"] if t["empty"]["per_s"] else None
    complete = t["loyalty"]["complete"]
    return {"ratio": round(ratio, 3) if ratio is not None else None,
            "target": f"ratio >= {TARGET_RATIO:.2f}", "loyalty_complete": complete,
            "met": complete and ratio is not None and ratio >= TARGET_RATIO}


def render(results: dict) -> str:
    m, p, t = results["machine"], results["parameters"], results["targets"]
    names = [k for k in ("loyalty", "empty") if k in t]
    heads = {"loyalty": "loyalty", "empty": "empty nameko handler"}

    def row(label: str, get: Callable[[dict], object], digits: int = 1) -> tuple:
        return (label, *(fmt(get(t[k]), digits) for k in names))

    rows = [
        row("cold start to consuming, s", lambda f: f["cold_start_seconds"], 2),
        row("backlog published/s", lambda f: f["publish"]["per_s"]),
        row("restart to consumer, s", lambda f: f["seconds_to_consumer"], 2),
        row("restart to first points_changed, s", lambda f: f.get("seconds_to_first_event"), 2),
        row("drain from consumer, s", lambda f: f["drain_seconds"], 2),
        row("events/s from consumer", lambda f: f["per_s"]),
        row("events/s from process start", lambda f: f["per_s_from_process_start"]),
        row("taken off the queue/s, by quarter",
            lambda f: " / ".join(fmt(r, 0) for r in f["quarter_rates_per_s"])),
        row("points_changed published/s, by quarter",
            lambda f: " / ".join(fmt(r, 0) for r in f["quarter_rates_published_per_s"])
            if "quarter_rates_published_per_s" in f else None),
        row("process CPU s in the drain", lambda f: f["cpu_seconds"]["drain"], 2),
        row("CPU ms per event", lambda f: f["cpu_ms_per_event"], 3),
        row("CPU share of one core", lambda f: f["cpu_share_of_one_core"], 2),
        row("process CPU s to start up", lambda f: f["cpu_seconds"]["start_up"], 2),
        row("peak RSS MiB (VmHWM)", lambda f: f["peak_rss_mib"]),
        row("broker CPU s in the drain", lambda f: f["load"]["broker_cpu_seconds"], 2),
        row("all CPUs busy in the drain", lambda f: f"{100 * f['load']['system_busy_share']:.0f}%"
            if f["load"]["system_busy_share"] is not None else None),
        row("load avg (1 min) at end of drain", lambda f: f["load"]["loadavg_at_end"][0], 2),
    ]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(heads[k]), *(len(r[i + 1]) for r in rows)) for i, k in enumerate(names)]
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu_model']}, {m['memory_gib']} GiB, Python "
        f"{m['python']}; load average at start {m['loadavg_at_start'][0]:.2f}",
        f"backlog: {p['events']:,} {EVENT_TYPE} events queued ahead, {p['customers']:,} "
        f"customers, MAX_WORKERS {p['max_workers']}, one process per target, commit "
        f"{(results['source'].get('commit') or '?')[:7]}"
        + (" (with local changes)" if results["source"].get("modified_files")
           or results["source"]["measured_code"].get("uncommitted") else ""),
        "",
        f"{'':<{width}}  " + "  ".join(f"{heads[k]:>{c}}" for k, c in zip(names, cols)),
    ]
    lines += [f"{r[0]:<{width}}  " + "  ".join(f"{v:>{c}}" for v, c in zip(r[1:], cols))
              for r in rows]
    if "loyalty" in t:
        ev = t["loyalty"]["events"]
        lines += [""]
        if not t["loyalty"]["complete"]:
            lines.append(f"WARNING: loyalty published only {t['loyalty']['events_done']:,} of "
                         f"{p['events']:,} expected {POINTS_EVENT} events")
        lines += [
            "loyalty events: " + ", ".join(f"{k} {v:,}" for k, v in ev["unique_by_type"].items())
            + f" distinct ({sum(ev['deliveries_by_type'].values()):,} deliveries); points by "
            "kind: " + (", ".join(f"{k} {v:,}" for k, v in ev["points_by_kind"].items())
                         or "none"),
            f"outbox trail: the {EVENT_TYPE} queue was empty "
            f"{fmt(t['loyalty']['outbox_trail']['queue_empty_seconds_from_consumer'], 2)} s "
            f"after the consumer started, with "
            f"{fmt(t['loyalty']['outbox_trail']['points_events_published_when_queue_empty'])} "
            f"{POINTS_EVENT} published; the last came "
            f"{fmt(t['loyalty']['outbox_trail']['last_event_seconds_after_queue_empty'], 2)} s "
            "later",
            f"loyalty {EVENT_TYPE} queue ready after the drain: "
            + ", ".join(f"{q} {fmt(v)}" for q, v in t["loyalty"]["queue_ready_after"].items()),
        ]
    v = results.get("verdict")
    if v:
        lines += ["", f"points awarded/s ÷ empty handler events/s: {fmt(v['ratio'], 3)}",
                  f"target {v['target']}: {'met' if v['met'] else 'NOT met'}"]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loyalty",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="backlog size")
    parser.add_argument("--customers", type=int, default=2_000,
                        help="distinct customers the orders belong to")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="longest drain of one target, seconds")
    parser.add_argument("--max-workers", type=int, default=10,
                        help="MAX_WORKERS of both targets (nameko's pool and prefetch)")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where to write results (default {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--only-empty", action="store_true",
                        help="run only the empty-handler baseline")
    parser.add_argument("--strict", action="store_true", help="exit 3 when the target is missed")
    args = parser.parse_args(argv)
    if args.events < 1 or args.customers < 1 or args.timeout <= 0 or args.max_workers < 1:
        parser.error("--events, --customers and --max-workers must be at least 1, --timeout "
                     "positive")
    json_path = args.json or (EMPTY_ONLY_JSON if args.only_empty else DEFAULT_JSON)

    abort = threading.Event()
    interrupt_on_signals(abort)
    admin = BrokerAdmin(MANAGEMENT_URL)
    if broker_unavailable(admin, HOST):
        return 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    targets = [Target("empty", [sys.executable, "-m", "bench.empty_handler"],
                      {"LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"},
                      _is_empty_order_placed, counts_points=False)]
    if not args.only_empty:
        targets.append(Target("loyalty", [sys.executable, "-m", "services", "loyalty"],
                              dict(LOYALTY_ENV), _is_loyalty_order_placed, counts_points=True))
    results: dict = {
        "benchmark": "loyalty.drain",
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine(), "source": {**source_state(), "measured_code": measured_code()},
        "parameters": {"events": args.events, "customers": args.customers,
                       "orders_per_customer": round(args.events / args.customers, 2),
                       "max_workers": args.max_workers, "store_id": STORE_ID,
                       "publish_batch": PUBLISH_BATCH, "poll_seconds": POLL_S,
                       "only_empty": args.only_empty},
        "notes": [
            "rates are events / seconds from the restarted process's first consumer on the "
            "queue to the end of the drain; start-up is reported apart",
            "loyalty's drain ends when the last of the N distinct loyalty.points_changed "
            "events reaches the benchmark's queue; the empty handler's when its queue holds "
            "no ready message",
            "the targets, the broker and the benchmark share this machine's CPUs: see load",
            "loyalty runs on in-process mongomock (MONGO_URI mongomock://), LOG_LEVEL WARNING",
        ],
        "targets": {},
    }
    children: list[Child] = []
    vhosts: list[str] = []
    status = 0
    try:
        log(f"building {args.events:,} {EVENT_TYPE} events for {args.customers:,} customers")
        backlog = build_backlog(args.events, args.customers)
        for target in targets:
            results["targets"][target.name] = run_target(target, args, admin, backlog,
                                                         children, vhosts, abort)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        results["error"] = "interrupted"
        status = 1
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        results["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        abort.set()
        stop_children_and_vhosts(children, vhosts, admin)
    results["verdict"] = verdict(results) if status == 0 else None
    write_results(results, json_path, status, render)
    if status == 0 and args.strict and results["verdict"] and not results["verdict"]["met"]:
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
