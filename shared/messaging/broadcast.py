"""An event every instance of a service hears, not one of them: for state each process keeps
for itself (the gateway's key cache), which a competing consumer could not reach.

nameko's BROADCAST handler gives each instance a queue of its own (`<handler queue>-<uuid>`),
exclusive and deleted with the connection. So there is nothing to retry into and nothing to
park: a handler here must be cheap and unable to fail for the database's sake (it drops an
entry of an in-process cache), and an event that does not match its contract is logged and
dropped. An instance that was not connected when an event went out misses it, and cannot
learn what it missed: so the broadcast handlers consume on a connection of their own
(`BroadcastConsumer`), which tells whoever keeps state on the strength of broadcasts when it
stops hearing them and when it hears them again (`watch_broadcasts`), for them to stop
trusting that state in between and to drop it when the queue is back.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Iterator, Protocol

from nameko.events import BROADCAST, EventHandler
from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import QueueConsumer

from shared.events import InvalidEvent, parse_event
from shared.logs import log_context

log = logging.getLogger(__name__)


class BroadcastListener(Protocol):
    """State kept on the strength of broadcasts: told when they may have been missed."""

    def broadcast_lost(self) -> None:
        """Broadcasts are not heard from now on, until `broadcast_ready`."""

    def broadcast_ready(self) -> None:
        """Every broadcast published from now on is heard (the queue is bound and consumed);
        what was published since `broadcast_lost` may have been missed."""


class BroadcastConsumer(QueueConsumer):
    """The broadcast handlers' own broker connection (a shared extension of its own type, so
    not the one the RPC entrypoints share), which tells its listeners when it stops and
    starts consuming.

    kombu's ConsumerMixin does a whole connection in one `consume()`: it connects (retrying),
    declares and binds the queues, starts consuming, calls `on_consume_ready`, and drains
    until the connection fails, which ends `consume()` with the error that `run()` catches
    before connecting again. So `on_consume_ready` marks the moment broadcasts are heard
    again after every (re)connection, and the end of `consume()` the moment they are not."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[BroadcastListener] = []
        self.consuming = False
        self.connections = 0  # how many times it started consuming, for the log

    def watch(self, listener: BroadcastListener) -> None:
        self.listeners.append(listener)
        if self.consuming:
            listener.broadcast_ready()
        else:
            listener.broadcast_lost()

    def on_consume_ready(self, connection, channel, consumers, **kwargs) -> None:
        self.consuming = True
        self.connections += 1
        for listener in self.listeners:
            listener.broadcast_ready()
        if self.listeners and self.connections > 1:
            log.info("consuming broadcasts again (what went out meanwhile was missed)")
        super().on_consume_ready(connection, channel, consumers, **kwargs)

    def consume(self, *args, **kwargs) -> Iterator[None]:
        try:
            yield from super().consume(*args, **kwargs)
        finally:
            was_consuming, self.consuming = self.consuming, False
            for listener in self.listeners:
                listener.broadcast_lost()
            if was_consuming and self.listeners and not self.should_stop:
                log.warning("lost the broadcast connection: broadcasts may be missed until it "
                            "is back")


def watch_broadcasts(container, listener: BroadcastListener) -> None:
    """Tell `listener` when this container's broadcast handlers stop and start hearing
    broadcasts (it is told the current state at once). For a dependency provider's `setup`;
    in a container without broadcast handlers nothing is ever heard, and the listener is told
    so."""
    BroadcastConsumer().bind(container).watch(listener)


class BroadcastEventHandler(EventHandler):
    """`@broadcast_handler(source, event_type)`: the handler gets the parsed Event, in every
    running instance of the service, from a connection that says when it is down
    (`watch_broadcasts`)."""

    queue_consumer = BroadcastConsumer()

    def __init__(self, source_service: str, event_type: str, **kwargs) -> None:
        super().__init__(source_service, event_type, handler_type=BROADCAST,
                         reliable_delivery=False, requeue_on_error=False, **kwargs)

    def handle_message(self, body, message) -> None:
        try:
            event = parse_event(body, expected_type=self.event_type)
        except InvalidEvent as exc:
            log.error("dropping an invalid %s broadcast: %s", self.event_type, exc)
            self.queue_consumer.ack_message(message)
            return
        with log_context(store_id=event.store_id, event_id=event.event_id,
                         event_type=event.event_type):
            try:
                # nameko logs a failing worker; the message is acknowledged either way.
                self.container.spawn_worker(self, (event,), {},
                                            context_data=self.unpack_message_headers(message),
                                            handle_result=partial(self.handle_result, message))
            except ContainerBeingKilled:
                self.queue_consumer.ack_message(message)  # its queue goes with this instance


broadcast_handler = BroadcastEventHandler.decorator
