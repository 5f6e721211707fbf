"""Why the broker could not be reached, said in one line an operator can act on.

A failed connection surfaces as whatever the socket, TLS or AMQP layer raised (a refused
socket, a 403 from the broker, a 530 naming the vhost), sometimes wrapped by kombu. The runner
and the operator CLI both name the cause from here, so that they say the same thing for the
same failure.
"""
from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from typing import Callable
from urllib.parse import unquote, urlsplit

from amqp.exceptions import (AccessRefused, ConnectionForced, ConsumerCancelled, NotAllowed,
                             RecoverableConnectionError)
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError

from shared.messaging.broker_uri import first_node, node_uris, redact_passwords

_VHOST_MISSING = re.compile(r"vhost (.+?) not found")
_VHOST_REFUSED = re.compile(r"access to vhost '?(.+?)'? refused for user '?(.+?)'?$")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (kombu re-raises socket errors as its own)."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def broker_address(amqp_uri: str) -> str:
    """The AMQP URI without its user and password: where a connection was tried (each node,
    comma-separated, for a cluster's failover URI)."""
    return ", ".join(_node_address(node) for node in node_uris(amqp_uri))


def _node_address(node_uri: str) -> str:
    parts = urlsplit(node_uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (5671 if parts.scheme == "amqps" else 5672)
    return f"{parts.scheme or 'amqp'}://{parts.hostname or 'localhost'}:{port}{parts.path or '/'}"


def describe_broker_error(exc: BaseException, amqp_uri: str | None = None) -> str:
    """One line naming why connecting to the broker failed: connection refused, authentication
    failed, vhost missing, TLS failure, else the exception's type and text. `amqp_uri` (its
    password is never shown) adds where it tried."""
    cause = root_cause(exc)
    where = f" at {broker_address(amqp_uri)}" if amqp_uri else ""
    text = " ".join(str(cause).split())  # one line, whatever the library put in it
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused{where}: is RabbitMQ running there?"
    if isinstance(cause, AccessRefused):
        user = urlsplit(first_node(amqp_uri)).username if amqp_uri else None
        who = f" for user {unquote(user)!r}" if user else ""
        return (f"authentication failed{who}{where}: check the user and password in AMQP_URI "
                f"({cause.reply_text or text})")
    if isinstance(cause, NotAllowed):
        reply = cause.reply_text or text
        missing = _VHOST_MISSING.search(reply)
        if missing:
            return (f"vhost {missing.group(1)!r} not found{where}: create it "
                    f"(rabbitmqctl add_vhost) or fix the path of AMQP_URI")
        refused = _VHOST_REFUSED.search(reply)
        if refused:
            return (f"user {refused.group(2)!r} has no access to vhost {refused.group(1)!r}"
                    f"{where}: rabbitmqctl set_permissions")
        return f"broker refused the connection{where}: {reply}"
    if isinstance(cause, ConnectionForced):
        return (f"the broker closed the connection{where} (restarting, or closed by an "
                f"operator): {cause.reply_text or text}")
    if isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return f"connection reset{where}: the broker went away (restarting?)"
    if isinstance(cause, ConsumerCancelled):
        return f"the broker cancelled a consumer{where}: its queue or vhost was deleted"
    if isinstance(cause, ssl.SSLError):
        reason = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)  # where in CPython: no help
        return f"TLS failure{where}: {reason} (AMQP_URI scheme, port and AMQP_SSL_* settings)"
    if isinstance(cause, socket.gaierror):
        return f"broker host not found{where}: {cause.strerror or text}"
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return f"timed out connecting{where}"
    return f"cannot connect{where}: {type(cause).__name__}: {text or '(no message)'}"


# What a lost or refused broker connection raises; counted as one only when it was raised
# inside kombu or py-amqp, so that a refused SMTP or MongoDB connection keeps its traceback.
_CONNECTION_FAILURES = (OSError, AmqpConnectionError, AccessRefused, RecoverableConnectionError,
                        OperationalError)
_BROKER_LIBRARIES = ("kombu.", "amqp.")


def is_broker_failure(exc: BaseException) -> bool:
    """Whether `exc` is the broker refusing or dropping a connection (an expected, retried
    failure), judged by its type and by kombu or py-amqp having raised it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECTION_FAILURES) and _raised_in_broker_library(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _raised_in_broker_library(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(_BROKER_LIBRARIES):
            return True
        tb = tb.tb_next
    return False


class BrokerTroubleLog(logging.Filter):
    """A log handler's filter for the time the broker is away after the services started:
    nameko's and kombu's consumers, timers calling other services and publishers each log
    every failed attempt with a whole traceback. A record whose exception is a broker failure
    keeps its message plus the cause in one line, and the same line from the same logger is
    let through again only after a wait that doubles (`first` to `most` seconds), with how many
    were left out. Every other record passes untouched, but for the passwords of AMQP URLs in
    its message: nameko names the whole AMQP_URI when it reconnects and hides the first
    node's password only, so a cluster's other nodes would show theirs."""

    def __init__(self, amqp_uri: str | None = None, first: float = 1.0, most: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.amqp_uri = amqp_uri
        self.first, self.most, self.clock = first, most, clock
        # (logger, template, cause) -> [next time it may pass, current wait, how many left out]
        self._repeats: dict[tuple[str, str, str], list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "://" in record.msg:
            record.msg = redact_passwords(record.msg)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_broker_failure(exc):
            return True
        cause = describe_broker_error(exc, self.amqp_uri)
        line = f"{record.getMessage()}: {cause}"
        key = (record.name, str(record.msg), cause)  # the template: a worker's id differs
        now = self.clock()
        state = self._repeats.get(key)
        if state is not None and now < state[0]:
            state[2] += 1
            return False
        wait = self.first if state is None or now > state[0] + self.most else min(
            state[1] * 2, self.most)
        left_out = state[2] if state else 0
        self._repeats[key] = [now + wait, wait, 0]
        if left_out:
            line += f" ({left_out} more like it since the last)"
        record.msg, record.args = line, None
        record.exc_info, record.exc_text = None, None
        return True
