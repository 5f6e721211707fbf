"""The batch entrypoint of an event notifications keeps nothing of and only starts workflows
with (`order.updated`): while no enabled workflow of any store is triggered by its type, a
delivery is acknowledged before its body is loaded against its contract, so a shop's stream
of order changes costs notifications next to nothing until someone uses it.

Why no event a workflow needs is lost: the question is asked of the same stored workflows as
the trigger decision itself (`Notifier.workflows`), remembered for one second where a store's
workflows are remembered for five (`Notifier.starts_workflows`: asked on nearly every delivery,
its answer is nearly always remembered), and a save or delete through an instance clears that
instance's memory of both at once. So an event the gate lets pass is decided as before, and an
event it drops is one that the trigger decision would have found no enabled workflow for, but
for the one second after a workflow is enabled through another instance. A database that does
not answer lets every delivery through (the handler then retries as it would have)."""
from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from shared.messaging.batches import BatchEventHandler
from shared.mongo import declared_storage

log = logging.getLogger(__name__)


class TriggerOnlyBatches(BatchEventHandler):
    """`@TriggerOnlyBatches.decorator(source, event_type, ...)`: a batch event handler whose
    deliveries are acknowledged unread while no workflow uses their type."""

    def setup(self) -> None:
        super().setup()
        self._app = declared_storage(self.container, "app",
                                     f"the workflow gate of {self.method_name}")

    def handle_message(self, body, message) -> None:
        if self._nobody_listens():
            self.queue_consumer.ack_message(message)
            self.counters.handled.inc()  # applied, as the one-event path would: to no effect
            return
        super().handle_message(body, message)

    def _nobody_listens(self) -> bool:
        try:
            return not self._app.repositories.notifier().starts_workflows(self.event_type)
        except PyMongoError:
            log.warning("workflows unreadable: %s deliveries go through", self.event_type)
            return False


trigger_only_batches = TriggerOnlyBatches.decorator
