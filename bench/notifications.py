"""`python -m bench.notifications`: how fast notifications sends a bulk email to its consenting
customers through a local SMTP server, beside a bare smtplib loop to the same server.

    python -m bench.notifications [--customers 10000] [--timeout 1800] [--max-workers N]
                                  [--json PATH] [--keep-going] [--strict]

One capturing SMTP server (demo/mailbox.py, `keep_messages=False`: it only counts)
runs in this process, on an OS thread of its own (this process is never monkey-patched). Then:

1. Bare loop: a child process opens one `smtplib.SMTP` connection to the server and sends N
   multipart messages (text and HTML: the shipped `welcome` template's text as the bench store
   renders it, the same headers as notifications' EmailChannel, each message built in the
   loop). It runs in a child, as notifications does, so that client and server never share
   one interpreter lock; it runs again after step 3 to show how steady the machine was.
2. notifications (`python -m services notifications`, in-memory mongomock, a fresh RabbitMQ
   virtual host, SMTP_HOST/SMTP_PORT at the server, NOTIFY_POLL_SECONDS 0.2, MAX_WORKERS as
   configured, LOG_LEVEL WARNING) starts; once `GET /health/ready` answers 200 and its
   `customer.created` and `consent.changed` queues have consumers (found through the
   management API), the bench store's settings are saved by RPC and N customers are seeded
   (not timed): a `customer.created` on `customer_sync.events` and a `consent.changed`
   (email_marketing granted) on `gdpr.events` each, from the contracts' samples, published
   with confirms in batches of 500. Seeding is over when both queues hold no ready message
   and a sample of customers, read back with RPC `export_customer`, has an address and consent.
3. The timed part: RPC `bulk_send(store, {"customer_ids": [all N]}, "welcome", None,
   "marketing")`, then wait until the SMTP server has accepted N more messages. Progress comes
   from the server's count (sampled every 50 ms) and from RPC `bulk_status` every 30 s (each
   call costs notifications CPU, see STATUS_EVERY_S), whose final `by_status` is recorded once
   every send is finished.

Figures: messages/s of each (N / seconds from the first command to the Nth message accepted;
for notifications from the bulk_send call, so scheduling is included, and reported apart),
the bulk_send RPC's own time, the time to the first message, rates by quarter (a sender that
slows as sends accumulate shows there), notifications' CPU seconds, CPU ms per message and peak
RSS (VmHWM, reset when the timed part starts, and over its whole life), and the cost of the
SMTP server itself: this process's CPU seconds and its server thread's, per phase. Also the
machine's load, the broker's CPU, and the code measured. Target: notifications'
rate at least 0.50 of the bare loop's (the mean of its two runs). Results are printed and
written as JSON (default bench/results/notifications.json).

Exit status: 0 when the run completed (target met or not; with --strict, 3 when missed), 1 when
it failed. Without --keep-going the first failure ends the run (a timeout, a stalled send, a
child that exits); with it, what failed is recorded, the rest still runs, and the report shows
the partial figures (an incomplete notifications run never meets the target).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import warnings
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Callable

# shared.events and tests.support import nameko, which imports eventlet, which announces its
# maintenance mode (docs/design.md records that choice). This process is never monkey-patched.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from bench.common import (Child, broker_unavailable, interrupt_on_signals, log,  # noqa: E402
                          machine, process_cpu_seconds, source_state,
                          stop_children_and_vhosts, terminate, write_results)
from bench.loyalty import (LoadWindow, QueueProbe, fmt, list_queues, memory_kib,  # noqa: E402
                           publish_backlog, quarter_rates)
from shared.events import build_event, contract  # noqa: E402
from shared.messaging.publisher import OutgoingMessage, events_exchange  # noqa: E402
from tests.support import BrokerAdmin, free_port  # noqa: E402

HOST = "127.0.0.1"
AMQP_BASE = f"amqp://guest:guest@{HOST}:5672/"
MANAGEMENT_URL = f"http://guest:guest@{HOST}:15672"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_JSON = RESULTS_DIR / "notifications.json"

STORE_ID = "bench"
TEMPLATE = "welcome"
PURPOSE = "marketing"
# What the bench store's messages say (saved by RPC before seeding; the bare loop writes the
# same). The shipped default cap of 3 marketing messages a week leaves room for this one.
STORE_SETTINGS = {"name": "Bench Tea & Co", "url": "https://shop.example"}
# Where each message's own unsubscribe and preference links lead; the bare loop writes links of
# the same length (a 44-character token).
PUBLIC_URL = "https://notify.shop.example"
BARE_TOKEN = "b" * 44
MAIL_FROM = "Woo Companion <noreply@localhost>"  # notifications' default MAIL_FROM
BARE_MAIL_DOMAIN = "bench.invalid"

TARGET_RATIO = 0.50
PUBLISH_BATCH = 500  # bench.loyalty.publish_backlog's batches
POLL_S = 0.05  # the SMTP server's count is sampled this often
# bulk_status while sending: its aggregate over the bulk's sends costs notifications about
# 0.4 s of CPU at 10,000 on mongomock, time the sender waits; rarely, so it hardly shows.
STATUS_EVERY_S = 30.0
START_TIMEOUT_S = 90.0
SEED_TIMEOUT_S = 600.0
SEED_SAMPLE = 20  # customers read back with export_customer once seeding looks done
STALL_S = 60.0  # no new message for this long: the send is stalled (reported, not waited out)
FINAL_STATUS_S = 30.0  # after the Nth message, until bulk_status counts every send finished
BARE_TIMEOUT_S = 600.0

NOTIFICATIONS_ENV = {
    "MONGO_URI": "mongomock://bench-notifications",
    "NOTIFY_POLL_SECONDS": "0.2",
    "NOTIFY_PUBLIC_URL": PUBLIC_URL,
    "NOTIFY_LINK_SECRET": "bench-link-secret-0123456789abcdefghij",
    # One log line per event at INFO would measure the terminal, not notifications.
    "LOG_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
}


# -- the bare loop (runs in a child: `--bare-client HOST:PORT`) -------------------------------
def bare_links() -> tuple[str, str]:
    return f"{PUBLIC_URL}/unsubscribe/{BARE_TOKEN}", f"{PUBLIC_URL}/preferences/{BARE_TOKEN}"


def welcome_parts(first_name: str) -> tuple[str, str, str]:
    """Subject, text and HTML of the shipped `welcome` template as the bench store renders it
    for a customer without points (written out here: the bare loop renders nothing)."""
    s = STORE_SETTINGS
    unsubscribe, preferences = bare_links()
    subject = f"Welcome to {s['name']}, {first_name}!"
    text = (f"Hi {first_name},\n\nThanks for joining {s['name']}.\n\n--\n{s['name']} · {s['url']}\n"
            f"Unsubscribe: {unsubscribe}\nYour preferences: {preferences}\n")
    html_name = s["name"].replace("&", "&amp;")
    html = (f"<p>Hi {first_name},</p><p>Thanks for joining {html_name}.</p>"
            f'<p style="color:#595959;font-size:12px">{html_name} · '
            f'<a href="{unsubscribe}">Unsubscribe</a> · <a href="{preferences}">Your '
            'preferences</a></p>')
    return subject, text, html


def bare_message(i: int) -> EmailMessage:
    """What notifications' EmailChannel.build makes for a marketing send, for customer i."""
    first, address = customer_name(i), customer_email(i)
    subject, text, html = welcome_parts(first)
    message = EmailMessage()
    message["From"] = MAIL_FROM
    message["To"] = address
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=f"bulk.bare.{customer_id(i)}",
                                       domain=BARE_MAIL_DOMAIN)
    message["List-Unsubscribe"] = f"<{bare_links()[0]}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def bare_client(address: str, count: int) -> int:
    """One connection, `count` messages, QUIT; one JSON line on stdout with its own timing."""
    host, port = address.rsplit(":", 1)
    cpu0, t0 = time.process_time(), time.monotonic()
    smtp = smtplib.SMTP(host, int(port), timeout=30)
    t_connected = time.monotonic()
    for i in range(count):
        smtp.send_message(bare_message(i))
    t_sent = time.monotonic()
    smtp.quit()
    # VmHWM of this process (ru_maxrss would also count the parent's pages before exec)
    peak_kib = memory_kib(os.getpid(), "VmHWM")
    print(json.dumps({
        "messages": count, "connect_seconds": round(t_connected - t0, 4),
        "send_seconds": round(t_sent - t_connected, 4),
        "per_s_own_clock": round(count / (t_sent - t_connected), 1) if t_sent > t_connected
        else None,
        "cpu_seconds": round(time.process_time() - cpu0, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1) if peak_kib else None,
    }), flush=True)
    return 0


# -- customers -----------------------------------------------------------------------------------
_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret",
          "Dennis", "Radia", "Tim", "Sophie", "Niklaus", "Katherine", "Linus")


def customer_id(i: int) -> str:
    return f"c-bench-{i:05d}"


def customer_name(i: int) -> str:
    return _NAMES[i % len(_NAMES)]


def customer_email(i: int) -> str:
    return f"customer{i:05d}@example.com"


def build_seed(customers: int) -> list[OutgoingMessage]:
    """customer.created then consent.changed (email marketing granted) for each customer."""
    sample = contract("customer.created").sample
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    messages = []
    for i in range(customers):
        cid, first, email = customer_id(i), customer_name(i), customer_email(i)
        person = {"first_name": first, "last_name": "Bench", "email": email}
        created = build_event("customer.created", store_id=STORE_ID, data={
            **sample, "customer_id": cid, "woo_customer_id": 100_000 + i, **person,
            "billing": {**sample["billing"], **person},
            "shipping": {**sample["shipping"], "first_name": first, "last_name": "Bench"}})
        consent = build_event("consent.changed", store_id=STORE_ID, data={
            "customer_id": cid, "purpose": "email_marketing", "granted": True,
            "source": "checkout", "changed_at": now, "origin": "gdpr"})
        messages.append(OutgoingMessage(events_exchange("customer_sync"), "customer.created",
                                        created.to_message(), message_id=created.event_id))
        messages.append(OutgoingMessage(events_exchange("gdpr"), "consent.changed",
                                        consent.to_message(), message_id=consent.event_id))
    return messages


# -- the SMTP server's own cost ------------------------------------------------------------------
def thread_cpu_seconds(tid: int | None) -> float | None:
    """utime + stime of one thread of this process, from /proc."""
    if tid is None:
        return None
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerMeter:
    """This process's CPU (the SMTP server's thread, and everything) over one phase, and the
    messages the server accepted meanwhile."""

    def __init__(self, server) -> None:
        self.server = server
        controller = getattr(server, "_controller", None)
        thread = getattr(controller, "_thread", None)
        self.tid = getattr(thread, "native_id", None)
        self._start()

    def _start(self) -> None:
        self._received = self.server.received
        self._process = time.process_time()
        self._thread = thread_cpu_seconds(self.tid)

    def stop(self) -> dict:
        process = time.process_time() - self._process
        thread = thread_cpu_seconds(self.tid)
        server = thread - self._thread if thread is not None and self._thread is not None else None
        received = self.server.received - self._received
        return {
            "messages_received": received,
            "benchmark_process_cpu_seconds": round(process, 2),
            "smtp_server_thread_cpu_seconds": round(server, 2) if server is not None else None,
            "smtp_server_cpu_ms_per_message": round(1000 * server / received, 3)
            if server is not None and received else None,
        }


class CountSampler:
    """The server's accepted-message count every POLL_S in a thread: (count since start, seconds
    since start) whenever it changed, so the Nth message's time is known to within POLL_S."""

    def __init__(self, server, t0: float) -> None:
        self.server = server
        self.base = server.received
        self.t0 = t0
        self.marks: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="count-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last = 0
        while not self._stop.is_set():
            now = time.monotonic()
            count = self.server.received - self.base
            if count != last:
                last = count
                with self._lock:
                    self.marks.append((count, now - self.t0))
            self._stop.wait(POLL_S)

    def count(self) -> int:
        return self.server.received - self.base

    def first_reaching(self, n: int) -> float | None:
        with self._lock:
            return next((t for d, t in self.marks if d >= n), None)

    def snapshot(self) -> list[tuple[int, float]]:
        with self._lock:
            return list(self.marks)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- helpers -------------------------------------------------------------------------------------
def measured_code() -> dict:
    """source_state() lists modified tracked files only; this benchmark may be new (untracked),
    so record the state of the files measured and a digest of their content too."""
    paths = ["services/notifications", "bench/notifications.py", "demo/mailbox.py",
             "devdoubles/mongomock_speedups.py", "shared/outbox.py"]
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


def wait_http_ready(child: Child, url: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} while "
                               f"starting:\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:  # refused while starting, or 503 (HTTPError) until ready
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s:\n{child.tail()}")


def _is_handler_queue(event_type: str) -> Callable[[str], bool]:
    # nameko names a handler's queue evt-<source>-<event>--<service>.<method>; the reliable
    # handler's delay queues add `.retry.<ms>` and receive nothing from the exchange.
    def matches(name: str) -> bool:
        return (event_type in name and "notifications" in name and ".retry." not in name
                and not name.endswith(".parked"))
    return matches


def wait_for_consumed_queues(child: Child, admin: BrokerAdmin, vhost: str, probe: QueueProbe,
                             event_types: tuple[str, ...]) -> dict[str, str]:
    """Each event type's handler queue (found by name, never hard-coded), once consumed."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} while "
                               f"starting:\n{child.tail()}")
        names = [q["name"] for q in list_queues(admin, vhost)]
        found = {}
        for event_type in event_types:
            matching = sorted(n for n in names if _is_handler_queue(event_type)(n))
            if len(matching) == 1:
                state = probe.state(matching[0])
                if state is not None and state[1] >= 1:
                    found[event_type] = matching[0]
        if len(found) == len(event_types):
            return found
        time.sleep(0.2)
    raise RuntimeError(f"no consumed queues for {', '.join(event_types)} after "
                       f"{START_TIMEOUT_S:.0f}s:\n{child.tail()}")


def peak_kib_and_reset(pid: int) -> tuple[int | None, bool]:
    """VmHWM so far, then reset it to the current RSS (clear_refs 5), so the next VmHWM read is
    the peak of what follows. (peak, whether the reset worked)."""
    peak = memory_kib(pid, "VmHWM")
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return peak, False
    after = memory_kib(pid, "VmHWM")
    return peak, after is not None and peak is not None and after <= peak


def bare_loop(args, server, label: str, children: list[Child], abort: threading.Event) -> dict:
    n = args.customers
    argv = [sys.executable, "-m", "bench.notifications", "--bare-client",
            f"{server.host}:{server.port}", "--customers", str(n)]
    meter = ServerMeter(server)
    load = LoadWindow()
    t0 = time.monotonic()
    sampler = CountSampler(server, t0)
    child = Child(f"bare-{label}", argv, {**os.environ, "PYTHONUNBUFFERED": "1"},
                  RESULTS_DIR / f"notifications-bench-bare-{label}.log")
    children.append(child)
    try:
        while child.alive():
            if abort.is_set():
                raise KeyboardInterrupt
            if time.monotonic() - t0 > BARE_TIMEOUT_S:
                raise RuntimeError(f"the bare loop did not finish within {BARE_TIMEOUT_S:.0f}s")
            time.sleep(POLL_S)
        t_exit = time.monotonic()
        time.sleep(2 * POLL_S)
    finally:
        sampler.close()
    server_side = meter.stop()
    stop = child.stop()
    if child.proc.returncode != 0:
        raise RuntimeError(f"the bare loop exited with {child.proc.returncode}:\n{child.tail()}")
    own = json.loads(child.log_path.read_text().strip().splitlines()[-1])
    marks = sampler.snapshot()
    received = server_side["messages_received"]
    t_first = marks[0][1] if marks else None
    t_last = sampler.first_reaching(n)
    # The rate from the server's side: from the first message accepted to the Nth (process
    # start-up and imports are outside; the client's own clock adds its connect and greeting).
    window = (t_last - t_first) if t_last is not None and t_first is not None else None
    figures = {
        "complete": received >= n,
        "messages": received,
        "client": own,
        "per_s": own["per_s_own_clock"],
        "per_s_server_clock": round((n - 1) / window, 1) if window else None,
        "seconds_process_start_to_exit": round(t_exit - t0, 3),
        # from the first message accepted: the child's start-up is not the loop's
        "quarter_rates_per_s": quarter_rates([(d, t - t_first) for d, t in marks], n)
        if t_first is not None else [None] * 4,
        "smtp_server": server_side,
        "load": load.stop(),
        "stop": stop,
    }
    log(f"bare loop ({label}): {received:,} messages, {fmt(figures['per_s'])}/s "
        f"(client CPU {own['cpu_seconds']:.1f}s, server thread CPU "
        f"{fmt(server_side['smtp_server_thread_cpu_seconds'], 1)}s)")
    return figures


def message_sizes() -> dict:
    """Bytes of one bare message and of what notifications builds for the same customer (its
    own template, context and EmailChannel), so the reader can see the two are alike."""
    sizes = {"bare": len(bytes(bare_message(0)))}
    try:
        from services.notifications import templates as tpl
        from services.notifications.channels import EmailChannel, SmtpSettings, new_message_id
        from services.notifications.policy import load_settings
        from services.notifications.opt_out import MessageLinks, list_unsubscribe_headers
        from services.notifications.sender import context

        settings = load_settings(STORE_SETTINGS)
        contact = {"first_name": customer_name(0), "last_name": "Bench", "email": customer_email(0)}
        links = MessageLinks(*bare_links())
        rendered = tpl.render(tpl.DEFAULT_TEMPLATES[TEMPLATE], context(contact, settings, links))
        channel = EmailChannel(SmtpSettings(host=HOST, port=25, security="none", username="",
                                            password="", timeout=10, sender=MAIL_FROM))
        message = channel.build(customer_email(0), rendered.subject or "", rendered.text or "",
                                rendered.html, None,
                                new_message_id(f"bulk:0123456789ab:{customer_id(0)}", ""),
                                headers=list_unsubscribe_headers(links))
        sizes["notifications"] = len(bytes(message))
    except Exception as exc:  # informative only
        sizes["notifications_error"] = f"{type(exc).__name__}: {exc}"
    return sizes


# -- notifications ---------------------------------------------------------------------------------
def run_notifications(args, server, admin: BrokerAdmin, children: list[Child], vhosts: list[str],
                      abort: threading.Event) -> dict:
    from nameko.standalone.rpc import ClusterRpcProxy  # nameko's client needs no monkey-patching

    vhost = f"bench-notifications-{uuid.uuid4().hex[:8]}"
    vhost_uri = f"{AMQP_BASE}{urllib.parse.quote(vhost, safe='')}"
    admin.create_vhost(vhost)
    vhosts.append(vhost)
    web_port = free_port()
    env = {**os.environ, **NOTIFICATIONS_ENV, "AMQP_URI": vhost_uri,
           "SMTP_HOST": server.host, "SMTP_PORT": str(server.port),
           "NOTIFICATIONS_WEB_SERVER_ADDRESS": f"{HOST}:{web_port}",
           "WEB_SERVER_ADDRESS": f"{HOST}:{free_port()}"}
    if args.max_workers is not None:
        env["MAX_WORKERS"] = str(args.max_workers)
    figures: dict = {"vhost": vhost, "complete": False,
                     "env": {k: v for k, v in NOTIFICATIONS_ENV.items() if k != "PYTHONUNBUFFERED"}
                     | ({"MAX_WORKERS": str(args.max_workers)} if args.max_workers else {})}
    child = Child("notifications", [sys.executable, "-m", "services", "notifications"], env,
                  RESULTS_DIR / "notifications-bench-notifications.log")
    children.append(child)
    figures["pid"] = child.pid
    log(f"notifications: pid {child.pid}, vhost {vhost}, web {HOST}:{web_port}")
    probe = QueueProbe(vhost_uri)
    try:
        figures["seconds_to_ready"] = round(wait_http_ready(
            child, f"http://{HOST}:{web_port}/health/ready", START_TIMEOUT_S), 2)
        queues = wait_for_consumed_queues(child, admin, vhost, probe,
                                          ("customer.created", "consent.changed"))
        figures["queues"] = queues
        log(f"notifications: ready in {figures['seconds_to_ready']:.1f}s; queues "
            f"{', '.join(queues.values())}")
        with ClusterRpcProxy({"AMQP_URI": vhost_uri}, timeout=args.timeout) as rpc:
            service = rpc.notifications
            service.save_store_settings(STORE_ID, STORE_SETTINGS)
            figures["seed"] = seed(args, vhost_uri, child, probe, queues, service, abort)
            figures["rss_before_send_mib"] = round((memory_kib(child.pid, "VmRSS") or 0) / 1024, 1)
            figures.update(timed_send(args, server, child, service, abort))
        return figures
    finally:
        probe.close()
        figures["stop"] = terminate(child)


def seed(args, vhost_uri: str, child: Child, probe: QueueProbe, queues: dict[str, str],
         service, abort: threading.Event) -> dict:
    n = args.customers
    log(f"seeding {n:,} customers ({2 * n:,} events)")
    messages = build_seed(n)
    cpu0, t0 = process_cpu_seconds(child.pid), time.monotonic()
    published = publish_backlog(vhost_uri, messages)
    deadline = t0 + SEED_TIMEOUT_S
    last_log = t0
    while True:
        if abort.is_set():
            raise KeyboardInterrupt
        if not child.alive():
            raise RuntimeError(f"notifications exited with {child.proc.returncode} while "
                               f"seeding:\n{child.tail()}")
        ready = {t: (probe.state(q) or (0, 0))[0] for t, q in queues.items()}
        if not any(ready.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"seeding not applied within {SEED_TIMEOUT_S:.0f}s: {ready} left")
        if time.monotonic() - last_log >= 10:
            last_log = time.monotonic()
            log(f"seeding: {ready} ready after {last_log - t0:.0f}s")
        time.sleep(0.2)
    t_queues_empty = time.monotonic()
    # Up to MAX_WORKERS deliveries per queue may still be in flight: read customers back,
    # the last published first, until each has its address and consent.
    sample = sorted({*range(max(0, n - SEED_SAMPLE // 2), n),
                     *range(0, n, max(1, n // (SEED_SAMPLE // 2)))})
    pending = [customer_id(i) for i in sample]
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"customers {pending[:5]} not projected within "
                               f"{SEED_TIMEOUT_S:.0f}s")
        still = []
        for cid in pending:
            try:
                contact = service.export_customer(STORE_ID, cid)["contact"]
            except Exception:  # NotFound while its customer.created is in flight
                still.append(cid)
                continue
            consent = (contact.get("consent") or {}).get("email_marketing") or {}
            if not contact.get("email") or consent.get("granted") is not True:
                still.append(cid)
        pending = still
        if pending:
            time.sleep(0.2)
    time.sleep(1.0)  # the brief's margin for the last deliveries in flight
    seconds = t_queues_empty - t0
    cpu = process_cpu_seconds(child.pid)
    figures = {"events": len(messages), "publish": published,
               "seconds_to_queues_empty": round(seconds, 2),
               "events_applied_per_s": round(len(messages) / seconds, 1) if seconds > 0 else None,
               "cpu_seconds": round(cpu - cpu0, 2) if cpu is not None and cpu0 is not None
               else None, "customers_checked": len(sample)}
    log(f"seeded: {len(messages):,} events applied in {seconds:.1f}s "
        f"({fmt(figures['events_applied_per_s'])}/s)")
    return figures


def timed_send(args, server, child: Child, service, abort: threading.Event) -> dict:
    n = args.customers
    ids = [customer_id(i) for i in range(n)]
    bulk_id = f"bench-{uuid.uuid4().hex[:8]}"
    hwm_before, hwm_reset = peak_kib_and_reset(child.pid)
    meter = ServerMeter(server)
    load = LoadWindow()
    cpu0 = process_cpu_seconds(child.pid)
    t0 = time.monotonic()
    sampler = CountSampler(server, t0)
    statuses: list[dict] = []
    status_seconds = 0.0
    complete, failure = False, None
    try:
        log(f"bulk_send to {n:,} customers (bulk_id {bulk_id})")
        reply = service.bulk_send(STORE_ID, {"customer_ids": ids}, TEMPLATE, None, PURPOSE,
                                  bulk_id)
        t_rpc = time.monotonic() - t0
        cpu_rpc = process_cpu_seconds(child.pid)
        at_rpc = sampler.count()
        log(f"bulk_send answered in {t_rpc:.2f}s: total {reply.get('total')}, "
            f"{at_rpc:,} messages already accepted")
        if reply.get("total") != n:
            failure = f"bulk_send scheduled {reply.get('total')} sends, not {n}"
            raise RuntimeError(failure)
        last_status = last_log = last_count_change = time.monotonic()
        last_count = sampler.count()
        while True:
            now = time.monotonic()
            count = sampler.count()
            if count >= n:
                complete = True
                break
            if abort.is_set():
                raise KeyboardInterrupt
            if not child.alive():
                raise RuntimeError(f"notifications exited with {child.proc.returncode} while "
                                   f"sending:\n{child.tail()}")
            if count != last_count:
                last_count, last_count_change = count, now
            if now - t0 > args.timeout:
                failure = f"{count:,} of {n:,} messages within --timeout {args.timeout:g}s"
                break
            if now - last_count_change > STALL_S:
                failure = f"no message for {STALL_S:g}s at {count:,} of {n:,}"
                break
            if now - last_log >= 10 and now - last_status < STATUS_EVERY_S:
                last_log = now
                log(f"{count:,} of {n:,} accepted after {now - t0:.0f}s "
                    f"({count / (now - t0):,.0f}/s)")
            if now - last_status >= STATUS_EVERY_S:
                asked = time.monotonic()
                status = service.bulk_status(STORE_ID, bulk_id)
                took = time.monotonic() - asked
                status_seconds += took
                last_status = last_log = time.monotonic()
                statuses.append({"seconds": round(asked - t0, 2), "rpc_seconds": round(took, 3),
                                 "received": count, "done": status.get("done"),
                                 "by_status": status.get("by_status")})
                log(f"{count:,} of {n:,} accepted after {asked - t0:.0f}s "
                    f"({count / (asked - t0):,.0f}/s); bulk_status in {took:.2f}s: "
                    f"{status.get('by_status')}")
                if status.get("done") == status.get("total") and sampler.count() < n:
                    failure = (f"every send finished ({status.get('by_status')}) but only "
                               f"{sampler.count():,} of {n:,} messages arrived")
                    break
            time.sleep(POLL_S)
        t_end_poll = time.monotonic()
        cpu_end = process_cpu_seconds(child.pid)
        peak_kib = memory_kib(child.pid, "VmHWM")
        rss_kib = memory_kib(child.pid, "VmRSS")
        time.sleep(2 * POLL_S)
    finally:
        sampler.close()
    server_side = meter.stop()
    window = load.stop()
    # The last sends' "sent" is recorded just after the server's 250: wait for every send to
    # be finished, then keep the final by_status (an incomplete run: where it stopped).
    final, deadline = None, time.monotonic() + (FINAL_STATUS_S if complete else 0)
    while child.alive():
        final = service.bulk_status(STORE_ID, bulk_id)
        if final.get("done") == final.get("total") or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    marks = sampler.snapshot()
    received = min(n, marks[-1][0]) if marks else 0
    t_end = sampler.first_reaching(n) if complete else t_end_poll - t0
    t_first = marks[0][1] if marks else None
    cpu_send = cpu_end - cpu0 if cpu_end is not None and cpu0 is not None else None
    figures = {
        "complete": complete,
        "failure": failure,
        "bulk_id": bulk_id,
        "messages": received,
        "seconds": round(t_end, 3),
        "per_s": round(received / t_end, 1) if t_end else None,
        "bulk_send_rpc_seconds": round(t_rpc, 3),
        "messages_accepted_when_rpc_answered": at_rpc,
        "seconds_to_first_message": round(t_first, 3) if t_first is not None else None,
        "per_s_after_rpc": round((received - at_rpc) / (t_end - t_rpc), 1)
        if t_end > t_rpc else None,
        "quarter_rates_per_s": quarter_rates(marks, n),
        "cpu_seconds": {
            "bulk_send_rpc": round(cpu_rpc - cpu0, 2) if cpu_rpc is not None and cpu0 is not None
            else None,
            "total": round(cpu_send, 2) if cpu_send is not None else None,
        },
        "cpu_ms_per_message": round(1000 * cpu_send / received, 3) if cpu_send and received
        else None,
        "cpu_share_of_one_core": round(cpu_send / t_end, 2) if cpu_send and t_end else None,
        "peak_rss_mib": round(peak_kib / 1024, 1) if peak_kib and hwm_reset else None,
        "peak_rss_mib_whole_life": round(max(peak_kib or 0, hwm_before or 0) / 1024, 1)
        if peak_kib or hwm_before else None,
        "rss_at_end_mib": round(rss_kib / 1024, 1) if rss_kib else None,
        "peak_rss_reset_worked": hwm_reset,
        "bulk_status_polls": statuses,
        "bulk_status_rpc_seconds_total": round(status_seconds, 2),
        "final_status": final,
        "smtp_server": server_side,
        "load": window,
    }
    if complete:
        log(f"notifications: {n:,} messages in {t_end:.2f}s ({figures['per_s']:,}/s)")
    else:
        log(f"notifications INCOMPLETE: {failure}")
    return figures


# -- report ----------------------------------------------------------------------------------------
def verdict(results: dict) -> dict | None:
    t = results["targets"]
    bare = [t[k]["per_s"] for k in ("bare_before", "bare_after") if t.get(k, {}).get("per_s")]
    note = t.get("notifications") or {}
    if not bare or "per_s" not in note:
        return None
    reference = sum(bare) / len(bare)
    ratio = note["per_s"] / reference if note["per_s"] else None
    complete = bool(note.get("complete"))
    return {"ratio": round(ratio, 3) if ratio is not None else None,
            "bare_per_s_mean": round(reference, 1), "target": f"ratio >= {TARGET_RATIO:.2f}",
            "notifications_complete": complete,
            "met": complete and ratio is not None and ratio >= TARGET_RATIO}


def render(results: dict) -> str:
    m, p, t = results["machine"], results["parameters"], results["targets"]
    bare_names = [k for k in ("bare_before", "bare_after") if k in t]
    note = t.get("notifications")
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu_model']}, {m['memory_gib']} GiB, Python "
        f"{m['python']}; load average at start {m['loadavg_at_start'][0]:.2f} / "
        f"{m['loadavg_at_start'][1]:.2f} / {m['loadavg_at_start'][2]:.2f}",
        f"{p['customers']:,} customers with email marketing consent, template {TEMPLATE}, "
        f"one SMTP server in the benchmark process (counting only), commit "
        f"{(results['source'].get('commit') or '?')[:7]}"
        + (" (with local changes)" if results["source"].get("modified_files")
           or results["source"]["measured_code"].get("uncommitted") else ""),
        f"message size: bare {fmt(p['message_bytes'].get('bare'))} bytes, notifications "
        f"{fmt(p['message_bytes'].get('notifications'))} bytes",
        "",
    ]
    heads = {"bare_before": "bare loop (before)", "bare_after": "bare loop (after)",
             "notifications": "notifications"}
    names = [*bare_names[:1], *(["notifications"] if note else []), *bare_names[1:]]

    def get(name: str, pick: Callable[[dict], object], digits: int = 1) -> str:
        try:
            return fmt(pick(t[name]), digits)
        except (KeyError, TypeError):
            return "-"

    rows = [
        ("messages accepted", lambda f: f["messages"], 0),
        ("messages/s", lambda f: f["per_s"], 1),
        ("seconds", lambda f: f["seconds"] if "seconds" in f else f["client"]["send_seconds"], 2),
        ("messages/s by quarter", lambda f: " / ".join(fmt(r, 0) for r in
                                                       f["quarter_rates_per_s"]), 0),
        ("bulk_send RPC (scheduling), s", lambda f: f["bulk_send_rpc_seconds"], 2),
        ("first message after, s", lambda f: f["seconds_to_first_message"], 2),
        ("messages/s after the RPC answered", lambda f: f["per_s_after_rpc"], 1),
        ("sender CPU s", lambda f: f["cpu_seconds"]["total"] if "cpu_seconds" in f
         else f["client"]["cpu_seconds"], 2),
        ("sender CPU ms per message", lambda f: f["cpu_ms_per_message"] if "cpu_ms_per_message"
         in f else 1000 * f["client"]["cpu_seconds"] / f["messages"], 3),
        ("sender peak RSS MiB", lambda f: f["peak_rss_mib"] if "cpu_seconds" in f
         else f["client"]["peak_rss_mib"], 1),
        ("SMTP server thread CPU s", lambda f: f["smtp_server"]["smtp_server_thread_cpu_seconds"],
         2),
        ("SMTP server CPU ms per message",
         lambda f: f["smtp_server"]["smtp_server_cpu_ms_per_message"], 3),
        ("benchmark process CPU s", lambda f: f["smtp_server"]["benchmark_process_cpu_seconds"],
         2),
        ("broker CPU s", lambda f: f["load"]["broker_cpu_seconds"], 2),
        ("all CPUs busy", lambda f: f"{100 * f['load']['system_busy_share']:.0f}%"
         if f["load"]["system_busy_share"] is not None else None, 0),
        ("load avg (1 min) at end", lambda f: f["load"]["loadavg_at_end"][0], 2),
    ]
    table = [(label, *(get(k, pick, digits) for k in names)) for label, pick, digits in rows]
    width = max(len(r[0]) for r in table)
    cols = [max(len(heads[k]), *(len(r[i + 1]) for r in table)) for i, k in enumerate(names)]
    lines.append(f"{'':<{width}}  " + "  ".join(f"{heads[k]:>{c}}" for k, c in zip(names, cols)))
    lines += [f"{r[0]:<{width}}  " + "  ".join(f"{v:>{c}}" for v, c in zip(r[1:], cols))
              for r in table]
    if note:
        lines.append("")
        if "seed" in note:
            s = note["seed"]
            lines.append(f"seeding (not timed): {s['events']:,} events applied in "
                         f"{fmt(s['seconds_to_queues_empty'], 1)} s "
                         f"({fmt(s['events_applied_per_s'])}/s, {fmt(s['cpu_seconds'], 1)} CPU s)")
        if note.get("final_status"):
            fs = note["final_status"]
            lines.append(f"bulk_status at the end: total {fmt(fs.get('total'))}, done "
                         f"{fmt(fs.get('done'))}, by status {fs.get('by_status')}")
        if "peak_rss_mib_whole_life" in note:
            lines.append(f"notifications RSS: {fmt(note.get('rss_before_send_mib'))} MiB before "
                         f"the send, peak {fmt(note.get('peak_rss_mib'))} MiB during it, "
                         f"{fmt(note.get('peak_rss_mib_whole_life'))} MiB over its life")
        if note.get("bulk_status_polls"):
            lines.append(f"bulk_status polled {len(note['bulk_status_polls'])} times while "
                         f"sending, {fmt(note['bulk_status_rpc_seconds_total'], 2)} s in all")
        if not note.get("complete"):
            lines.append("WARNING: notifications incomplete: "
                         f"{note.get('failure') or note.get('error')}")
    if results.get("errors"):
        lines += ["", *(f"ERROR {k}: {v}" for k, v in results["errors"].items())]
    v = results.get("verdict")
    if v:
        lines += ["", f"notifications messages/s ÷ bare loop messages/s (mean of "
                      f"{len(bare_names)} runs, {fmt(v['bare_per_s_mean'])}/s): "
                      f"{fmt(v['ratio'], 3)}",
                  f"target {v['target']}: {'met' if v['met'] else 'NOT met'}"]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notifications",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000,
                        help="consenting customers, and messages of each loop")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="longest notifications send (from the bulk_send call), seconds")
    parser.add_argument("--max-workers", type=int, default=None,
                        help="MAX_WORKERS of notifications (default: the service's default)")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where to write results (default {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failure or timeout, record it, run the rest and report "
                             "the partial figures")
    parser.add_argument("--strict", action="store_true", help="exit 3 when the target is missed")
    parser.add_argument("--bare-client", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.customers < 1 or args.timeout <= 0 or (args.max_workers is not None
                                                    and args.max_workers < 1):
        parser.error("--customers and --max-workers must be at least 1, --timeout positive")
    if args.bare_client:
        return bare_client(args.bare_client, args.customers)
    json_path = args.json or DEFAULT_JSON

    abort = threading.Event()
    interrupt_on_signals(abort)
    admin = BrokerAdmin(MANAGEMENT_URL)
    if broker_unavailable(admin, HOST):
        return 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    from demo.mailbox import SmtpServer

    results: dict = {
        "benchmark": "notifications.bulk_send",
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine(), "source": {**source_state(), "measured_code": measured_code()},
        "parameters": {"customers": args.customers, "template": TEMPLATE, "purpose": PURPOSE,
                       "store_id": STORE_ID, "store_settings": STORE_SETTINGS,
                       "max_workers": args.max_workers or "service default",
                       "timeout_seconds": args.timeout, "poll_seconds": POLL_S,
                       "status_every_seconds": STATUS_EVERY_S, "keep_going": args.keep_going,
                       "message_bytes": message_sizes()},
        "notes": [
            "notifications' rate is N / seconds from the bulk_send call to the Nth message "
            "accepted by the SMTP server (scheduling included; the RPC's own time is reported "
            "apart)",
            "the bare loop's rate is N / seconds on its own clock, from connected to the last "
            "reply; it runs in a child process, as notifications does, before and after",
            "the SMTP server runs in this process on its own OS thread; its thread's CPU and "
            "this process's are reported for each phase",
            "notifications runs on in-process mongomock (MONGO_URI mongomock://), LOG_LEVEL "
            "WARNING, NOTIFY_POLL_SECONDS 0.2",
        ],
        "targets": {},
        "errors": {},
    }
    children: list[Child] = []
    vhosts: list[str] = []
    status = 0
    server = SmtpServer(keep_messages=False)

    def part(name: str, run: Callable[[], dict]) -> None:
        try:
            results["targets"][name] = run()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            if not args.keep_going:
                raise

    try:
        server.start()
        log(f"SMTP server on {server.host}:{server.port} (counting only)")
        part("bare_before", lambda: bare_loop(args, server, "before", children, abort))
        part("notifications", lambda: run_notifications(args, server, admin, children, vhosts,
                                                        abort))
        note = results["targets"].get("notifications")
        if note is not None and not note.get("complete") and not args.keep_going:
            raise RuntimeError(f"notifications incomplete: {note.get('failure')}")
        part("bare_after", lambda: bare_loop(args, server, "after", children, abort))
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
        try:
            server.stop()
        except Exception as exc:
            log(f"stopping the SMTP server failed: {exc}")
    results["verdict"] = verdict(results) if status == 0 else None
    write_results(results, json_path, status, render)
    if status == 0 and args.strict and results["verdict"] and not results["verdict"]["met"]:
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
