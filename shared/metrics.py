"""Prometheus metrics: every metric the project exports, defined once, and the per-process
server that exposes them (with liveness and readiness) on `METRICS_PORT`.

Defining a metric only registers it in prometheus_client's default registry: nothing starts,
connects or listens at import. The server is started by `services.runner` (once per process,
however many services share it) and serves from an eventlet green thread with eventlet's own
WSGI server, as nameko's web entrypoints do, so it answers while services run on the same hub.

Hot paths take label children that are resolved once (`EventCounters`, `LabelCache`), so
counting costs a dict lookup and prometheus_client's own increment.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable, Iterable, NamedTuple

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

from shared.messaging.names import parked_queue

log = logging.getLogger(__name__)

# -- events in (shared.messaging.handlers) ------------------------------------------------------
EVENT_LABELS = ("service", "event_type")
EVENTS_HANDLED = Counter("companion_events_handled_total",
                         "Events a handler applied successfully.", EVENT_LABELS)
EVENTS_FAILED = Counter("companion_events_failed_total",
                        "Handler attempts that raised (each is retried or parked).", EVENT_LABELS)
EVENTS_RETRIED = Counter("companion_events_retried_total",
                         "Failed events sent to a delay queue for another attempt.", EVENT_LABELS)
EVENTS_PARKED = Counter("companion_events_parked_total",
                        "Events parked in <service>.parked (attempts exhausted, or a body that "
                        "does not match its contract).", EVENT_LABELS)
EVENTS_DUPLICATE = Counter("companion_events_duplicate_total",
                           "Deliveries skipped because the handler had already applied the "
                           "event.", EVENT_LABELS)
EVENTS_DEFERRED = Counter("companion_events_deferred_total",
                          "Deliveries put off through a delay queue because another worker was "
                          "applying the same event.", EVENT_LABELS)

# -- batches of events in (shared.messaging.batches) ----------------------------------------------
EVENT_BATCH_SIZE = Histogram(
    "companion_event_batch_size", "Events in each batch a batch handler gathered.", EVENT_LABELS,
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000))
EVENT_BATCH_WAIT = Histogram(
    "companion_event_batch_wait_seconds",
    "Time from a batch's first event to its closing (full, waited out, or stopping).",
    EVENT_LABELS,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
EVENT_BATCH_SPLITS = Counter(
    "companion_event_batch_splits_total",
    "Batches (or parts of one) that failed and were applied again in halves.", EVENT_LABELS)

# -- events out (shared.outbox) -------------------------------------------------------------------
OUTBOX_PUBLISHED = Counter("companion_outbox_published_total",
                           "Events published from the outbox and confirmed by the broker.",
                           ("service", "event_type"))
OUTBOX_FAILURES = Counter("companion_outbox_publish_failures_total",
                          "Events whose publish failed; they stay in the outbox and are "
                          "published again.", ("service",))

# -- webhook door (customer_sync) ------------------------------------------------------------------
WEBHOOK_SECONDS = Histogram(
    "companion_webhook_duration_seconds",
    "Time from a webhook request reaching the entrypoint to its answer.",
    ("store", "outcome", "status"),
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
             5.0),
)

WEBHOOK_QUARANTINED = Counter(
    "companion_webhook_deliveries_quarantined_total",
    "Webhook deliveries customer_sync could not apply and quarantined (kept for an operator to "
    "replay): content applying refused, or attempts exhausted.", ("store",))

WEBHOOK_NOTICES = Counter(
    "companion_webhook_notices_total",
    "Inbox keys customer_sync's door handed to the separate appliers (INBOX_APPLY=applier): "
    "published, or failed (the appliers' inbox sweep finds those deliveries).", ("outcome",))

WEBHOOK_APPLIED = Counter(
    "companion_webhook_deliveries_applied_total",
    "Webhook deliveries applied, by where: the door's own process (INBOX_APPLY=here) or an "
    "applier process.", ("applied_by",))

# -- gateway (HTTP API) --------------------------------------------------------------------------
API_SECONDS = Histogram(
    "companion_api_request_duration_seconds",
    "Time the gateway took to answer an API request, by route (method and path template, so "
    "ids never become labels) and status.",
    ("route", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# -- notifications -------------------------------------------------------------------------------
NOTIFICATION_SENDS = Counter("companion_notification_sends_total",
                             "How attempts to send a message ended, per channel.",
                             ("channel", "outcome"))


class LabelCache:
    """Label children of one metric, resolved once per combination of label values.

    Only for label values from a bounded set (services, event types, known stores)."""

    def __init__(self, metric) -> None:
        self.metric = metric
        self._children: dict[tuple, object] = {}

    def __call__(self, *values: str):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class EventCounters(NamedTuple):
    """One event handler's counters, bound to its service and event type."""

    handled: object
    failed: object
    retried: object
    parked: object
    duplicate: object
    deferred: object


def event_counters(service: str, event_type: str) -> EventCounters:
    """Resolve a handler's children once, at set-up; the series exist (at 0) from then on."""
    return EventCounters(*(metric.labels(service, event_type) for metric in (
        EVENTS_HANDLED, EVENTS_FAILED, EVENTS_RETRIED, EVENTS_PARKED, EVENTS_DUPLICATE,
        EVENTS_DEFERRED)))


class BatchMetrics(NamedTuple):
    """One batch handler's batch metrics, bound to its service and event type."""

    size: object
    wait: object
    splits: object

    def observe(self, events: int, waited_seconds: float) -> None:
        self.size.observe(events)
        self.wait.observe(waited_seconds)


def batch_metrics(service: str, event_type: str) -> BatchMetrics:
    """Resolve a batch handler's children once, at set-up."""
    return BatchMetrics(*(metric.labels(service, event_type) for metric in (
        EVENT_BATCH_SIZE, EVENT_BATCH_WAIT, EVENT_BATCH_SPLITS)))


_webhook_children = LabelCache(WEBHOOK_SECONDS)
_send_children = LabelCache(NOTIFICATION_SENDS)
_outbox_children = LabelCache(OUTBOX_PUBLISHED)
_outbox_failure_children = LabelCache(OUTBOX_FAILURES)
_quarantined_children = LabelCache(WEBHOOK_QUARANTINED)


def observe_webhook(store: str, outcome: str, status: int, seconds: float) -> None:
    _webhook_children(store, outcome, str(status)).observe(seconds)


def count_quarantined(store: str) -> None:
    """A delivery of a known store (a bounded label) went into quarantine."""
    _quarantined_children(store).inc()


def count_notices(outcome: str, keys: int) -> None:
    """`keys` inbox keys handed to the appliers (`published`) or not (`failed`)."""
    WEBHOOK_NOTICES.labels(outcome).inc(keys)


def count_applied(applied_by: str) -> None:
    """A webhook delivery applied by the door's process (`door`) or an applier (`applier`)."""
    WEBHOOK_APPLIED.labels(applied_by).inc()


_api_children = LabelCache(API_SECONDS)


def observe_api_request(route: str, status: int, seconds: float) -> None:
    _api_children(route, str(status)).observe(seconds)


def count_send(channel: str, outcome: str) -> None:
    _send_children(channel, outcome).inc()


def count_published(service: str, event_types: Iterable[str]) -> None:
    tally: dict[str, int] = {}
    for event_type in event_types:
        tally[event_type] = tally.get(event_type, 0) + 1
    for event_type, count in tally.items():
        _outbox_children(service, event_type).inc(count)


def count_publish_failure(service: str, events: int) -> None:
    _outbox_failure_children(service).inc(events)


# -- parked messages waiting: the broker's queue depth, read when scraped ------------------------
class ParkedDepthCollector:
    """`companion_parked_messages{service}`: messages in `<service>.parked` right now.

    Read from the broker at scrape time (a passive queue declare per service), so replays and
    purges from the CLI, in another process, show at once. A broker that does not answer gives
    no sample rather than a wrong one."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._watched: dict[tuple[str, str], int] = {}  # (amqp_uri, service) -> references
        self._lock = threading.Lock()

    def watch(self, service: str, amqp_uri: str) -> None:
        with self._lock:
            key = (amqp_uri, service)
            self._watched[key] = self._watched.get(key, 0) + 1

    def unwatch(self, service: str, amqp_uri: str) -> None:
        with self._lock:
            key = (amqp_uri, service)
            left = self._watched.get(key, 0) - 1
            if left > 0:
                self._watched[key] = left
            else:
                self._watched.pop(key, None)

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("companion_parked_messages",
                                 "Messages waiting in <service>.parked (broker queue depth).",
                                 labels=["service"])

    def describe(self):
        # Registration asks for the names; answering here keeps it from scraping the broker.
        yield self._family()

    def collect(self):
        family = self._family()
        with self._lock:
            watched = sorted(self._watched)
        by_uri: dict[str, list[str]] = {}
        for uri, service in watched:
            by_uri.setdefault(uri, []).append(service)
        for uri, services in by_uri.items():
            for service, depth in self._depths(uri, services):
                family.add_metric([service], depth)
        yield family

    def _depths(self, amqp_uri: str, services: list[str]) -> list[tuple[str, int]]:
        from amqp.exceptions import NotFound
        from kombu import Connection

        from shared.messaging.broker_uri import connect_retries

        found: list[tuple[str, int]] = []
        try:
            with Connection(amqp_uri, connect_timeout=self.timeout) as conn:
                conn.ensure_connection(max_retries=connect_retries(amqp_uri, rounds=2),
                                       timeout=self.timeout)
                for service in services:
                    channel = conn.channel()
                    try:
                        _, depth, _ = channel.queue_declare(parked_queue(service), passive=True)
                    except NotFound:  # nothing was ever parked: the queue does not exist yet
                        depth = 0
                    finally:
                        try:
                            channel.close()
                        except Exception:
                            pass
                    found.append((service, int(depth)))
        except Exception as exc:  # broker unreachable: no sample beats a wrong one
            log.warning("parked queue depth unavailable: %s", type(exc).__name__)
        return found


PARKED_DEPTH = ParkedDepthCollector()
REGISTRY.register(PARKED_DEPTH)


def watch_parked(service: str, amqp_uri: str) -> None:
    PARKED_DEPTH.watch(service, amqp_uri)


def unwatch_parked(service: str, amqp_uri: str) -> None:
    PARKED_DEPTH.unwatch(service, amqp_uri)


# -- quarantined webhook deliveries waiting: counted in the database, read when scraped ------------
class QuarantineCollector:
    """`companion_webhook_quarantined{store}`: deliveries in quarantine right now.

    Counted at scrape time by whoever watches (customer_sync passes a function over its own
    database: this module never names a service), so a replay from the CLI shows at once. A
    database that does not answer gives no sample rather than a wrong one."""

    def __init__(self) -> None:
        # database -> (references, counting function): instances sharing a database (several
        # in one process) count the same documents once.
        self._sources: dict[str, tuple[int, Callable[[], dict[str, int]]]] = {}
        self._lock = threading.Lock()

    def watch(self, database: str, counts: Callable[[], dict[str, int]]) -> None:
        with self._lock:
            references, _ = self._sources.get(database, (0, counts))
            self._sources[database] = (references + 1, counts)

    def unwatch(self, database: str) -> None:
        with self._lock:
            references, counts = self._sources.get(database, (0, None))
            if references > 1:
                self._sources[database] = (references - 1, counts)
            else:
                self._sources.pop(database, None)

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("companion_webhook_quarantined",
                                 "Webhook deliveries waiting in quarantine (customer_sync's "
                                 "inbox), per store.", labels=["store"])

    def describe(self):
        yield self._family()

    def collect(self):
        family = self._family()
        with self._lock:
            sources = [counts for _, counts in self._sources.values()]
        totals: dict[str, int] = {}
        for counts in sources:
            try:
                for store, count in counts().items():
                    totals[store] = totals.get(store, 0) + count
            except Exception as exc:  # database unreachable: no sample beats a wrong one
                log.warning("quarantine count unavailable: %s", type(exc).__name__)
        for store, count in sorted(totals.items()):
            family.add_metric([store], count)
        yield family


QUARANTINE = QuarantineCollector()
REGISTRY.register(QUARANTINE)


def watch_quarantine(database: str, counts: Callable[[], dict[str, int]]) -> None:
    QUARANTINE.watch(database, counts)


def unwatch_quarantine(database: str) -> None:
    QUARANTINE.unwatch(database)


# -- the server ----------------------------------------------------------------------------------
Readiness = Callable[[], dict]


def _json(start_response, status: str, body: dict) -> list[bytes]:
    payload = json.dumps(body, default=str).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(payload)))])
    return [payload]


def metrics_app(ready: Readiness | None = None, registry=REGISTRY) -> Callable:
    """WSGI app: `/metrics` (Prometheus text or OpenMetrics), `/health/live`, `/health/ready`.

    `ready()` answers `{"ready": bool, "checks": {...}}`; without it readiness is liveness."""
    # The `*_created` timestamp series double the output and no dashboard here reads them.
    disable_created_metrics()
    exposition = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return exposition(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return _json(start_response, "405 Method Not Allowed", {"error": "use GET"})
        if path == "/health/live":
            return _json(start_response, "200 OK", {"live": True})
        if path == "/health/ready":
            try:
                state = ready() if ready is not None else {"ready": True, "checks": {}}
            except Exception as exc:  # a check that breaks means "not ready", not a 500
                state = {"ready": False, "checks": {}, "error": type(exc).__name__}
            return _json(start_response, "200 OK" if state.get("ready") else
                         "503 Service Unavailable", state)
        return _json(start_response, "404 Not Found",
                     {"error": "not found", "paths": ["/metrics", "/health/live", "/health/ready"]})

    return app


class MetricsServer:
    """eventlet's WSGI server for `metrics_app`, in a green thread of this process."""

    def __init__(self, port: int, host: str = "0.0.0.0", ready: Readiness | None = None) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self._socket = None
        self._thread = None

    def start(self) -> "MetricsServer":
        import eventlet
        import eventlet.wsgi

        self._socket = eventlet.listen((self.host, self.port))
        self.port = self._socket.getsockname()[1]  # port 0 in tests: the one the OS chose
        self._thread = eventlet.spawn(eventlet.wsgi.server, self._socket, metrics_app(self.ready),
                                      log_output=False, max_size=64)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @property
    def running(self) -> bool:
        return self._thread is not None


_server: MetricsServer | None = None


def serve(port: int, ready: Readiness | None = None, host: str = "0.0.0.0") -> MetricsServer | None:
    """Start this process's metrics server once (later calls get the same server). Port 0 (the
    `METRICS_PORT=0` setting) disables it; a port in use is logged and not fatal, since the
    services themselves work without it."""
    global _server
    if _server is not None and _server.running:
        return _server
    if not port:
        log.info("metrics server disabled (METRICS_PORT=0)")
        return None
    try:
        _server = MetricsServer(port, host, ready).start()
    except OSError as exc:
        log.error("metrics server could not listen on %s:%s: %s", host, port, exc)
        return None
    log.info("metrics and health on http://%s:%s/metrics", host, _server.port)
    return _server


def stop_serving() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
