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
import sys  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402

from bench.serve import serve_until_signalled  # noqa: E402
from nameko.web.handlers import http  # noqa: E402
from werkzeug.wrappers import Request, Response  # noqa: E402

log = logging.getLogger("bench.bare_service")

_ACCEPTED = b'{"status": "accepted"}'


class BareWebhookService:
    name = "bare_webhooks"

    @http("POST", "/webhooks/woocommerce/<string:store_id>")
    def receive_webhook(self, request: Request, store_id: str) -> Response:
        return Response(_ACCEPTED, status=200, mimetype="application/json")


def main() -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = {
        "AMQP_URI": os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
        "WEB_SERVER_ADDRESS": os.environ.get("WEB_SERVER_ADDRESS", "127.0.0.1:8000"),
    }
    runner = ServiceRunner(config)
    runner.add_service(BareWebhookService)
    return serve_until_signalled(runner, lambda: log.info(
        "bare webhook endpoint on %s", config["WEB_SERVER_ADDRESS"]))


if __name__ == "__main__":
    sys.exit(main())
