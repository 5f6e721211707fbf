"""The ConfirmingPublisher on the real broker: a batch goes to the socket in one write and
arrives whole, in order, each body intact, including bodies larger than one AMQP frame."""
from __future__ import annotations

import json
import uuid

from kombu import Connection, Exchange, Queue

from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, PublishError

EXCHANGE = "publisher_test.events"


def bound_queue(amqp_uri: str) -> str:
    name = f"publisher-test-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_uri) as conn:
        Queue(name, Exchange(EXCHANGE, "topic", durable=True), routing_key="#",
              durable=True)(conn.default_channel).declare()
    return name


def received(amqp_uri: str, queue: str, count: int) -> list[tuple[str, dict]]:
    """(message id, body) of the first `count` messages in `queue`, in queue order."""
    out: list[tuple[str, dict]] = []
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        while len(out) < count:
            message = channel.basic_get(queue, no_ack=True)
            assert message is not None, f"only {len(out)} of {count} messages arrived"
            out.append((message.properties["message_id"], json.loads(message.body)))
    return out


def messages(count: int, big_every: int = 0) -> list[OutgoingMessage]:
    """`count` messages; with `big_every`, every such one carries a body of about 300 KiB,
    more than two frames at the broker's default frame size (128 KiB)."""
    out = []
    for n in range(count):
        text = f"{n:04d}-" * (50_000 if big_every and n % big_every == 0 else 3)
        out.append(OutgoingMessage(EXCHANGE, "thing.happened", {"n": n, "text": text},
                                   message_id=f"m-{n:04d}"))
    return out


def test_a_batch_is_written_to_the_socket_once_and_arrives_whole_and_in_order(amqp_uri):
    queue = bound_queue(amqp_uri)
    publisher = ConfirmingPublisher(amqp_uri)
    try:
        publisher.publish_batch(messages(1))  # connected, exchange declared
        transport = publisher._kombu.connection.transport
        writes: list[int] = []
        send = transport._write

        def counted(data) -> None:
            writes.append(len(data))
            send(data)

        transport._write = counted
        batch = messages(40, big_every=13)
        publisher.publish_batch(batch)
        assert len(writes) == 1, f"{len(writes)} writes for one batch"
        transport._write = send
        publisher.publish_batch(messages(3))  # the transport's own write is back
    finally:
        publisher.close()
    got = received(amqp_uri, queue, 1 + 40 + 3)
    assert [message_id for message_id, _ in got[1:41]] == [m.message_id for m in batch]
    assert [body for _, body in got[1:41]] == [m.body for m in batch]  # big ones intact
    assert [body["n"] for _, body in got[41:]] == [0, 1, 2]


def test_a_batch_that_fails_before_its_write_sends_nothing_and_the_next_one_goes(amqp_uri):
    """A body that cannot be serialised stops the batch before anything reaches the broker,
    so no part of it is routed; the publisher carries on with the next batch."""
    queue = bound_queue(amqp_uri)
    publisher = ConfirmingPublisher(amqp_uri)
    try:
        bad = [*messages(2), OutgoingMessage(EXCHANGE, "thing.happened", {"n": object()})]
        try:
            publisher.publish_batch(bad)
        except (TypeError, PublishError):
            pass
        else:
            raise AssertionError("an unserialisable body was published")
        publisher.publish_batch(messages(2))
    finally:
        publisher.close()
    assert [body["n"] for _, body in received(amqp_uri, queue, 2)] == [0, 1]
    with Connection(amqp_uri) as conn:
        assert conn.channel().basic_get(queue, no_ack=True) is None  # nothing of the bad batch
