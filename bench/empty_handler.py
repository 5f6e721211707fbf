"""`python -m bench.empty_handler`: a nameko service whose `order.placed` handler does nothing.

The baseline of `bench.loyalty`: the same framework (nameko's event handler on a durable
`customer_sync.events` queue, acknowledged after the worker finishes, one process, the same
`MAX_WORKERS` and so the same prefetch) minus all the work, so the benchmark can tell what
draining a queue costs in nameko itself from what loyalty adds. It uses nameko's plain
`event_handler`, not the project's reliable one: no parsing, no idempotency record, nothing.

Configuration: AMQP_URI and MAX_WORKERS from the environment. SIGINT/SIGTERM stop it cleanly, a
second one kills it.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from nameko.events import event_handler  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

from bench.serve import serve_until_signalled  # noqa: E402

log = logging.getLogger("bench.empty_handler")

SERVICE_NAME = "bench_empty_handler"


class EmptyHandlerService:
    name = SERVICE_NAME

    @event_handler("customer_sync", "order.placed")
    def on_order_placed(self, payload: dict) -> None:
        """Deliberately nothing: the framework's own cost is what is measured."""


def main() -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = {
        "AMQP_URI": os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
        # nameko's worker pool size, which is also its consumer prefetch: as in
        # shared.messaging.queues.nameko_config, so both sides of the comparison match.
        "max_workers": int(os.environ.get("MAX_WORKERS", "10")),
        "serializer": "json",
    }
    runner = ServiceRunner(config)
    runner.add_service(EmptyHandlerService)
    return serve_until_signalled(runner, lambda: log.info(
        "empty order.placed handler consuming (max_workers %s)", config["max_workers"]))


if __name__ == "__main__":
    sys.exit(main())
