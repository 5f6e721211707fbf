"""Starts the services in one process (nameko's ServiceRunner) and stops them cleanly.

Configuration comes from the environment (see shared.config.SETTINGS). The first Ctrl-C (or
SIGTERM) stops the services gracefully, letting running workers finish; a second one kills them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from nameko.runners import ServiceRunner

from shared import metrics
from shared.config import Config
from shared.health import process_readiness
from shared.tls import amqp_ssl_options
from shared.logs import configure_logging
from shared.mongo import is_mock, service_database

log = logging.getLogger("services.runner")

# Every service this deployment can run: name -> "module:Class".
SERVICES = {
    "customer_sync": "services.customer_sync.service:CustomerSyncService",
    "segmentation": "services.segmentation.service:SegmentationService",
    "loyalty": "services.loyalty.service:LoyaltyService",
    "notifications": "services.notifications.service:NotificationsService",
    "gdpr": "services.gdpr.service:GdprService",
    "gateway": "services.gateway.service:GatewayService",
}
# Services with HTTP endpoints of their own, and the setting naming their address: one process
# may run several services, and each web server needs its own port.
# Services that own no database (docs/design.md): a process running only these checks the broker.
WITHOUT_DATABASE = frozenset({"gateway"})
OWN_WEB_ADDRESS = {"notifications": "NOTIFICATIONS_WEB_SERVER_ADDRESS",
                   "gateway": "GATEWAY_WEB_SERVER_ADDRESS"}


def load_service(path: str) -> type:
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"services to run (default: all of {', '.join(SERVICES)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    config = Config()
    configure_logging(config.get("LOG_LEVEL"))
    try:
        nameko_config = config.nameko_config()
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    if is_mock(config.get("MONGO_URI")):
        log.warning("MONGO_URI is %s: data lives in memory and is lost at exit",
                    config.get("MONGO_URI"))
    names = args.names or list(SERVICES)
    runner = ServiceRunner(nameko_config)
    for name in names:
        cls = load_service(SERVICES[name])
        runner.add_service(cls)
        if name in OWN_WEB_ADDRESS:
            own = {**nameko_config, "WEB_SERVER_ADDRESS": config.get(OWN_WEB_ADDRESS[name])}
            runner.service_map[name] = runner.container_cls(cls, own)

    stopping = {"count": 0, "running": False}
    # One metrics server per process, however many services it runs; up before the services so
    # liveness answers while they start (readiness says 503 until they have).
    metrics_server = metrics.serve(
        config.int("METRICS_PORT"),
        ready=process_readiness(config.get("AMQP_URI"),
                                next((service_database(config, n) for n in names
                                      if n not in WITHOUT_DATABASE), None),
                                lambda: stopping["running"], amqp_ssl_options(config)))

    def on_signal(signum, frame):  # noqa: ARG001
        stopping["count"] += 1
        stopping["running"] = False
        if stopping["count"] == 1:
            log.info("stopping (again to kill)")
            import eventlet

            eventlet.spawn_n(runner.stop)
        else:
            log.warning("killing")
            import eventlet

            eventlet.spawn_n(runner.kill)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        runner.start()
    except Exception:
        log.exception("services could not start (is RabbitMQ at AMQP_URI reachable?)")
        metrics.stop_serving()
        return 1
    stopping["running"] = stopping["count"] == 0
    log.info("started %s; web endpoints on %s; metrics on port %s",
             ", ".join(runner.service_names), config.get("WEB_SERVER_ADDRESS"),
             metrics_server.port if metrics_server else "(off)")
    runner.wait()
    stopping["running"] = False
    metrics.stop_serving()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
