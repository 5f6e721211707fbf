"""Per-service RabbitMQ users: who may emit which event and call which RPC, from one source.

nameko RPC carries no authentication of its own: anyone who may publish to `nameko-rpc` with
routing key `loyalty.redeem` redeems points. So each service connects as its own broker user,
and its permissions are derived here from the code itself:

* the RPC methods a service serves and the events it handles: its nameko entrypoints
  (`services.registry.SERVICES`);
* the events it emits: the catalogue's `source` (exchange `<source>.events`, routing key =
  event type), plus the two contracts published on the gdpr exchange by others
  (`gdpr.erasure_completed` by every service that handles `gdpr.erasure_requested`;
  `consent.changed` by notifications for SMS STOP/START);
* the RPCs it calls: `CALLS` below (gdpr asks the data owners; notifications files a "forget
  me" with gdpr; every service asks its own `health`, which is what `python -m
  ops.healthcheck` does in its container; the gateway calls the public RPCs; the
  operator's CLI calls anything).

RabbitMQ enforces it with vhost permissions (configure/write/read regexes over exchange and
queue names) and topic permissions (regexes over routing keys on the topic exchanges
`nameko-rpc` and `<service>.events`: on publish the `write` regex, on queue.bind the `read`
one). Services never publish to the default exchange, which reaches every queue by name:
retries and parking go through `<service>.retry`.

`python -m ops.broker_permissions show|definitions|apply` (deploy/README.md).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import inspect
import json
import os
import re
import secrets
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ops.settings import every_setting
from services.registry import load_all
from services.customer_sync.door.work_queue import WORK_QUEUE_NAME
from shared.config import Config
from shared.events import contract, contracts_from
from shared.messaging.names import PARKED_QUEUE_PATTERN, parked_queue, retry_exchange
from shared.messaging.publisher import events_exchange

RPC_EXCHANGE = "nameko-rpc"
STANDALONE_PROXY = "standalone_rpc_proxy"  # nameko's name for ClusterRpcProxy's reply queues
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
GATEWAY = "gateway"
OPERATOR = "operator"
NOTHING = "^$"  # RabbitMQ reads an empty permission as "nothing"; topic regexes get this
# RPCs only the GDPR machinery uses; the gateway calls every other public method.
GATEWAY_EXCLUDED_METHODS = frozenset({"search_personal_data", "shop_erasures", "known_customers"})
# Services that check with customer_sync that a customer named by a request exists
# (shared/customers.py).
CUSTOMER_CHECKERS = ("gdpr", "loyalty", "notifications", "segmentation")
# Events a service publishes on another service's exchange (the catalogue names the exchange).
EXTRA_PUBLISHES = {"notifications": ("consent.changed",)}
# Work queues of a service's own processes, each with an exchange of the same name: the
# service declares both, publishes to the exchange and consumes the queue (customer_sync's door
# hands recorded webhook deliveries to its appliers, services/customer_sync/door/work_queue.py).
WORK_QUEUES = {"customer_sync": (WORK_QUEUE_NAME,)}
# Events whose catalogue source only names the exchange: the data owners publish them there,
# and the source service itself never does.
ONLY_ADDRESSED = frozenset({"gdpr.erasure_completed"})


@dataclass(frozen=True)
class Handler:
    source: str
    event_type: str
    method: str
    # A broadcast handler (shared.messaging.broadcast): every instance declares its own
    # exclusive queue, `<queue>-<uuid hex>`, and never retries or parks.
    broadcast: bool = False

    def queue(self, service: str) -> str:
        """nameko's queue name for a service-pool handler (a broadcast one's prefix)."""
        return f"evt-{self.source}-{self.event_type}--{service}.{self.method}"

    def queue_pattern(self, service: str) -> str:
        """A regex of every queue this handler uses: its own and its retry queues, or for a
        broadcast handler each instance's."""
        if self.broadcast:
            return rf"{re.escape(self.queue(service))}-[0-9a-f]{{32}}"
        return rf"{re.escape(self.queue(service))}(\.retry\.[0-9]+ms)?"


@dataclass(frozen=True)
class Role:
    """What one broker user does: serves RPC, handles and emits events, calls RPC."""

    user: str
    rpc_methods: tuple[str, ...] = ()
    handlers: tuple[Handler, ...] = ()
    publishes: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()  # routing keys `<service>.<method>`
    operator: bool = False

    def may_call(self, service: str, method: str) -> bool:
        return self.operator or f"{service}.{method}" in self.calls

    def may_publish(self, event_type: str) -> bool:
        return event_type in self.publishes


@dataclass(frozen=True)
class Grant:
    """A role as RabbitMQ permissions in one vhost."""

    user: str
    configure: str
    write: str
    read: str
    topics: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # exchange: (write, read)


# -- facts from the code ----------------------------------------------------------------------
def entrypoints(service_cls: type) -> tuple[tuple[str, ...], tuple[Handler, ...]]:
    """RPC method names and event handlers declared on a nameko service class."""
    from nameko.events import BROADCAST, EventHandler
    from nameko.rpc import Rpc

    methods, handlers = set(), set()
    for attr, member in inspect.getmembers(service_cls):
        for entrypoint in getattr(member, "nameko_entrypoints", ()):
            if isinstance(entrypoint, Rpc):
                methods.add(attr)
            elif isinstance(entrypoint, EventHandler):
                handlers.add(Handler(entrypoint.source_service, entrypoint.event_type, attr,
                                     broadcast=entrypoint.handler_type == BROADCAST))
    return tuple(sorted(methods)), tuple(sorted(handlers, key=lambda h: h.queue("")))


def published_events(service: str, handlers: Iterable[Handler]) -> tuple[str, ...]:
    types = {c.event_type for c in contracts_from(service)} - ONLY_ADDRESSED
    if any(h.event_type == "gdpr.erasure_requested" for h in handlers):
        types.add("gdpr.erasure_completed")  # the GDPR contract: erase, then confirm
    types.update(EXTRA_PUBLISHES.get(service, ()))
    return tuple(sorted(types))


def exchange_of(event_type: str) -> str:
    return events_exchange(contract(event_type).source)


def derive_roles(gdpr_services: Iterable[str], services: Mapping[str, type] | None = None
                 ) -> dict[str, Role]:
    """Every broker user's role. `services`: name -> nameko class (default: every registered one)."""
    if services is None:
        services = load_all()
    served: dict[str, tuple[str, ...]] = {}
    handled: dict[str, tuple[Handler, ...]] = {}
    for name, cls in services.items():
        served[name], handled[name] = entrypoints(cls)
    gdpr_services = tuple(gdpr_services)
    calls: dict[str, set[str]] = {name: {f"{name}.health"} & {f"{name}.{m}" for m in served[name]}
                                  for name in services}
    # gdpr: the data owners' exports and proofs; customer_sync resolves, rectifies and reports
    # the shop's own erasures (services/gdpr/desk.py).
    calls.setdefault("gdpr", set()).update(
        {f"{s}.{m}" for s in gdpr_services for m in ("export_customer", "search_personal_data")}
        | {f"customer_sync.{m}" for m in ("list_stores", "find_customer", "rectify_customer",
                                          "shop_erasures")})
    for checker in CUSTOMER_CHECKERS:
        calls.setdefault(checker, set()).add("customer_sync.known_customers")
    # notifications files its preference page's "forget me" with gdpr
    # (services/notifications/preference_door.py).
    calls.setdefault("notifications", set()).add("gdpr.submit_request")
    calls.setdefault(GATEWAY, set()).update(
        f"{s}.{m}" for s, methods in served.items() if s != GATEWAY for m in methods
        if m not in GATEWAY_EXCLUDED_METHODS)
    roles = {}
    for name in sorted(set(services) | {GATEWAY}):
        handlers = handled.get(name, ())
        roles[name] = Role(name, served.get(name, ()), handlers,
                           published_events(name, handlers), tuple(sorted(calls[name])))
    roles[OPERATOR] = Role(OPERATOR, operator=True)
    return roles


# -- roles as RabbitMQ permissions -------------------------------------------------------------
def _alternatives(patterns: Iterable[str]) -> str:
    unique = sorted(set(patterns))
    return f"^({'|'.join(unique)})$" if unique else NOTHING


def _names(names: Iterable[str]) -> list[str]:
    return [re.escape(n) for n in names]


def grant(role: Role) -> Grant:
    if role.operator:
        # The CLI: any RPC (no topic permission means every routing key), and the parked
        # queues (`companion dlq`; replay publishes to a handler's queue by name).
        reply = rf"rpc\.reply-{STANDALONE_PROXY}-{UUID}"
        return Grant(role.user,
                     configure=_alternatives([re.escape(RPC_EXCHANGE), reply]),
                     write=_alternatives([re.escape(RPC_EXCHANGE), reply, r"amq\.default"]),
                     read=_alternatives([re.escape(RPC_EXCHANGE), reply, PARKED_QUEUE_PATTERN]))
    name = role.user
    replies = rf"rpc\.reply-({re.escape(name)}|{STANDALONE_PROXY})-{UUID}"
    own_rpc = [re.escape(f"rpc-{name}")] if role.rpc_methods else []
    handler_queues = [h.queue_pattern(name) for h in role.handlers]
    retries = (_names([retry_exchange(name), parked_queue(name)])
               if any(not h.broadcast for h in role.handlers) else [])
    out_exchanges = sorted({exchange_of(t) for t in role.publishes})
    in_exchanges = sorted({f"{h.source}.events" for h in role.handlers})
    work = _names(WORK_QUEUES.get(name, ()))
    # configure: what it declares; write: exchanges it publishes to and queues it binds;
    # read: queues it consumes and exchanges it binds from.
    configure = _alternatives([re.escape(RPC_EXCHANGE), replies, *own_rpc, *handler_queues,
                               *retries, *work, *_names(out_exchanges), *_names(in_exchanges)])
    write = _alternatives([re.escape(RPC_EXCHANGE), replies, *own_rpc, *handler_queues,
                           *retries, *work, *_names(out_exchanges)])
    read = _alternatives([re.escape(RPC_EXCHANGE), replies, *own_rpc, *handler_queues,
                          *retries, *work, *_names(in_exchanges)])
    topics: dict[str, tuple[str, str]] = {}
    # Calls, and replies to callers (nameko replies on nameko-rpc to the caller's UUID key);
    # binds its own `rpc-<name>` (`<name>.*`) and reply queues (a UUID).
    rpc_write = [*_names(role.calls), *([UUID] if role.rpc_methods else [])]
    rpc_read = [UUID, *([re.escape(name) + r"\.\*"] if role.rpc_methods else [])]
    topics[RPC_EXCHANGE] = (_alternatives(rpc_write), _alternatives(rpc_read))
    for exchange in sorted(set(out_exchanges) | set(in_exchanges)):
        emits = [t for t in role.publishes if exchange_of(t) == exchange]
        binds = [h.event_type for h in role.handlers if f"{h.source}.events" == exchange]
        topics[exchange] = (_alternatives(_names(emits)), _alternatives(_names(binds)))
    return Grant(name, configure, write, read, topics)


# -- RabbitMQ definitions and the management API ----------------------------------------------
def password_env(user: str) -> str:
    return f"BROKER_PASSWORD_{user.upper()}"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(grants: Iterable[Grant], vhost: str, passwords: Mapping[str, str]) -> dict:
    """A definitions file (`load_definitions` in rabbitmq.conf, or `rabbitmqctl
    import_definitions`) with users, the vhost, permissions and topic permissions."""
    grants = list(grants)
    return {
        "vhosts": [{"name": vhost}],
        "users": [{"name": g.user, "password_hash": password_hash(passwords[g.user]),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                  for g in grants],
        "permissions": [{"user": g.user, "vhost": vhost, "configure": g.configure,
                         "write": g.write, "read": g.read} for g in grants],
        "topic_permissions": [{"user": g.user, "vhost": vhost, "exchange": exchange,
                               "write": write, "read": read}
                              for g in grants for exchange, (write, read) in g.topics.items()],
    }


class ManagementApi:
    """The few management API calls that create users and their permissions."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        import requests

        parts = urllib.parse.urlsplit(url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        self.session = requests.Session()
        self.session.auth = (urllib.parse.unquote(parts.username or "guest"),
                             urllib.parse.unquote(parts.password or "guest"))
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None, ok=(200, 201, 204)):
        response = self.session.request(method, f"{self.base}/{path}", json=body,
                                        timeout=self.timeout)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} /api/{path}: {response.status_code} {response.text}")
        return response

    def apply(self, grants: Iterable[Grant], vhost: str, passwords: Mapping[str, str]) -> None:
        q = lambda value: urllib.parse.quote(value, safe="")  # noqa: E731
        self._call("PUT", f"vhosts/{q(vhost)}")
        # The administrator itself may work in the vhost: the same job then declares every
        # consumer's queue there (ops.topology) before any service publishes.
        admin = self.session.auth[0]
        self._call("PUT", f"permissions/{q(vhost)}/{q(admin)}",
                   {"configure": ".*", "write": ".*", "read": ".*"})
        for g in grants:
            self._call("PUT", f"users/{q(g.user)}", {"password": passwords[g.user], "tags": ""})
            self._call("PUT", f"permissions/{q(vhost)}/{q(g.user)}",
                       {"configure": g.configure, "write": g.write, "read": g.read})
            # Replace, not merge: a topic permission left from an older role would widen it.
            self._call("DELETE", f"topic-permissions/{q(vhost)}/{q(g.user)}", ok=(204, 404))
            for exchange, (write, read) in g.topics.items():
                self._call("PUT", f"topic-permissions/{q(vhost)}/{q(g.user)}",
                           {"exchange": exchange, "write": write, "read": read})

    def remove_users(self, users: Iterable[str]) -> None:
        for user in users:
            self._call("DELETE", f"users/{urllib.parse.quote(user, safe='')}", ok=(204, 404))


def grants_for(gdpr_services: Iterable[str]) -> list[Grant]:
    return [grant(role) for role in derive_roles(gdpr_services).values()]


def _passwords(users: Iterable[str], env: Mapping[str, str], placeholders: bool) -> dict:
    passwords, missing = {}, []
    for user in users:
        value = env.get(password_env(user), "")
        if not value and placeholders:
            value = f"change-me-{user}"
        if not value:
            missing.append(password_env(user))
        passwords[user] = value
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (each user's password), or pass "
                         "--placeholders for a file to fill in later")
    return passwords


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.broker_permissions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["show", "definitions", "apply"],
                        help="show: every user's permissions as JSON; definitions: a RabbitMQ "
                             "definitions file on stdout; apply: create or update the users "
                             "through the management API")
    config = Config(settings=every_setting())
    parser.add_argument("--vhost", default=config.get("BROKER_VHOST"))
    parser.add_argument("--management-url", default=config.get("RABBITMQ_MANAGEMENT_URL"),
                        help="with an administrator's credentials: http://user:pw@host:15672")
    parser.add_argument("--placeholders", action="store_true",
                        help="definitions: `change-me-<user>` where a password is not set")
    args = parser.parse_args(argv)
    asked = config.get("GDPR_SERVICES")
    grants = grants_for(part.strip() for part in asked.split(",") if part.strip())
    if args.action == "show":
        json.dump([{**g.__dict__, "topics": dict(g.topics)} for g in grants], sys.stdout,
                  indent=2)
        print()
        return 0
    passwords = _passwords([g.user for g in grants], os.environ,
                           args.placeholders and args.action == "definitions")
    if args.action == "definitions":
        json.dump(definitions(grants, args.vhost, passwords), sys.stdout, indent=2)
        print()
        return 0
    ManagementApi(args.management_url).apply(grants, args.vhost, passwords)
    print(f"applied {len(grants)} users to vhost {args.vhost}: "
          f"{', '.join(g.user for g in grants)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
