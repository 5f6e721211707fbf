"""AMQP_URI naming one broker, or the nodes of a RabbitMQ cluster.

kombu, and so nameko, takes several URLs separated by `;` and connects to the first node that
answers, moving on to the next when a connection fails:
`amqp://user:pw@10.0.0.1:5672/companion;amqp://user:pw@10.0.0.2:5672/companion`. Whatever
else reads AMQP_URI (a log line, the vhost, the management API's credentials, how many
connection attempts reach every node) goes through here, so that such a list is never read as
one URL whose path holds the other nodes and their passwords.
"""
from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

NODE_SEPARATOR = ";"

# user:password@ inside any amqp(s) URL of a text, up to the next separator or space.
_PASSWORD_IN_URL = re.compile(r"(amqps?://[^:/@;\s]*:)[^@;\s]*@")


def node_uris(amqp_uri: str) -> list[str]:
    """The URL of each node, in the order kombu tries them (empty entries dropped)."""
    nodes = [part.strip() for part in amqp_uri.split(NODE_SEPARATOR)]
    return [node for node in nodes if node] or [amqp_uri.strip()]


def first_node(amqp_uri: str) -> str:
    """The node kombu tries first: its host names the TLS certificate, its user part the
    account."""
    return node_uris(amqp_uri)[0]


def vhost_of(amqp_uri: str) -> str:
    """The virtual host the URI names ("/" when the path is empty, as kombu reads it)."""
    path = urlsplit(first_node(amqp_uri)).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def check_nodes(amqp_uri: str) -> None:
    """ValueError unless every node of a failover URI has the same scheme, user and vhost:
    a service reconnecting to another node must find the same queues with the same rights.
    Also unless the list is as kombu reads it: kombu splits on `;` without trimming, so a space
    around a node or an empty entry would give it a node without a host (and the credentials
    in its vhost) that the checks on the trimmed list would not see."""
    if NODE_SEPARATOR in amqp_uri:
        for position, raw in enumerate(amqp_uri.split(NODE_SEPARATOR), start=1):
            if not raw or raw != raw.strip():
                raise ValueError(
                    f"AMQP_URI lists nodes separated by ';': node {position} is empty or has "
                    f"spaces around it; write them as amqp://...;amqp://... with nothing between")
    nodes = node_uris(amqp_uri)
    first = urlsplit(nodes[0])
    for node in nodes[1:]:
        parts = urlsplit(node)
        for what, mine, theirs in (("scheme", first.scheme, parts.scheme),
                                   ("user", first.username, parts.username),
                                   ("vhost", vhost_of(nodes[0]), vhost_of(node))):
            if mine != theirs:
                raise ValueError(
                    f"AMQP_URI lists nodes of one cluster; each must name the same {what}, but "
                    f"{without_password(nodes[0])} and {without_password(node)} differ")


def without_password(amqp_uri: str) -> str:
    """The URI (every node of it) with each password replaced by `***`."""
    shown = []
    for node in node_uris(amqp_uri):
        parts = urlsplit(node)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[-1]
            node = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
        shown.append(node)
    return NODE_SEPARATOR.join(shown)


def redact_passwords(text: str) -> str:
    """`text` with the password of every AMQP URL in it replaced by `***` (nameko's own log
    lines hide the first node's password only)."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def connect_retries(amqp_uri: str, rounds: int = 1) -> int:
    """kombu's `max_retries` for `ensure_connection` that tries every node `rounds` times
    (kombu counts one retry per node tried, and sleeps only after a whole round)."""
    return max(0, max(1, rounds) * len(node_uris(amqp_uri)) - 1)
