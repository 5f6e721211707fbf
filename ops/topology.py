"""Declare every consumer's event queue before any service publishes.

A topic exchange drops a message no queue is bound for, and nameko declares a handler's queue
only when that service starts. On a fresh deployment customer_sync can therefore publish
`order.placed` before loyalty has ever run, and loyalty never sees it. Declaring every
handler's queue and binding up front (compose runs this once, before the services, with the
operator's broker user) closes that gap: from then on the broker keeps the events for
consumers that are down or not yet started.

The queues are built exactly as nameko builds them (`nameko.events.EventHandler.setup`, our
handlers being reliable service-pool handlers), with the queue type of AMQP_QUEUE_TYPE, so the
service's own declaration later is equivalent and RabbitMQ accepts it.

`python -m ops.topology` (uses AMQP_URI, AMQP_QUEUE_TYPE and the AMQP_SSL_*
settings).
"""
from __future__ import annotations

import argparse
import sys
from typing import Mapping

from kombu import Connection, Queue
from nameko.standalone.events import get_event_exchange

from shared.config import Config
from shared.messaging.broker_errors import describe_broker_error, is_broker_failure
from shared.messaging.queues import queue_arguments, queue_type
from shared.tls import amqp_ssl_options

from ops.broker_permissions import entrypoints
from services.registry import load_all


def handler_queues(services: Mapping[str, type] | None = None,
                   kind: str = "classic") -> list[Queue]:
    """Every event handler's durable queue, bound to its source's exchange."""
    if services is None:
        services = load_all()
    queues = []
    for name, cls in sorted(services.items()):
        for handler in entrypoints(cls)[1]:
            if handler.broadcast:
                continue  # each instance declares its own queue, which dies with it
            exchange = get_event_exchange(handler.source, {})
            queues.append(Queue(handler.queue(name), exchange=exchange,
                                routing_key=handler.event_type, durable=True,
                                auto_delete=False, exclusive=False,
                                queue_arguments=queue_arguments(kind) or None))
    return queues


def declare(amqp_uri: str, queues: list[Queue], ssl: dict | None = None) -> int:
    """Declare the exchanges, queues and bindings (idempotent); answers how many queues."""
    with Connection(amqp_uri, ssl=ssl, connect_timeout=10) as connection:
        channel = connection.channel()
        try:
            for queue in queues:
                queue(channel).declare()
        finally:
            channel.close()
    return len(queues)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.topology",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the queues, declare nothing")
    args = parser.parse_args(argv)
    config = Config()
    try:
        queues = handler_queues(kind=queue_type(config))
        if args.dry_run:
            for queue in queues:
                print(f"{queue.name}  <-  {queue.exchange.name} [{queue.routing_key}]")
            return 0
        count = declare(config.get("AMQP_URI"), queues, amqp_ssl_options(config))
    except ValueError as exc:
        print(f"bad configuration: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_broker_failure(exc):
            raise
        print(f"cannot reach the broker: {describe_broker_error(exc, config.get('AMQP_URI'))}",
              file=sys.stderr)
        return 3
    print(f"declared {count} event queues and their bindings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
