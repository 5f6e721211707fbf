"""The fault tests' launcher on the real broker: a handler listed in the fault file fails
before doing any work, is retried and parked as a real failure would be, and applies once
replayed after the file is gone."""
from __future__ import annotations

from pymongo.database import Database

from shared import mongo
from shared.events import build_event
from shared.messaging.handlers import event_handler
from shared.messaging.parking import ParkedMessages
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, events_exchange
from shared.mongo import MongoStorage
from tests.support import wait_until
from tests.system.fault_launcher import HandlerFaults, failing_handlers


class Effects:
    def __init__(self, database: Database, config=None) -> None:
        self.applied = database["applied"]

    def ensure_indexes(self) -> None:
        pass


class FaultedService:
    name = "faulted"
    effects = MongoStorage(Effects)

    @event_handler("customer_sync", "customer.deleted", storage="effects")
    def on_customer_deleted(self, event):
        self.effects.applied.insert_one({"event_id": event.event_id})


def test_a_listed_handler_is_parked_untouched_and_replays_once_the_file_is_gone(
        services, amqp_uri, tmp_path):
    fault_file = tmp_path / "failing-handlers"
    fault_file.write_text("faulted.on_customer_deleted\n")
    event = build_event("customer.deleted", store_id="s1",
                        data={"customer_id": "c-1", "woo_customer_id": 7}).to_message()
    with failing_handlers(HandlerFaults(str(fault_file))):
        services.start(FaultedService, EVENT_MAX_ATTEMPTS="2", EVENT_RETRY_DELAYS_MS="100")
        publisher = ConfirmingPublisher(amqp_uri)
        try:
            publisher.publish_batch([OutgoingMessage(events_exchange("customer_sync"),
                                                     "customer.deleted", event)])
        finally:
            publisher.close()
        parking = ParkedMessages(amqp_uri)
        [parked] = wait_until(lambda: parking.list("faulted"), message="message parked")
        assert parked.attempts == 2 and "InjectedFault" in parked.error
        applied = mongo.connect(services.mongo_uri)["companion_faulted"]["applied"]
        assert applied.count_documents({}) == 0

        fault_file.unlink()
        parking.replay("faulted")
        wait_until(lambda: applied.count_documents({}) == 1, message="replayed event applied")
