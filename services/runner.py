"""Starts the services in one process (nameko's ServiceRunner) and stops them cleanly.

Configuration comes from the environment: the shared settings and those of the services run
(services.registry.settings()). The services start once the broker accepts a connection; until
then each attempt names its cause in one line and the next waits longer (docs/running.md). The
first Ctrl-C (or SIGTERM) stops the services gracefully, letting running workers finish for up
to STOP_GRACE_SECONDS; a second one kills them at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Callable, Iterator

import eventlet
from eventlet import patcher
from nameko.runners import ServiceRunner

from shared import metrics
from shared.config import Config
from shared.health import broker_connection_error, process_readiness
from shared.messaging import queues
from shared.messaging.broker_errors import BrokerTroubleLog, describe_broker_error
from shared.tls import amqp_ssl_options
from shared.logs import LOG_FORMATS, configure_logging
from shared.mongo import adapter, service_database
from services.registry import SERVICE_PARTS, SERVICES, load_service, owner_of, runnable, settings

log = logging.getLogger("services.runner")

# Services that own no database (docs/design.md): a process running only these checks the broker.
WITHOUT_DATABASE = frozenset({"gateway"})
# Services with HTTP endpoints of their own, and the setting naming their address: one process
# may run several services, and each web server needs its own port.
OWN_WEB_ADDRESS = {"notifications": "NOTIFICATIONS_WEB_SERVER_ADDRESS",
                   "gateway": "GATEWAY_WEB_SERVER_ADDRESS"}

# Waits between attempts to reach the broker before the services start: doubling from the first
# to the most, so a broker that comes up is found soon and one that stays down costs little.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MOST_SECONDS = 30.0
# How long one attempt may take (a broker behind a firewall that drops packets never refuses).
CONNECT_TIMEOUT_SECONDS = 5.0
# A graceful stop gets this long; then the process exits whatever is still running, so Ctrl-C
# and SIGTERM end it within 10 s in every state of the broker.
STOP_GRACE_SECONDS = 8.0
# After a second Ctrl-C, nameko's kill gets this long to close connections before the exit.
KILL_GRACE_SECONDS = 1.0


def backoff_delays(first: float = BACKOFF_FIRST_SECONDS,
                   most: float = BACKOFF_MOST_SECONDS) -> Iterator[float]:
    """first, 2*first, 4*first ... up to `most`, then `most` for ever."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


def wait_for_broker(amqp_uri: str, ssl: dict | None, stop_requested: Callable[[], bool],
                    attempt: Callable[[], BaseException | None] | None = None,
                    delays: Iterator[float] | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
    """Try the broker until it answers (True) or a stop is requested (False), naming the cause
    of each failed attempt in one log line and backing off between attempts. The services are
    not started before: nameko's consumers would retry each on its own, several times a
    second, with a traceback each time, and stop badly while they do."""
    attempt = attempt or (lambda: broker_connection_error(amqp_uri, CONNECT_TIMEOUT_SECONDS, ssl))
    delays = delays or backoff_delays()
    while not stop_requested():
        error = attempt()
        if stop_requested():  # a signal during the attempt: start nothing
            break
        if error is None:
            return True
        delay = next(delays)
        log.warning("broker unavailable: %s; next attempt in %g s",
                    describe_broker_error(error, amqp_uri), delay)
        waited = 0.0
        while waited < delay and not stop_requested():
            step = min(0.1, delay - waited)
            sleep(step)
            waited += step
    return False


def _display_host(host: str) -> str:
    """The host of a URL for a bound address: a wildcard bind is reached as localhost."""
    return "localhost" if host in ("", "0.0.0.0", "::", "[::]") else host


def _base_url(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"http://{_display_host(host)}:{port}"


def served_addresses(names: list[str], config: Config, metrics_port: int | None
                     ) -> list[tuple[str, str]]:
    """(what, full URL) of every address the services named in `names` serve, in the order
    an operator looks for them; nameko's web servers speak plain HTTP."""
    served: list[tuple[str, str]] = []
    if "customer_sync" in names:
        web = _base_url(config.get("WEB_SERVER_ADDRESS"))
        served.append(("webhooks", f"{web}/webhooks/woocommerce/<store_id>"))
    if "gateway" in names:
        gateway = _base_url(config.get("GATEWAY_WEB_SERVER_ADDRESS"))
        served.append(("API", f"{gateway}/api/v1/"))
        served.append(("console", f"{gateway}/console/"))
    if "notifications" in names:
        # Imported only when notifications runs, so running the others never loads it.
        from services.notifications.email_reports import REPORT_PATH
        from services.notifications.twilio_hooks import INBOUND_PATH, STATUS_PATH

        own = _base_url(config.get("NOTIFICATIONS_WEB_SERVER_ADDRESS"))
        served.append(("Twilio callbacks", f"{own}{STATUS_PATH} {own}{INBOUND_PATH}"))
        served.append(("email reports", f"{own}{REPORT_PATH}"))
    if metrics_port:
        served.append(("metrics", f"http://localhost:{metrics_port}/metrics"))
    return served


class StopOnSignal:
    """Ctrl-C and SIGTERM: the first stops gracefully, the second kills; either way the process
    is gone within STOP_GRACE_SECONDS, even when nameko's stop hangs or fails (it can, when a
    consumer never connected). The deadline is kept by an OS thread, which runs whatever
    the green threads are doing."""

    def __init__(self, runner: ServiceRunner) -> None:
        self.runner = runner
        self.count = 0
        self.services_running = False  # readiness: started and not stopping
        self.services_started = False  # whether there is anything to stop
        self._deadline: float | None = None
        self._done = False

    @property
    def requested(self) -> bool:
        return self.count > 0

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum: int, frame: object) -> None:  # noqa: ARG002
        self.count += 1
        self.services_running = False
        if self.count == 1:
            log.info("stopping (again to kill)")
            self._exit_by(STOP_GRACE_SECONDS)
            if self.services_started:
                eventlet.spawn_n(self.runner.stop)
        else:
            log.warning("killing")
            self._exit_by(KILL_GRACE_SECONDS)
            if self.services_started:
                eventlet.spawn_n(self.runner.kill)

    def _exit_by(self, seconds: float) -> None:
        monotonic = patcher.original("time").monotonic
        deadline = monotonic() + seconds
        first = self._deadline is None
        self._deadline = deadline if first else min(self._deadline, deadline)
        if first:
            patcher.original("threading").Thread(target=self._watch, name="stop-deadline",
                                                 daemon=True).start()

    def done(self) -> None:
        """Stopped in time: the deadline no longer applies."""
        self._done = True

    def _watch(self) -> None:
        clock = patcher.original("time")
        while clock.monotonic() < self._deadline:
            if self._done:
                return
            clock.sleep(0.05)
        log.error("did not stop in time (workers still running, or the broker away); exiting")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)


def log_addresses(names: list[str], config: Config, metrics_port: int | None) -> None:
    for what, url in served_addresses(names, config, metrics_port):
        log.info("%s: %s", what, url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    known = runnable()
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"services to run (default: all of {', '.join(SERVICES)}; "
                             f"also {', '.join(SERVICE_PARTS)}, in a process of its own)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(known)}")
    names = args.names or list(SERVICES)
    together = [n for n in names if n in SERVICE_PARTS and owner_of(n) in names]
    if together:
        parser.error(f"{together[0]} is a part of {owner_of(together[0])}: run it in a "
                     "process of its own")
    # Built once, knowing every setting of the services run; nameko_config hands the declared
    # settings to the containers with their values (shared.config.from_nameko).
    config = Config(settings=settings(dict.fromkeys(owner_of(n) for n in names)))
    log_format = config.get("LOG_FORMAT")
    configure_logging(config.get("LOG_LEVEL"),
                      log_format=log_format if log_format in LOG_FORMATS else "json")
    if log_format not in LOG_FORMATS:
        log.error("bad configuration: LOG_FORMAT must be one of %s", ", ".join(LOG_FORMATS))
        return 2
    for handler in logging.getLogger().handlers:
        handler.addFilter(BrokerTroubleLog(config.get("AMQP_URI")))
    try:
        nameko_config = queues.nameko_config(config)
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    try:
        development_database = adapter(config.get("MONGO_URI"))
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    if development_database is not None:
        log.warning("MONGO_URI is %s: %s", config.get("MONGO_URI"),
                    development_database.DESCRIPTION)
    runner = ServiceRunner(nameko_config)
    for name in names:
        cls = load_service(known[name])
        runner.add_service(cls)
        if name in OWN_WEB_ADDRESS:
            own = {**nameko_config, "WEB_SERVER_ADDRESS": config.get(OWN_WEB_ADDRESS[name])}
            runner.service_map[name] = runner.container_cls(cls, own)

    stopping = StopOnSignal(runner)
    ssl = amqp_ssl_options(config)
    # One metrics server per process, however many services it runs; up before the services so
    # liveness answers while they start (readiness says 503 until they have).
    metrics_server = metrics.serve(
        config.int("METRICS_PORT"),
        ready=process_readiness(config.get("AMQP_URI"),
                                next((service_database(config, owner_of(n)) for n in names
                                      if n not in WITHOUT_DATABASE), None),
                                lambda: stopping.services_running, ssl))
    stopping.install()
    if not wait_for_broker(config.get("AMQP_URI"), ssl, lambda: stopping.requested):
        metrics.stop_serving()
        stopping.done()
        log.info("stopped before the broker answered; no service was started")
        return 0
    stopping.services_started = True
    try:
        runner.start()
    except Exception:
        log.exception("services could not start (is RabbitMQ at AMQP_URI reachable?)")
        metrics.stop_serving()
        return 1
    stopping.services_running = not stopping.requested
    log.info("started %s", ", ".join(names))
    log_addresses(names, config, metrics_server.port if metrics_server else None)
    runner.wait()
    stopping.services_running = False
    metrics.stop_serving()
    stopping.done()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
