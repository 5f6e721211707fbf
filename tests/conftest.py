"""Root test configuration.

eventlet must patch the standard library before anything imports sockets or threads, so it
happens here, at the very top, as nameko's own test suite does.
"""
import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from shared import mongo  # noqa: E402
from tests.support import BrokerAdmin, EventCollector, ServiceHarness  # noqa: E402

RABBIT_MANAGEMENT_URL = os.environ.get("RABBIT_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
RABBIT_AMQP_HOST = os.environ.get("RABBIT_AMQP_HOST", "127.0.0.1:5672")


@pytest.fixture(scope="session")
def broker_admin():
    admin = BrokerAdmin(RABBIT_MANAGEMENT_URL)
    reason = admin.unavailable_reason()
    if reason:
        pytest.fail(
            f"RabbitMQ with its management plugin is required for these tests: {reason}. "
            "Run `bash .ci/run`, or `rabbitmq-server -detached` and "
            "`rabbitmq-plugins enable rabbitmq_management`."
        )
    return admin


@pytest.fixture
def amqp_uri(broker_admin):
    """A fresh virtual host per test, so tests never see each other's queues."""
    vhost = f"test-{uuid.uuid4().hex[:12]}"
    broker_admin.create_vhost(vhost)
    yield f"amqp://guest:guest@{RABBIT_AMQP_HOST}/{vhost}"
    broker_admin.delete_vhost(vhost)


@pytest.fixture
def mongo_uri():
    uri = f"mongomock://test-{uuid.uuid4().hex[:12]}"
    yield uri
    mongo.forget_mock(uri)


@pytest.fixture
def services(amqp_uri, mongo_uri):
    """Start real nameko containers against the test's vhost and in-memory MongoDB."""
    harness = ServiceHarness(amqp_uri, mongo_uri)
    yield harness
    harness.stop_all()


@pytest.fixture
def events(amqp_uri):
    collector = EventCollector(amqp_uri)
    yield collector
    collector.close()
