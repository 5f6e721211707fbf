"""Why the broker could not be reached, said in one line an operator can act on.

A failed connection surfaces as whatever the socket, TLS or AMQP layer raised (a refused
socket, a 403 from the broker, a 530 naming the vhost), sometimes wrapped by kombu. The runner
and the operator CLI both name the cause from here, so that they say the same thing for the
same failure.
"""
from __future__ import annotations

import re
import socket
import ssl
from urllib.parse import unquote, urlsplit

from amqp.exceptions import AccessRefused, NotAllowed

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
    """The AMQP URI without its user and password: where a connection was tried."""
    parts = urlsplit(amqp_uri)
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
        user = urlsplit(amqp_uri).username if amqp_uri else None
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
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or text
        return f"TLS failure{where}: {reason} (AMQP_URI scheme, port and AMQP_SSL_* settings)"
    if isinstance(cause, socket.gaierror):
        return f"broker host not found{where}: {cause.strerror or text}"
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return f"timed out connecting{where}"
    return f"cannot connect{where}: {type(cause).__name__}: {text or '(no message)'}"
