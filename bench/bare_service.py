"""`python -m bench.bare_service`: a nameko service whose webhook endpoint does nothing.

The baseline of `bench.webhooks`: the same framework (nameko's eventlet web server, one
process) on the same route as customer_sync's webhook endpoint, minus all the work, so the
benchmark can tell what the framework costs from what customer_sync adds.

Configuration: AMQP_URI and WEB_SERVER_ADDRESS from the environment (the service has no AMQP
entrypoint; nameko only needs the URI in its config). SIGINT/SIGTERM stop it cleanly, a second
one kills it.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402
from nameko.web.handlers import http  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

log = logging.getLogger("bench.bare_service")

_ACCEPTED = b'{"status": "accepted"}'


class BareWebhookService:
    name = "bare_webhooks"

    @http("POST", "/webhooks/woocommerce/<string:store_id>")
    def receive_webhook(self, request: Request, store_id: str) -> Response:
        return Response(_ACCEPTED, status=200, mimetype="application/json")


def _tick() -> None:
    while True:
        eventlet.sleep(0.2)


def main() -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = {
        "AMQP_URI": os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
        "WEB_SERVER_ADDRESS": os.environ.get("WEB_SERVER_ADDRESS", "127.0.0.1:8000"),
    }
    runner = ServiceRunner(config)
    runner.add_service(BareWebhookService)
    signals = {"count": 0, "started": False}

    def on_signal(signum, frame):  # noqa: ARG001
        signals["count"] += 1
        if signals["started"]:  # before that, main() stops the runner once it has started
            eventlet.spawn_n(runner.stop if signals["count"] == 1 else runner.kill)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # A Python signal handler runs while the hub sits in epoll, and epoll is resumed with its
    # old timeout (PEP 475): with nothing else scheduled the green thread spawned by the
    # handler would wait for the hub's next wake-up (up to a minute). A ticker bounds that.
    eventlet.spawn_n(_tick)
    runner.start()
    signals["started"] = True
    if signals["count"]:
        runner.stop()
        return 0
    log.info("bare webhook endpoint on %s", config["WEB_SERVER_ADDRESS"])
    runner.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
