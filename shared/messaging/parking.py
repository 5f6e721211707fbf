"""What operators do with parked messages: list, show, replay after a fix, purge.

Parked messages stay in RabbitMQ (`<service>.parked`), durable and visible in the management
UI. Listing peeks: it takes the messages without acknowledging them and closes the channel,
which returns them to the queue. Replay sends a message straight back to the queue of the
handler that failed (not to every consumer of the event), with its attempt count reset, and
removes it from the parked queue only after the broker confirmed the re-publish.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import amqp
from kombu import Connection

from shared.messaging.handlers import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    HANDLER_HEADER,
    PARK_ID_HEADER,
    PARKED_AT_HEADER,
    QUEUE_HEADER,
    TRACEBACK_HEADER,
)
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage
from shared.messaging.names import parked_queue
from shared.times import utcnow

REPLAYED_AT_HEADER = "x-companion-replayed-at"
_FAILURE_HEADERS = {ATTEMPTS_HEADER, ERROR_HEADER, TRACEBACK_HEADER, PARKED_AT_HEADER, PARK_ID_HEADER}


@dataclass(frozen=True)
class ParkedMessage:
    park_id: str
    queue: str
    handler: str
    attempts: int
    error: str
    parked_at: str
    body: dict
    headers: dict = field(repr=False)

    @property
    def event_id(self) -> str | None:
        return self.body.get("event_id") if isinstance(self.body, dict) else None

    @property
    def event_type(self) -> str | None:
        return self.body.get("event_type") if isinstance(self.body, dict) else None

    @property
    def store_id(self) -> str | None:
        return self.body.get("store_id") if isinstance(self.body, dict) else None

    @property
    def traceback(self) -> str:
        return str(self.headers.get(TRACEBACK_HEADER, ""))

    def summary(self) -> dict:
        return {
            "park_id": self.park_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "store_id": self.store_id,
            "handler": self.handler,
            "attempts": self.attempts,
            "error": self.error,
            "parked_at": self.parked_at,
        }


def _decode(message) -> ParkedMessage:
    headers = dict(message.headers or {})
    try:
        body = json.loads(message.body)
    except (TypeError, ValueError):
        body = {"undecodable": message.body.decode("utf-8", "replace") if isinstance(message.body, bytes) else str(message.body)}
    return ParkedMessage(
        park_id=str(headers.get(PARK_ID_HEADER, "")),
        queue=str(headers.get(QUEUE_HEADER, "")),
        handler=str(headers.get(HANDLER_HEADER, "")),
        attempts=int(headers.get(ATTEMPTS_HEADER, 0) or 0),
        error=str(headers.get(ERROR_HEADER, "")),
        parked_at=str(headers.get(PARKED_AT_HEADER, "")),
        body=body,
        headers=headers,
    )


class ParkedMessages:
    """Operator access to a service's parked queue."""

    def __init__(self, amqp_uri: str, ssl: dict | None = None) -> None:
        self.amqp_uri = amqp_uri
        self.ssl = ssl

    def _walk(self, service: str, decide: Callable[[ParkedMessage], bool],
              act: Callable[[ParkedMessage], None] | None) -> list[ParkedMessage]:
        """Take every parked message; for those `decide` selects, run `act` then acknowledge
        (remove); everything else returns to the queue when the channel closes."""
        selected: list[ParkedMessage] = []
        with Connection(self.amqp_uri, ssl=self.ssl, connect_timeout=10) as conn:
            channel = conn.channel()
            try:
                # Passive: whatever its type (classic or quorum), and nothing to park yet when
                # the service never parked anything.
                try:
                    _, count, _ = channel.queue_declare(parked_queue(service), passive=True)
                except amqp.exceptions.NotFound:
                    channel = conn.channel()
                    return selected
                for _ in range(count):
                    raw = channel.basic_get(parked_queue(service), no_ack=False)
                    if raw is None:
                        break
                    parked = _decode(raw)
                    if decide(parked):
                        if act is not None:
                            act(parked)
                            channel.basic_ack(raw.delivery_tag)
                        selected.append(parked)
            finally:
                channel.close()  # unacknowledged messages go back to the queue
        return selected

    def list(self, service: str) -> list[ParkedMessage]:
        return self._walk(service, lambda _: True, None)

    def show(self, service: str, park_id: str) -> ParkedMessage | None:
        found = self._walk(service, lambda m: m.park_id == park_id, None)
        return found[0] if found else None

    def replay(self, service: str, park_ids: set[str] | None = None) -> list[ParkedMessage]:
        """Send the selected (default: all) parked messages back to their handler's queue."""
        publisher = ConfirmingPublisher(self.amqp_uri, ssl=self.ssl)

        def resend(parked: ParkedMessage) -> None:
            headers = {k: v for k, v in parked.headers.items() if k not in _FAILURE_HEADERS}
            headers[REPLAYED_AT_HEADER] = utcnow().isoformat()
            publisher.publish_batch([OutgoingMessage("", parked.queue, parked.body, headers=headers)])

        try:
            return self._walk(service, _selector(park_ids), resend)
        finally:
            publisher.close()

    def purge(self, service: str, park_ids: set[str] | None = None) -> list[ParkedMessage]:
        """Delete the selected (default: all) parked messages."""
        return self._walk(service, _selector(park_ids), lambda _: None)

    def drop_where(self, service: str, matches: Callable[[ParkedMessage], bool]) -> list[ParkedMessage]:
        """Delete parked messages a predicate selects (GDPR erasure uses this)."""
        return self._walk(service, matches, lambda _: None)


def _selector(park_ids: set[str] | None) -> Callable[[ParkedMessage], bool]:
    if park_ids is None:
        return lambda _: True
    return lambda m: m.park_id in park_ids
