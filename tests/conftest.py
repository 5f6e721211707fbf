"""Root test configuration.

eventlet must patch the standard library before anything imports sockets or threads, so it
happens here, at the very top, as nameko's own test suite does.
"""
import os
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
# hypothesis runs every package's "hypothesis" entry point when imported; trio (which selenium
# brings) registers one, and trio cannot be imported under eventlet's monkey patching.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import uuid  # noqa: E402

import pytest  # noqa: E402

from demo.mailbox import SmtpServer  # noqa: E402
from demo.sms import FakeTwilio  # noqa: E402
from devdoubles import mongomock_adapter, mongomock_speedups  # noqa: E402

# Every mongomock operation yields to other green threads, as a round trip to MongoDB would, so
# concurrency tests exercise real interleavings (see devdoubles/mongomock_speedups.py).
mongomock_speedups.YIELD_PER_OPERATION = True
from tests.outbox_watch import OutboxWatch  # noqa: E402
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
    mongomock_adapter.forget(uri)


def _docker_unavailable_reason() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as exc:  # no engine, no socket, no permission: all mean "cannot run here"
        return f"no Docker engine reachable ({type(exc).__name__}), so no real MongoDB container"


@pytest.fixture(scope="session")
def real_mongo_client():
    """A real MongoDB in a container (testcontainers), where a Docker engine exists."""
    reason = _docker_unavailable_reason()
    if reason:
        pytest.skip(reason + "; these storage tests ran against mongomock instead")
    from pymongo import MongoClient
    from testcontainers.mongodb import MongoDbContainer

    with MongoDbContainer("mongo:7") as container:
        client = MongoClient(container.get_connection_url(), tz_aware=True)
        yield client
        client.close()


@pytest.fixture(scope="session")
def wire_mongo_client():
    """The wire-protocol stand-in (tests/fakes/mongo_server.py) reached by the real pymongo
    driver: the driver's side of every command (encoding, cursors, write errors) is real."""
    from pymongo import MongoClient

    from tests.fakes.mongo_server import MongoWireServer

    server = MongoWireServer().start()
    client = MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    client.close()
    server.stop()


@pytest.fixture(params=["mongomock", pytest.param("wire", marks=pytest.mark.wire),
                        pytest.param("mongodb", marks=pytest.mark.docker)])
def database(request):
    """A fresh database: in memory; through pymongo to the wire server (`-m wire`, `make
    test-wire`: slower, so not in the default run); and on a real MongoDB where Docker is."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    if request.param == "mongomock":
        yield mongomock_adapter.client()[name]
        return
    client = request.getfixturevalue(
        "wire_mongo_client" if request.param == "wire" else "real_mongo_client")
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def services(amqp_uri, mongo_uri):
    """Start real nameko containers against the test's vhost and in-memory MongoDB. Every
    entrypoint they run is watched: one that writes an outbox without telling its relay fails
    the test (its events would wait for the safety-net sweep)."""
    watch = OutboxWatch().install()
    harness = ServiceHarness(amqp_uri, mongo_uri)
    harness.outbox_watch = watch
    try:
        yield harness
    finally:
        harness.stop_all()
        watch.uninstall()
    assert not watch.silent_writers, (
        "entrypoints wrote events to an outbox without telling the relay: "
        f"{sorted(set(watch.silent_writers))}")


@pytest.fixture
def events(amqp_uri):
    collector = EventCollector(amqp_uri)
    yield collector
    collector.close()


def pytest_terminal_summary(terminalreporter):
    """The fuzzing tests' case counts (their `fuzz_*` record_property values): a fuzzing run
    says how many cases it sent."""
    lines = [f"{report.nodeid}: {name} = {value}"
             for report in terminalreporter.stats.get("passed", [])
             for name, value in getattr(report, "user_properties", [])
             if name.startswith("fuzz_")]
    if lines:
        terminalreporter.write_sep("-", "fuzzing: cases run")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def smtp():
    """A real SMTP server on a free local port that keeps what it receives (the mail peer
    outside the system)."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def twilio():
    """A local server speaking Twilio's Messages API, seeded so its ids repeat run to run."""
    with FakeTwilio(seed=5) as fake:
        yield fake
