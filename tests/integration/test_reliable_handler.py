"""The shared event handler on the real broker: retries, parking, replay, idempotency."""
from __future__ import annotations


import pytest
from pymongo.database import Database

from shared.events import build_event
from shared.messaging.handlers import event_handler
from shared.messaging.parking import ParkedMessages
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, events_exchange
from shared.mongo import MongoStorage
from tests.support import EventBarrier, wait_until


class Effects:
    """What the test service does when it handles an event: one document per application."""

    def __init__(self, database: Database, config=None) -> None:
        self.applied = database["applied"]
        self.attempts = database["attempts"]

    def ensure_indexes(self) -> None:
        pass


class Behaviour:
    fail_first = 0  # how many attempts per event fail before one succeeds
    always_fail = False


class FlakyService:
    name = "flaky"
    effects = MongoStorage(Effects)

    @event_handler("customer_sync", "customer.deleted", storage="effects")
    def on_customer_deleted(self, event):
        tries = self.effects.attempts.count_documents({"event_id": event.event_id}) + 1
        self.effects.attempts.insert_one({"event_id": event.event_id, "try": tries})
        if Behaviour.always_fail or tries <= Behaviour.fail_first:
            raise RuntimeError(f"simulated failure on try {tries}")
        self.effects.applied.insert_one({"event_id": event.event_id,
                                         "customer_id": event.data["customer_id"]})


@pytest.fixture(autouse=True)
def reset_behaviour():
    Behaviour.fail_first = 0
    Behaviour.always_fail = False
    yield


def publish(amqp_uri: str, *bodies: dict) -> None:
    publisher = ConfirmingPublisher(amqp_uri)
    try:
        publisher.publish_batch([
            OutgoingMessage(events_exchange("customer_sync"), body["event_type"], body)
            for body in bodies
        ])
    finally:
        publisher.close()


def deleted_event(customer_id: str = "c-1") -> dict:
    return build_event("customer.deleted", store_id="s1",
                       data={"customer_id": customer_id, "woo_customer_id": 7}).to_message()


def database(services) -> Database:
    from shared import mongo
    return mongo.connect(services.mongo_uri)["companion_flaky"]


def test_handler_that_fails_twice_then_succeeds_applies_once(services, amqp_uri):
    Behaviour.fail_first = 2
    services.start(FlakyService)
    event = deleted_event()
    barrier = EventBarrier(services, "flaky").expect("customer.deleted")
    publish(amqp_uri, event)
    db = database(services)
    # Settled once: its two retries came back and were taken, and no delivery is left to come.
    barrier.settled("customer.deleted")
    assert db.applied.count_documents({"event_id": event["event_id"]}) == 1
    assert [a["try"] for a in db.attempts.find().sort("try")] == [1, 2, 3]


def test_always_failing_handler_parks_with_error_and_replay_applies_once(services, amqp_uri):
    Behaviour.always_fail = True
    services.start(FlakyService, EVENT_MAX_ATTEMPTS="3")
    event = deleted_event("c-parked")
    publish(amqp_uri, event)
    parking = ParkedMessages(amqp_uri)
    parked = wait_until(lambda: parking.list("flaky"), message="message parked")
    assert len(parked) == 1
    [message] = parked
    assert message.event_id == event["event_id"]
    assert message.attempts == 3
    assert "RuntimeError: simulated failure on try 3" in message.error
    assert message.handler == "flaky.on_customer_deleted"
    assert "simulated failure" in message.traceback
    db = database(services)
    assert db.attempts.count_documents({}) == 3
    assert db.applied.count_documents({}) == 0
    # listing only peeks: the message is still parked
    assert [m.park_id for m in parking.list("flaky")] == [message.park_id]

    Behaviour.always_fail = False  # the fix is deployed
    replayed = parking.replay("flaky")
    assert [m.park_id for m in replayed] == [message.park_id]
    wait_until(lambda: db.applied.count_documents({}) == 1, message="replayed event applied")
    assert parking.list("flaky") == []

    # The same event arriving again (a publisher's re-send) is not applied twice.
    barrier = EventBarrier(services, "flaky").expect("customer.deleted")
    publish(amqp_uri, event)
    barrier.settled("customer.deleted")
    assert db.applied.count_documents({}) == 1
    assert db.attempts.count_documents({}) == 4


def test_duplicate_deliveries_apply_once(services, amqp_uri):
    services.start(FlakyService)
    event = deleted_event("c-dup")
    barrier = EventBarrier(services, "flaky").expect("customer.deleted")
    publish(amqp_uri, event, event, event)
    db = database(services)
    barrier.settled("customer.deleted", 3)  # applied once, skipped twice
    assert db.applied.count_documents({}) == 1


def test_body_that_breaks_its_contract_is_parked_without_retries(services, amqp_uri):
    services.start(FlakyService)
    bad = deleted_event()
    bad["data"] = {"woo_customer_id": "not a number"}
    publish(amqp_uri, bad)
    parked = wait_until(lambda: ParkedMessages(amqp_uri).list("flaky"), message="parked")
    assert "customer_id" in parked[0].error
    assert database(services).attempts.count_documents({}) == 0


def test_operator_cli_lists_shows_and_replays_parked_messages(services, amqp_uri):
    import json
    import os
    import subprocess
    import sys

    Behaviour.always_fail = True
    services.start(FlakyService, EVENT_MAX_ATTEMPTS="1")
    event = deleted_event("c-cli")
    publish(amqp_uri, event)
    wait_until(lambda: ParkedMessages(amqp_uri).list("flaky"), message="parked")

    def companion(*args):
        return subprocess.run([sys.executable, "-m", "ops.cli", *args], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "AMQP_URI": amqp_uri})

    listed = companion("--json", "dlq", "list", "--service", "flaky")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["event_id"] == event["event_id"] and "simulated failure" in row["error"]
    table = companion("dlq", "list", "--service", "flaky")
    assert "PARK_ID" in table.stdout and row["park_id"] in table.stdout
    shown = companion("--json", "dlq", "show", "--service", "flaky", "--id", row["park_id"])
    assert json.loads(shown.stdout)["body"]["event_id"] == event["event_id"]
    assert companion("dlq", "replay", "--service", "flaky").returncode == 2  # needs --id or --all
    assert companion("dlq", "replay", "--service", "flaky", "--id", "nope").returncode == 1
    Behaviour.always_fail = False
    replayed = companion("dlq", "replay", "--service", "flaky", "--id", row["park_id"])
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout
    wait_until(lambda: database(services).applied.count_documents({}) == 1, message="applied")


def test_purge_removes_only_the_selected_parked_message(services, amqp_uri):
    Behaviour.always_fail = True
    services.start(FlakyService, EVENT_MAX_ATTEMPTS="1")
    first, second = deleted_event("c-a"), deleted_event("c-b")
    publish(amqp_uri, first, second)
    parking = ParkedMessages(amqp_uri)
    parked = wait_until(lambda: len(parking.list("flaky")) == 2 and parking.list("flaky"))
    target = next(m for m in parked if m.event_id == first["event_id"])
    purged = parking.purge("flaky", {target.park_id})
    assert [m.event_id for m in purged] == [first["event_id"]]
    assert [m.event_id for m in parking.list("flaky")] == [second["event_id"]]
