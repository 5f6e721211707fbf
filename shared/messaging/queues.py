"""The type of the durable queues the services declare: classic, or quorum on a cluster.

Quorum queues are replicated across a RabbitMQ cluster (Raft), so a node's loss loses no
message. They must be durable and neither exclusive nor auto-delete, and RabbitMQ refuses to
redeclare one without `x-queue-type` (PRECONDITION_FAILED), so every declaration of the same
queue must say the same type: `queue_arguments` is the one place that says it.

nameko declares some of the queues itself (`rpc-<service>`, each event handler's
`evt-<source>-<type>--<service>.<method>`, and a `@consume` entrypoint's durable queue such as
customer_sync's `customer_sync.inbox`). `TypedQueuesContainer` (nameko's
SERVICE_CONTAINER_CLS, set by `nameko_config`) adds the arguments to those after the
extensions are set up and before their consumers declare anything, without forking nameko.
Per-process reply queues (`rpc.reply-...`) stay classic: they live as long as one process. They
are declared transient (nameko makes them durable): on a cluster, a durable classic queue whose
node died cannot be declared again until that node is back, and as the reply queue shares its
connection with every consumer of the container, none of them could reconnect; RabbitMQ
deletes a transient queue with its node, so it is declared afresh on a surviving one.

The same container makes its consumers' acknowledgements survive a lost connection
(`tolerate_lost_connections`).
"""
from __future__ import annotations

import copy
import logging
from typing import Mapping

from kombu import Queue
from nameko.containers import ServiceContainer
from nameko.messaging import Consumer, QueueConsumer
from nameko.rpc import ReplyListener, RpcConsumer

from shared.config import Config, from_nameko
from shared.messaging.broker_uri import check_nodes
from shared.tls import amqp_ssl_options

log = logging.getLogger(__name__)

QUEUE_TYPES = ("classic", "quorum")
# RabbitMQ 4 gives quorum queues a delivery limit of 20 by default and then drops the message
# (no dead-letter exchange here). Our handlers give a message back to its queue during a
# database outage, once a second, and `companion dlq list` returns what it peeks at: both
# count as deliveries. Failures are counted by our own retry header instead, so the broker's
# limit is set far out of reach (about eleven days of one-second outage requeues).
QUORUM_DELIVERY_LIMIT = 1_000_000


def queue_type(config: Config) -> str:
    """AMQP_QUEUE_TYPE, checked."""
    value = config.get("AMQP_QUEUE_TYPE").strip().lower()
    if value not in QUEUE_TYPES:
        raise ValueError(f"AMQP_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, "
                         f"got {value!r}")
    return value


def queue_arguments(kind: str, base: Mapping[str, object] | None = None) -> dict:
    """Declaration arguments of a durable queue of type `kind`, on top of `base` (TTL,
    dead-lettering). Classic adds nothing, so queues declared before this setting existed
    stay equivalent."""
    arguments = dict(base or {})
    if kind == "quorum":
        arguments["x-queue-type"] = "quorum"
        arguments["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
    return arguments


def typed_queue(queue: Queue, kind: str) -> None:
    """Make nameko's durable, shared queue of type `kind` (in place, before it is declared)."""
    if kind == "classic":
        return
    if not queue.durable or queue.exclusive or queue.auto_delete:
        raise ValueError(f"queue {queue.name} cannot be a {kind} queue: it must be durable, "
                         "not exclusive and not auto-delete")
    queue.queue_arguments = queue_arguments(kind, queue.queue_arguments)


def tolerate_lost_connections(consumer: QueueConsumer) -> None:
    """Make a QueueConsumer's `ack_message` and `requeue_message` (in place) pass over a
    connection that was lost under them.

    nameko ignores py-amqp's ConnectionError there, but a node that died (SIGKILL, a lost
    machine, a reset) shows as a socket error on the write, and that error raised from a
    worker's result or a batch handler's thread kills the whole container. Nothing is lost by
    not settling such a message: the broker delivers it again, to this consumer once it has
    reconnected or to another, and the handler's claim or natural key keeps its effect single."""
    if getattr(consumer, "_tolerates_lost_connections", False):
        return
    for name in ("ack_message", "requeue_message"):
        settle = getattr(consumer, name)

        def tolerant(message, _settle=settle, _what=name.split("_")[0]) -> None:
            try:
                _settle(message)
            except OSError as exc:
                log.warning("could not %s a message, its connection is gone (%s); the broker "
                            "delivers it again", _what, exc)

        setattr(consumer, name, tolerant)
    consumer._tolerates_lost_connections = True


def transient_reply_queue(queue: Queue) -> None:
    """Make nameko's per-process RPC reply queue transient (in place, before it is declared);
    see the module doc."""
    queue.durable = False


def type_extension_queue(extension: object, kind: str) -> None:
    """Give an extension's durable shared queue the type `kind`, before it is declared.

    An event handler's and the RPC consumer's queues are made per container at set-up, but a
    `@consume` entrypoint's Queue is made once, by the decorator, and shared by every
    container of its class: it is copied first, so that a container of one queue type never
    changes the arguments another container (or a later one in the same process) declares."""
    queue = getattr(extension, "queue", None)
    if not isinstance(queue, Queue):
        return
    # Event handlers are nameko Consumers too; so is a plain `@consume` work queue.
    if isinstance(extension, RpcConsumer):
        typed_queue(queue, kind)
    elif isinstance(extension, Consumer) and queue.durable and not queue.exclusive \
            and not queue.auto_delete:
        extension.queue = copy.copy(queue)
        typed_queue(extension.queue, kind)


class TypedQueuesContainer(ServiceContainer):
    """nameko's container, declaring its RPC and event-handler queues as AMQP_QUEUE_TYPE and
    its reply queue transient, its consumers tolerating lost connections when they settle a
    message."""

    def start(self) -> None:
        # nameko 2.14's ServiceContainer.start is these two steps; the queues exist as kombu
        # objects after set-up and are declared by the QueueConsumer when it starts.
        kind = queue_type(from_nameko(self.config))
        self.started = True
        self.extensions.all.setup()
        for extension in self.extensions:
            if isinstance(extension, QueueConsumer):
                tolerate_lost_connections(extension)
            if isinstance(extension, ReplyListener):
                transient_reply_queue(extension.queue)
            type_extension_queue(extension, kind)
        self.extensions.all.start()


def nameko_config(config: Config, **extra: object) -> dict:
    """The dict nameko's ServiceRunner takes, plus our settings for dependency providers.

    Here rather than in shared.config: it names this module's container and the TLS options,
    both of which read the settings, so the settings module stays below them."""
    built: dict = config.values()
    built["max_workers"] = config.int("MAX_WORKERS")
    built["serializer"] = "json"
    queue_type(config)  # refuse an unknown queue type at start-up, not at the first declare
    check_nodes(config.get("AMQP_URI"))  # a cluster's nodes must agree on user and vhost
    built["AMQP_SSL"] = amqp_ssl_options(config)
    # Declares nameko's own `rpc-<service>` and event queues with AMQP_QUEUE_TYPE.
    built["SERVICE_CONTAINER_CLS"] = "shared.messaging.queues.TypedQueuesContainer"
    built.update(extra)
    return built
