"""TLS settings become the client configuration the broker and MongoDB clients take; bad
combinations are refused with a message naming the setting. Queue-type arguments, and
consumers settling messages on a lost connection."""
from __future__ import annotations

import ssl

import pytest
from kombu import Queue

from shared.config import Config
from nameko.messaging import QueueConsumer

from shared.messaging.queues import (QUORUM_DELIVERY_LIMIT, nameko_config, queue_arguments,
                                     queue_type, tolerate_lost_connections,
                                     transient_reply_queue, type_extension_queue, typed_queue)
from shared.mongo import service_database
from shared.tls import amqp_ssl_options, mongo_tls_options


@pytest.fixture
def pem(tmp_path):
    def make(name: str) -> str:
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        return str(path)
    return make


def test_plain_amqp_has_no_tls_and_nameko_gets_none():
    config = Config({}, AMQP_URI="amqp://u:p@rabbit:5672/companion")
    assert amqp_ssl_options(config) is None
    assert nameko_config(config)["AMQP_SSL"] is None


def test_amqps_verifies_the_broker_and_its_host_name_with_the_given_files(pem):
    ca, cert, key = pem("ca.pem"), pem("client.pem"), pem("client.key")
    config = Config({}, AMQP_URI="amqps://svc:pw@rabbit-1.internal:5671/companion",
                    AMQP_SSL_CA_FILE=ca, AMQP_SSL_CERT_FILE=cert, AMQP_SSL_KEY_FILE=key)
    expected = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "rabbit-1.internal",
                "ca_certs": ca, "certfile": cert, "keyfile": key}
    assert amqp_ssl_options(config) == expected
    assert nameko_config(config)["AMQP_SSL"] == expected


def test_amqps_without_files_still_verifies_against_the_system_cas():
    options = amqp_ssl_options(Config({}, AMQP_URI="amqps://svc:pw@broker.example:5671/"))
    assert options == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "broker.example"}


@pytest.mark.parametrize("settings, message", [
    ({"AMQP_URI": "amqp://rabbit/", "AMQP_SSL_CA_FILE": "ca"}, "not amqps://"),
    ({"AMQP_URI": "amqps://rabbit/", "AMQP_SSL_CERT_FILE": "c"}, "go together"),
    ({"AMQP_URI": "amqps://rabbit/", "AMQP_SSL_KEY_FILE": "k"}, "go together"),
    ({"AMQP_URI": "amqps://rabbit/", "AMQP_SSL_CA_FILE": "/nonexistent/ca.pem"},
     "AMQP_SSL_CA_FILE names '/nonexistent/ca.pem'"),
])
def test_impossible_broker_tls_combinations_are_refused_at_start(settings, message):
    with pytest.raises(ValueError, match=message):
        amqp_ssl_options(Config({}, **settings))
    with pytest.raises(ValueError, match=message):
        nameko_config(Config({}, **settings))


def test_the_runner_exits_with_a_configuration_error_not_a_traceback(monkeypatch, capsys):
    from services.runner import main

    monkeypatch.setenv("AMQP_URI", "amqp://rabbit/")
    monkeypatch.setenv("AMQP_SSL_CA_FILE", "/etc/ca.pem")
    assert main(["segmentation"]) == 2


def test_the_cli_refuses_tls_files_with_a_plain_uri(monkeypatch, capsys):
    from ops.cli import main

    monkeypatch.setenv("AMQP_SSL_CA_FILE", "/etc/ca.pem")
    with pytest.raises(SystemExit) as exited:
        main(["--amqp-uri", "amqp://rabbit/", "dlq", "list", "--service", "loyalty"])
    assert exited.value.code == 2
    assert "not amqps://" in capsys.readouterr().err


def test_mongo_tls_files_become_mongoclient_options(pem):
    ca, both = pem("mongo-ca.pem"), pem("mongo-client.pem")
    config = Config({}, MONGO_URI="mongodb://m1,m2,m3/?replicaSet=rs0",
                    MONGO_TLS_CA_FILE=ca, MONGO_TLS_CERT_KEY_FILE=both)
    assert mongo_tls_options(config) == {"tls": True, "tlsCAFile": ca,
                                         "tlsCertificateKeyFile": both}
    assert mongo_tls_options(Config({}, MONGO_URI="mongodb://m1/?tls=true")) == {}


@pytest.fixture
def real_ca(tmp_path):
    """A self-signed certificate made with the openssl command (pymongo loads it)."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test-ca", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert)


def test_mongo_client_is_built_with_those_options(real_ca):
    """The options reach pymongo's client (no server is needed to build one)."""
    from shared.mongo import connect

    ca = real_ca
    client = connect("mongodb://127.0.0.1:1/?replicaSet=rs0",
                     **mongo_tls_options(Config({}, MONGO_URI="mongodb://x/",
                                                MONGO_TLS_CA_FILE=ca)))
    try:
        context = client.options.pool_options._ssl_context
        assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
        assert client.options.pool_options.tls_allow_invalid_hostnames is False
        assert client.options.replica_set_name == "rs0"
    finally:
        client.close()


@pytest.mark.parametrize("settings, message", [
    ({"MONGO_URI": "mongodb://m1/?tls=false", "MONGO_TLS_CA_FILE": "ca"}, "tls=false"),
    ({"MONGO_URI": "mongodb://m1/", "MONGO_TLS_CERT_KEY_FILE": "/nope.pem"}, "/nope.pem"),
])
def test_impossible_mongo_tls_combinations_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        mongo_tls_options(Config({}, **settings))


def test_the_in_memory_database_refuses_tls_files_rather_than_ignoring_them(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read")
    with pytest.raises(ValueError, match="mongomock"):
        service_database(Config({}, MONGO_URI="mongomock://tls-refused", MONGO_TLS_CA_FILE=str(ca)),
                         "customer_sync")


def test_queue_type_is_checked_and_classic_adds_nothing():
    assert queue_type(Config({})) == "classic"
    with pytest.raises(ValueError, match="AMQP_QUEUE_TYPE"):
        queue_type(Config({}, AMQP_QUEUE_TYPE="stream"))
    with pytest.raises(ValueError, match="AMQP_QUEUE_TYPE"):
        nameko_config(Config({}, AMQP_QUEUE_TYPE="mirrored"))
    assert queue_arguments("classic", {"x-message-ttl": 5}) == {"x-message-ttl": 5}
    assert queue_arguments("quorum", {"x-message-ttl": 5}) == {
        "x-message-ttl": 5, "x-queue-type": "quorum", "x-delivery-limit": QUORUM_DELIVERY_LIMIT}


def test_only_durable_shared_queues_can_become_quorum():
    shared = Queue("rpc-loyalty", durable=True)
    typed_queue(shared, "quorum")
    assert shared.queue_arguments["x-queue-type"] == "quorum"
    with pytest.raises(ValueError, match="exclusive"):
        typed_queue(Queue("rpc.reply-x", durable=True, exclusive=True), "quorum")


def test_a_consume_queue_shared_by_containers_is_typed_per_container():
    """`@consume` makes its Queue once for the class, and every container's Consumer holds
    that one object: a quorum container must not leave quorum arguments behind for a classic
    one in the same process (it would be refused by the broker, PRECONDITION_FAILED, and its
    consumer would never start)."""
    from nameko.messaging import Consumer

    shared = Queue("customer_sync.inbox", durable=True)
    quorum_one, classic_one = Consumer(queue=shared), Consumer(queue=shared)
    type_extension_queue(quorum_one, "quorum")
    type_extension_queue(classic_one, "classic")
    assert quorum_one.queue.queue_arguments["x-queue-type"] == "quorum"
    assert "x-queue-type" not in (classic_one.queue.queue_arguments or {})
    assert "x-queue-type" not in (shared.queue_arguments or {})
    assert quorum_one.queue.name == classic_one.queue.name == "customer_sync.inbox"


class _SettlingConsumer(QueueConsumer):
    """A QueueConsumer (never bound or started) whose settling fails as told."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error, self.calls = error, 0

    def ack_message(self, message) -> None:
        self.calls += 1
        raise self.error

    def requeue_message(self, message) -> None:
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("lost", [BrokenPipeError(32, "Broken pipe"),
                                  ConnectionResetError(104, "Connection reset by peer")])
def test_settling_on_a_lost_connection_is_passed_over(lost):
    consumer = _SettlingConsumer(lost)
    tolerate_lost_connections(consumer)
    tolerate_lost_connections(consumer)  # once only, however often a container starts
    consumer.ack_message(object())
    consumer.requeue_message(object())
    assert consumer.calls == 2


def test_other_settling_errors_still_raise():
    consumer = _SettlingConsumer(ValueError("a bug, not the broker"))
    tolerate_lost_connections(consumer)
    with pytest.raises(ValueError):
        consumer.ack_message(object())


def test_reply_queues_are_transient_so_a_dead_node_does_not_keep_them():
    reply = Queue("rpc.reply-loyalty-1", queue_arguments={"x-expires": 300000})
    assert reply.durable  # as nameko declares it
    transient_reply_queue(reply)
    assert not reply.durable and not reply.exclusive and not reply.auto_delete
    assert reply.queue_arguments == {"x-expires": 300000}
