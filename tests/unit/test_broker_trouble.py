"""What the runner says and does while the broker is away, without a broker: the cause of a
failed connection in one line, the backoff between attempts, broker failures logged after the
start without tracebacks and without floods, and the addresses printed at start."""
from __future__ import annotations

import logging
import ssl

import pytest
from amqp.exceptions import AccessRefused, ConnectionForced, NotAllowed
from kombu import Connection
from kombu.exceptions import OperationalError

from services import registry
from services.runner import backoff_delays, served_addresses, wait_for_broker
from shared.config import Config
from shared.messaging.broker_errors import (BrokerTroubleLog, describe_broker_error,
                                            is_broker_failure)
from tests.support import free_port

URI = "amqp://ops:s3cret-pass@rabbit.internal:5672/shop"


def refused_by_kombu() -> BaseException:
    """A real refused connection, raised inside kombu and py-amqp as at run time."""
    connection = Connection(f"amqp://guest:guest@127.0.0.1:{free_port()}/", connect_timeout=2)
    try:
        connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
    except Exception as exc:
        return exc
    finally:
        connection.release()
    raise AssertionError("a closed port accepted a connection")


@pytest.mark.parametrize("exc, expected", [
    (ConnectionRefusedError(111, "Connection refused"),
     "connection refused at amqp://rabbit.internal:5672/shop: is RabbitMQ running there?"),
    (AccessRefused("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN.",
                   reply_code=403),
     "authentication failed for user 'ops' at amqp://rabbit.internal:5672/shop: check the user "
     "and password in AMQP_URI (ACCESS_REFUSED - Login was refused using authentication "
     "mechanism PLAIN.)"),
    (NotAllowed("NOT_ALLOWED - vhost shop not found", reply_code=530),
     "vhost 'shop' not found at amqp://rabbit.internal:5672/shop: create it "
     "(rabbitmqctl add_vhost) or fix the path of AMQP_URI"),
    (NotAllowed("NOT_ALLOWED - access to vhost 'shop' refused for user 'ops'", reply_code=530),
     "user 'ops' has no access to vhost 'shop' at amqp://rabbit.internal:5672/shop: "
     "rabbitmqctl set_permissions"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     "TLS failure at amqp://rabbit.internal:5672/shop: [SSL: WRONG_VERSION_NUMBER] wrong "
     "version number (AMQP_URI scheme, port and AMQP_SSL_* settings)"),
    (ConnectionForced("CONNECTION_FORCED - broker forced connection closure with reason "
                      "'shutdown'", reply_code=320),
     "the broker closed the connection at amqp://rabbit.internal:5672/shop (restarting, or "
     "closed by an operator): CONNECTION_FORCED - broker forced connection closure with "
     "reason 'shutdown'"),
    (ConnectionResetError(104, "Connection reset by peer"),
     "connection reset at amqp://rabbit.internal:5672/shop: the broker went away (restarting?)"),
    (RuntimeError("something\nunforeseen"),
     "cannot connect at amqp://rabbit.internal:5672/shop: RuntimeError: something unforeseen"),
])
def test_each_cause_is_named_in_one_line_without_the_password(exc, expected):
    described = describe_broker_error(exc, URI)
    assert described == expected
    assert "\n" not in described and "s3cret" not in described


def test_the_cause_is_found_inside_kombus_wrapping():
    try:
        try:
            raise NotAllowed("NOT_ALLOWED - vhost newcomr not found", reply_code=530)
        except NotAllowed as inner:
            raise OperationalError(str(inner)) from inner
    except OperationalError as wrapped:
        assert describe_broker_error(wrapped).startswith("vhost 'newcomr' not found:")


def test_a_real_refused_connection_is_named():
    exc = refused_by_kombu()
    assert describe_broker_error(exc).startswith("connection refused:")
    assert is_broker_failure(exc)


def test_backoff_doubles_from_one_second_to_thirty():
    delays = backoff_delays()
    assert [next(delays) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_waiting_for_the_broker_logs_each_attempt_once_and_backs_off(caplog):
    outcomes = [ConnectionRefusedError(111, "refused")] * 3 + [None]
    slept: list[float] = []
    caplog.set_level(logging.INFO, logger="services.runner")
    assert wait_for_broker(URI, None, stop_requested=lambda: False,
                           attempt=lambda: outcomes.pop(0), sleep=slept.append)
    lines = [r.getMessage() for r in caplog.records if r.name == "services.runner"]
    assert lines == [f"broker unavailable: connection refused at amqp://rabbit.internal:5672/"
                     f"shop: is RabbitMQ running there?; next attempt in {d} s"
                     for d in (1, 2, 4)]
    assert round(sum(slept), 6) == 1 + 2 + 4
    assert all(r.exc_info is None for r in caplog.records)


def test_a_stop_ends_the_wait_between_attempts():
    requested = {"stop": False}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        requested["stop"] = len(slept) == 3  # a Ctrl-C while waiting

    assert not wait_for_broker(URI, None, stop_requested=lambda: requested["stop"],
                               attempt=lambda: ConnectionRefusedError(111, "refused"),
                               sleep=sleep)
    assert len(slept) == 3  # it did not sleep out the remaining backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record_of(exc: BaseException, logger: str = "kombu.mixins",
              msg: str = "Connection to broker lost, trying to re-establish connection...",
              ) -> logging.LogRecord:
    return logging.LogRecord(logger, logging.WARNING, __file__, 1, msg, None,
                             (type(exc), exc, exc.__traceback__))


def test_broker_failures_after_the_start_become_one_line_and_repeats_are_held_back():
    clock = Clock()
    trouble = BrokerTroubleLog("amqp://guest:guest@127.0.0.1:1/", clock=clock)
    exc = refused_by_kombu()
    passed: list[str] = []

    def emit(at: float) -> None:
        clock.now = 1000.0 + at
        record = record_of(exc)
        if trouble.filter(record):
            assert record.exc_info is None and record.exc_text is None
            passed.append(record.getMessage())

    for tenth in range(0, 100):  # ten attempts a second, for ten seconds
        emit(tenth / 10)
    cause = ("Connection to broker lost, trying to re-establish connection...: connection "
             "refused at amqp://127.0.0.1:1/: is RabbitMQ running there?")
    # Let through at 0 s, then after 1, 2 and 4 s more: at 1, 3 and 7 s.
    assert passed == [cause, f"{cause} (9 more like it since the last)",
                      f"{cause} (19 more like it since the last)",
                      f"{cause} (39 more like it since the last)"]


def test_other_failures_keep_their_traceback():
    trouble = BrokerTroubleLog(clock=Clock())
    try:
        raise ConnectionRefusedError(111, "refused by the SMTP server")
    except ConnectionRefusedError as exc:
        record = record_of(exc, logger="services.notifications", msg="sending failed")
    assert not is_broker_failure(record.exc_info[1])
    assert trouble.filter(record)
    assert record.exc_info is not None and record.getMessage() == "sending failed"
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "no exception", None, None)
    assert trouble.filter(plain) and plain.getMessage() == "no exception"


def test_startup_names_every_address_it_serves():
    config = Config({}, registry.settings(), WEB_SERVER_ADDRESS="0.0.0.0:8000",
                    GATEWAY_WEB_SERVER_ADDRESS="127.0.0.1:8080",
                    NOTIFICATIONS_WEB_SERVER_ADDRESS="0.0.0.0:8001")
    names = ["customer_sync", "segmentation", "loyalty", "notifications", "gdpr", "gateway"]
    assert served_addresses(names, config, 9102) == [
        ("webhooks", "http://localhost:8000/webhooks/woocommerce/<store_id>"),
        ("API", "http://127.0.0.1:8080/api/v1/"),
        ("console", "http://127.0.0.1:8080/console/"),
        ("Twilio callbacks",
         "http://localhost:8001/twilio/status http://localhost:8001/twilio/inbound"),
        ("email reports", "http://localhost:8001/email/reports"),
        ("metrics", "http://localhost:9102/metrics"),
    ]
    assert served_addresses(["loyalty"], config, None) == []
    assert served_addresses(["gateway"], config, None) == [
        ("API", "http://127.0.0.1:8080/api/v1/"), ("console", "http://127.0.0.1:8080/console/")]


def test_a_stop_during_the_attempt_that_succeeds_starts_nothing():
    requested = {"stop": False}

    def attempt() -> None:
        requested["stop"] = True  # Ctrl-C while connecting; then the broker answers
        return None

    assert not wait_for_broker(URI, None, stop_requested=lambda: requested["stop"],
                               attempt=attempt, sleep=lambda seconds: None)
