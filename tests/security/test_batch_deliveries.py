"""Hostile deliveries to a batch event handler. Whoever can publish to a source service's
exchange can put anything in a handler's queue: bodies that are not events, events of another
type, data that breaks the contract, and attempt counts forged in the header. Each is parked
alone with its reason, never handed to the handler, and never holds back or spoils the valid
events of its batch; a forged count buys no extra tries."""
from __future__ import annotations

import pytest
from pymongo.database import Database

from shared import mongo
from shared.events import build_event
from shared.messaging.batches import batch_event_handler
from shared.messaging.handlers import ATTEMPTS_HEADER
from shared.messaging.parking import ParkedMessages
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, events_exchange
from shared.messaging.queues import TypedQueuesContainer
from shared.mongo import MongoStorage
from tests.support import EventBarrier, wait_until


class Effects:
    def __init__(self, database: Database, config=None) -> None:
        self.calls = database["calls"]

    def ensure_indexes(self) -> None:
        pass


class Refusing:
    customers: set[str] = set()  # customers whose events the handler always fails on


class GuardedService:
    name = "guarded"
    effects = MongoStorage(Effects)

    @batch_event_handler("customer_sync", "customer.deleted", storage="effects")
    def on_customers_deleted(self, events):
        customers = [event.data["customer_id"] for event in events]
        self.effects.calls.insert_one({"customers": customers})
        if Refusing.customers & set(customers):
            raise RuntimeError("refused")


@pytest.fixture(autouse=True)
def reset():
    Refusing.customers = set()
    yield


def deleted(customer_id: str) -> dict:
    return build_event("customer.deleted", store_id="s1",
                       data={"customer_id": customer_id, "woo_customer_id": 7}).to_message()


def publish(amqp_uri: str, *messages: tuple[object, dict]) -> None:
    publisher = ConfirmingPublisher(amqp_uri)
    try:
        publisher.publish_batch([
            OutgoingMessage(events_exchange("customer_sync"), "customer.deleted", body,
                            headers=headers) for body, headers in messages])
    finally:
        publisher.close()


def handed_over(services) -> list[str]:
    database = mongo.connect(services.mongo_uri)["companion_guarded"]
    return [c for call in database.calls.find() for c in call["customers"]]


def test_bodies_that_are_not_this_handlers_events_are_parked_alone(services, amqp_uri):
    services.start(GuardedService, EVENT_BATCH_SIZE="10", EVENT_BATCH_WAIT_MS="500")
    wrong_type = {**deleted("c-other"), "event_type": "customer.created"}
    broken = deleted("c-broken")
    broken["data"] = {"customer_id": "c" * 100_000, "woo_customer_id": "seven"}
    no_envelope = deleted("c-bare")
    del no_envelope["event_id"]
    hostile = [[1, 2, 3], "a string", {"event_type": "customer.deleted"}, broken, no_envelope]
    valid = [deleted("c-1"), deleted("c-2")]
    barrier = EventBarrier(services, "guarded").expect("customer.deleted")
    publish(amqp_uri, (valid[0], {}), *[(body, {}) for body in hostile],
            (wrong_type, {}), (valid[1], {}))
    barrier.settled("customer.deleted", 8)  # two applied, six parked
    assert handed_over(services) == ["c-1", "c-2"]
    parked = ParkedMessages(amqp_uri).list("guarded")
    assert len(parked) == 6
    # Parked at once, without a try: retrying cannot fix a body.
    assert all(message.attempts == 5 and message.error for message in parked)
    errors = " ".join(message.error for message in parked)
    assert "must be a JSON object" in errors and "expected customer.deleted" in errors


@pytest.mark.parametrize("forged", [-1000, "-5", "many", 2**62])
def test_a_forged_attempt_count_buys_no_extra_tries(services, amqp_uri, forged):
    Refusing.customers = {"c-refused"}
    services.start(GuardedService, EVENT_BATCH_SIZE="10", EVENT_BATCH_WAIT_MS="100",
                   EVENT_MAX_ATTEMPTS="2")
    event = deleted("c-refused")
    publish(amqp_uri, (event, {ATTEMPTS_HEADER: forged}))
    [parked] = wait_until(lambda: ParkedMessages(amqp_uri).list("guarded"), timeout=20,
                          message="parked")
    assert parked.event_id == event["event_id"]
    tries = handed_over(services).count("c-refused")
    assert tries <= 2  # at most EVENT_MAX_ATTEMPTS, whatever the header said


@pytest.mark.parametrize("setting, value", [
    ("EVENT_BATCH_SIZE", "0"), ("EVENT_BATCH_SIZE", "1001"), ("EVENT_BATCH_SIZE", "many"),
    ("EVENT_BATCH_WAIT_MS", "-1"), ("EVENT_BATCH_WAIT_MS", "60001"),
])
def test_batch_settings_out_of_bounds_refuse_to_start(services, setting, value):
    """More in hand than the memory budget, an empty batch, or an hour's wait: refused at start,
    naming the variable, before anything is consumed."""
    container = TypedQueuesContainer(GuardedService, services.config(**{setting: value}))
    with pytest.raises(ValueError, match=setting):
        container.start()
    container.kill()
