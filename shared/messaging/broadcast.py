"""An event every instance of a service hears, not one of them: for state each process keeps
for itself (the gateway's key cache), which a competing consumer could not reach.

nameko's BROADCAST handler gives each instance a queue of its own (`<handler queue>-<uuid>`),
exclusive and deleted with the connection. So there is nothing to retry into and nothing to
park: a handler here must be cheap and unable to fail for the database's sake (it drops an
entry of an in-process cache), and an event that does not match its contract is logged and
dropped. An instance that was not connected when an event went out misses it; what such a
handler keeps must therefore also expire on its own (the key cache's lifetime).
"""
from __future__ import annotations

import logging
from functools import partial

from nameko.events import BROADCAST, EventHandler
from nameko.exceptions import ContainerBeingKilled

from shared.events import InvalidEvent, parse_event
from shared.logs import log_context

log = logging.getLogger(__name__)


class BroadcastEventHandler(EventHandler):
    """`@broadcast_handler(source, event_type)`: the handler gets the parsed Event, in every
    running instance of the service."""

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
