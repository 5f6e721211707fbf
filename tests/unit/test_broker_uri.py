"""A failover AMQP_URI listing a cluster's nodes, read without a broker: the nodes, the vhost,
passwords kept out of what is shown and logged, the checks at start-up, how many connection
attempts reach every node, and the publisher's one reconnection after a lost node."""
from __future__ import annotations

import logging

import amqp
import pytest

from ops.cli import _without_password
from ops.settings import every_setting
from ops.system_health import Management, vhost_of
from shared.config import Config
from shared.messaging import broker_uri
from shared.messaging.broker_errors import BrokerTroubleLog, describe_broker_error
from shared.messaging.publisher import ConfirmingPublisher, OutgoingMessage, PublishError
from shared.messaging.queues import nameko_config
from shared.tls import amqp_ssl_options

CLUSTER = ("amqp://app:pw-one@rabbit-1:5672/shop;amqp://app:pw-two@rabbit-2:5673/shop;"
           "amqp://app:pw-three@rabbit-3/shop")


def test_the_nodes_of_a_failover_uri_in_order():
    assert broker_uri.node_uris(CLUSTER) == ["amqp://app:pw-one@rabbit-1:5672/shop",
                                             "amqp://app:pw-two@rabbit-2:5673/shop",
                                             "amqp://app:pw-three@rabbit-3/shop"]
    assert broker_uri.node_uris("amqp://h/v; ;amqp://g/v;") == ["amqp://h/v", "amqp://g/v"]
    assert broker_uri.node_uris("amqp://h/v") == ["amqp://h/v"]
    assert broker_uri.first_node(CLUSTER) == "amqp://app:pw-one@rabbit-1:5672/shop"


def test_the_vhost_of_a_failover_uri_is_its_nodes_one():
    assert vhost_of(CLUSTER) == "shop"
    assert vhost_of("amqp://h:1/%2Fshop;amqp://g:2/%2Fshop") == "/shop"
    assert vhost_of("amqp://h:1;amqp://g:2") == "/"


def test_no_password_of_any_node_is_shown():
    assert broker_uri.without_password(CLUSTER) == (
        "amqp://app:***@rabbit-1:5672/shop;amqp://app:***@rabbit-2:5673/shop;"
        "amqp://app:***@rabbit-3/shop")
    assert _without_password(CLUSTER) == broker_uri.without_password(CLUSTER)
    assert broker_uri.without_password("amqp://h:5672/v") == "amqp://h:5672/v"
    line = f"Error connecting to broker at {CLUSTER} (refused)"
    assert broker_uri.redact_passwords(line) == (
        f"Error connecting to broker at {broker_uri.without_password(CLUSTER)} (refused)")
    assert broker_uri.redact_passwords("plain text, no URL") == "plain text, no URL"


def test_a_refused_connection_names_every_node_and_no_password():
    said = describe_broker_error(ConnectionRefusedError(111, "Connection refused"), CLUSTER)
    assert said == ("connection refused at amqp://rabbit-1:5672/shop, amqp://rabbit-2:5673/shop, "
                    "amqp://rabbit-3:5672/shop: is RabbitMQ running there?")
    refused = describe_broker_error(amqp.exceptions.AccessRefused("ACCESS_REFUSED"), CLUSTER)
    assert "for user 'app'" in refused and "pw-" not in refused


def test_the_runner_log_hides_the_passwords_nameko_shows():
    record = logging.LogRecord("nameko.messaging", logging.WARNING, __file__, 1,
                               f"Error connecting to broker at {CLUSTER} (refused).", None, None)
    assert BrokerTroubleLog(CLUSTER).filter(record)
    assert "pw-" not in record.getMessage()
    assert "rabbit-2:5673/shop" in record.getMessage()


def test_every_node_must_name_the_same_user_vhost_and_scheme():
    broker_uri.check_nodes(CLUSTER)
    broker_uri.check_nodes("amqp://guest:guest@127.0.0.1:5672/")
    for other in ("amqp://app:pw@rabbit-2/staging", "amqp://ops:pw@rabbit-2/shop",
                  "amqps://app:pw@rabbit-2/shop"):
        with pytest.raises(ValueError, match="same") as refused:
            broker_uri.check_nodes(f"amqp://app:pw-one@rabbit-1/shop;{other}")
        assert "pw" not in str(refused.value).replace("***", "")
    with pytest.raises(ValueError, match="same vhost"):
        nameko_config(Config({"AMQP_URI": "amqp://h/a;amqp://g/b"}, every_setting()))


@pytest.mark.parametrize("listed", [
    "amqp://app:pw@rabbit-1/shop; amqp://app:pw@rabbit-2/shop",
    "amqp://app:pw@rabbit-1/shop;amqp://app:pw@rabbit-2/shop;",
    "amqp://app:pw@rabbit-1/shop;;amqp://app:pw@rabbit-2/shop",
    "amqp://app:pw@rabbit-1/shop ;amqp://app:pw@rabbit-2/shop",
])
def test_a_node_list_kombu_would_read_otherwise_is_refused(listed):
    """kombu splits on ';' as written: a space or an empty entry would make a node of no host
    whose vhost holds the next one's credentials."""
    with pytest.raises(ValueError, match="node [0-9] is empty or has spaces") as refused:
        broker_uri.check_nodes(listed)
    assert "pw" not in str(refused.value)


def test_connection_attempts_reach_every_node():
    assert broker_uri.connect_retries("amqp://h/v") == 0
    assert broker_uri.connect_retries("amqp://h/v", rounds=2) == 1  # as kombu's connect()
    assert broker_uri.connect_retries(CLUSTER) == 2
    assert broker_uri.connect_retries(CLUSTER, rounds=2) == 5


def test_management_credentials_and_tls_host_come_from_the_first_node():
    management = Management.from_config(Config({}, every_setting()), CLUSTER)
    assert (management.user, management.password) == ("app", "pw-one")
    tls = amqp_ssl_options(Config({"AMQP_URI": CLUSTER.replace("amqp://", "amqps://")},
                                  every_setting()))
    assert tls["server_hostname"] == "rabbit-1"


class _Channel:
    def __init__(self, fails: bool) -> None:
        self.is_open, self.fails, self.published = True, fails, 0


class _Publisher(ConfirmingPublisher):
    """A ConfirmingPublisher whose connections are stand-ins: `lost` says which of the
    channels it will open (in turn) are already dead."""

    def __init__(self, lost: list[bool]) -> None:
        super().__init__("amqp://a/v;amqp://b/v")
        self.lost, self.opened = list(lost), 0

    def _connect(self):
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.opened += 1
        self._channel = _Channel(self.lost.pop(0))
        return self._channel

    def _reset(self) -> None:
        self._channel = None

    def _publish_locked(self, channel, messages) -> None:
        if channel.fails:
            raise ConnectionResetError(104, "Connection reset by peer")
        channel.published += len(messages)


MESSAGE = OutgoingMessage("x", "k", {"n": 1})


def test_a_connection_lost_while_idle_is_replaced_once_and_the_batch_sent_there():
    publisher = _Publisher(lost=[False, False])
    publisher.publish_batch([MESSAGE])  # the first connection works
    publisher._channel.fails = True  # its node goes away while the publisher is idle
    publisher.publish_batch([MESSAGE])  # a second connection takes it
    assert publisher.opened == 2 and publisher._channel.published == 1
    publisher.publish_batch([MESSAGE])  # and keeps it
    assert publisher.opened == 2 and publisher._channel.published == 2


def test_a_new_connection_that_fails_is_not_tried_again():
    publisher = _Publisher(lost=[True, False])
    with pytest.raises(PublishError):
        publisher.publish_batch([MESSAGE])
    assert publisher.opened == 1
    publisher._channel = _Channel(fails=True)  # open before the call, then lost...
    publisher.lost = [True]  # ...and the replacement is lost too: the caller hears of it
    with pytest.raises(PublishError):
        publisher.publish_batch([MESSAGE])
