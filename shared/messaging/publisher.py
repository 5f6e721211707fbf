"""Publishing with publisher confirms, in batches.

A confirm per message caps a channel at a few hundred messages a second, so a batch is
published first and its confirms are awaited together. A batch either is confirmed in full or
raises `PublishError`; the caller (the outbox relay) keeps what was not confirmed and tries
again later, so a broker outage delays events but never loses them.

On a cluster (AMQP_URI listing its nodes) a connection goes to the first node that answers.
When the node it held goes away while idle, the next call finds out only as it uses the
connection; it then reconnects (to a surviving node) and does its work once more there,
instead of failing a call that a live node would have taken. A batch sent again may repeat
messages the lost node had already routed: consumers deduplicate by message id, as they do for
every re-publish of the outbox.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import amqp
from kombu import Connection

from shared.messaging.broker_uri import connect_retries

log = logging.getLogger(__name__)

PERSISTENT = 2
T = TypeVar("T")

# A connection that is gone (a stopped or killed node, a closed socket), as opposed to the broker
# refusing an operation on a channel (those are not worth repeating elsewhere).
_LOST_CONNECTION = (OSError, amqp.exceptions.ConnectionError)


class PublishError(Exception):
    """Some messages of a batch were not confirmed by the broker."""


@dataclass(frozen=True)
class OutgoingMessage:
    exchange: str
    routing_key: str
    body: dict
    message_id: str | None = None
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"


@contextmanager
def one_write(transport) -> Iterator[None]:
    """Gather what py-amqp writes to `transport` inside the block and send it in one write at
    its end (nothing, if the block raises).

    py-amqp writes each published message (its method, header and body frames) to the socket
    as it goes: one system call per message, a tenth of a busy service's CPU when its batches
    are published one message a write. The frames are the same bytes in the same order; only
    the writes are fewer. Each chunk is copied, since py-amqp hands over a view of a buffer it
    reuses for the next frame. `_write` is py-amqp's transport hook for the raw write (the
    socket's `sendall` on TCP, a method on TLS), replaced on this transport for the block.
    Nothing inside the block may wait for an answer to what it wrote (py-amqp's own
    `confirm_publish` mode would): the connection here has confirms of its own and no
    heartbeats."""
    chunks: list[bytes] = []
    own = transport.__dict__.get("_write")
    transport._write = lambda data: chunks.append(bytes(data))
    try:
        yield
    finally:
        if own is None:
            del transport._write
        else:
            transport._write = own
    if chunks:
        transport.write(b"".join(chunks))


def events_exchange(source_service: str) -> str:
    """The topic exchange a service's events go to (nameko's naming, so nameko consumers bind)."""
    return f"{source_service}.events"


class ConfirmingPublisher:
    """One connection and channel in confirm mode, reconnected on the next call after a failure."""

    def __init__(self, amqp_uri: str, *, confirm_timeout: float = 15.0, ssl: object = None) -> None:
        self._uri = amqp_uri
        self._ssl = ssl
        self._confirm_timeout = confirm_timeout
        self._lock = threading.Lock()
        self._kombu: Connection | None = None
        self._channel: amqp.Channel | None = None
        self._declared: set[str] = set()
        self._next_tag = 1
        self._acked_upto = 0
        self._nacked: set[int] = set()
        self._acked: set[int] = set()
        self._batch_first = 1  # a multiple ack/nack covers the current batch up to its tag

    # -- connection -----------------------------------------------------------------------
    def _connect(self) -> amqp.Channel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._reset()
        self._kombu = Connection(self._uri, ssl=self._ssl, connect_timeout=10, heartbeat=0)
        # Every node of a cluster, twice over (kombu's `connect()` tries only two addresses).
        self._kombu.ensure_connection(max_retries=connect_retries(self._uri, rounds=2),
                                      reraise_as_library_errors=False)
        raw: amqp.Connection = self._kombu.connection
        channel = raw.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._channel = channel
        self._declared.clear()
        self._next_tag = 1
        self._acked.clear()
        self._nacked.clear()
        return channel

    def _reset(self) -> None:
        if self._kombu is not None:
            try:
                self._kombu.release()
            except Exception:  # closing a broken connection may fail; it is being dropped
                pass
        self._kombu = None
        self._channel = None

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _on_live_connection(self, action: Callable[[amqp.Channel], T]) -> T:
        """`action(channel)`; when it fails because the connection it found open had been
        lost meanwhile, once more on a new connection (the lock is held)."""
        reused = self._channel is not None and self._channel.is_open
        try:
            return action(self._connect())
        except _LOST_CONNECTION as exc:
            self._reset()
            if not reused:
                raise
            log.info("the broker connection was lost (%s); reconnecting", exc)
        return action(self._connect())

    # -- confirms -------------------------------------------------------------------------
    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked.update(range(self._batch_first, delivery_tag + 1))
        else:
            self._acked.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._nacked.update(range(self._batch_first, delivery_tag + 1))
        else:
            self._nacked.add(delivery_tag)

    # -- publishing -----------------------------------------------------------------------
    def _declare_exchange(self, channel: amqp.Channel, name: str, type_: str = "topic") -> None:
        if name and name not in self._declared:
            channel.exchange_declare(name, type_, durable=True, auto_delete=False)
            self._declared.add(name)

    def declare_queue(self, name: str, arguments: dict | None = None,
                      bind_to: str | None = None) -> None:
        """A durable queue; with `bind_to`, bound to that durable direct exchange under its
        own name (so publishing needs no right to the default exchange)."""
        def declare(channel: amqp.Channel) -> None:
            key = f"queue:{name}"
            if key not in self._declared:
                channel.queue_declare(name, durable=True, auto_delete=False,
                                      arguments=arguments or {})
                self._declared.add(key)
            if bind_to:
                self._bind(channel, name, bind_to)

        with self._lock:
            try:
                self._on_live_connection(declare)
            except (OSError, amqp.exceptions.AMQPError) as exc:
                self._reset()
                raise PublishError(f"declaring queue {name} failed: {exc!r}") from exc

    def bind_queue(self, name: str, exchange: str) -> None:
        """Bind an existing queue to a durable direct exchange under the queue's own name."""
        with self._lock:
            try:
                self._on_live_connection(lambda channel: self._bind(channel, name, exchange))
            except (OSError, amqp.exceptions.AMQPError) as exc:
                self._reset()
                raise PublishError(f"binding queue {name} failed: {exc!r}") from exc

    def _bind(self, channel: amqp.Channel, name: str, exchange: str) -> None:
        key = f"bind:{exchange}:{name}"
        if key not in self._declared:
            self._declare_exchange(channel, exchange, "direct")
            channel.queue_bind(name, exchange, routing_key=name)
            self._declared.add(key)

    def publish_batch(self, messages: list[OutgoingMessage]) -> None:
        """Publish every message and wait until the broker has confirmed them all."""
        if not messages:
            return
        with self._lock:
            try:
                self._on_live_connection(lambda channel: self._publish_locked(channel, messages))
            except (OSError, socket.error, amqp.exceptions.AMQPError, PublishError) as exc:
                self._reset()
                if isinstance(exc, PublishError):
                    raise
                raise PublishError(f"publishing {len(messages)} messages failed: {exc!r}") from exc

    def _publish_locked(self, channel: amqp.Channel, messages: list[OutgoingMessage]) -> None:
        for message in messages:
            if message.exchange and message.exchange.endswith(".events"):
                self._declare_exchange(channel, message.exchange)
        first = self._batch_first = self._next_tag
        connection = self._kombu.connection  # type: ignore[union-attr]
        with one_write(connection.transport):
            for message in messages:
                body = json.dumps(message.body, separators=(",", ":")).encode()
                props = {
                    "content_type": message.content_type,
                    "content_encoding": "utf-8",
                    "delivery_mode": PERSISTENT,
                    "application_headers": dict(message.headers),
                }
                if message.message_id:
                    props["message_id"] = message.message_id
                channel.basic_publish(amqp.Message(body, **props), message.exchange,
                                      message.routing_key)
        # Counted once written: a batch that failed before its write sent nothing, and the
        # broker numbers only what it received.
        self._next_tag += len(messages)
        last = self._next_tag - 1
        wanted = set(range(first, last + 1))
        deadline = time.monotonic() + self._confirm_timeout
        while not wanted <= (self._acked | self._nacked):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"no confirm for {len(wanted - self._acked)} messages in time")
            try:
                connection.drain_events(timeout=min(remaining, 1.0))
            except socket.timeout:
                continue
        nacked = wanted & self._nacked
        self._acked -= wanted
        self._nacked -= wanted
        if nacked:
            raise PublishError(f"the broker refused {len(nacked)} of {len(messages)} messages")
