"""The whole deployment's health in one answer, for `companion health` (and any script).

Three sources, each read the way that stays truthful when part of the system is down:

- every service's readiness: RPC `health()` to all of them at once, each with a short timeout,
  so one service that does not answer costs one timeout and is reported "not answering";
- queue depths and consumers: the RabbitMQ management API (GET /api/queues/<vhost>). Its
  figures are samples the broker refreshes every few seconds;
- parked messages and each service's instances (consumers of `rpc-<service>`): counted
  exactly, over AMQP (passive declares), so a message parked a moment ago is never missed, and
  without the management plugin too.

Healthy means every service answered ready, nothing is parked, no webhook delivery is
quarantined (a service's `health()` answers `quarantined` per store), no service names a
problem of its own (its `health()` answers `problems`: notifications names a channel that keeps
failing) and the broker's queues could be read.
"""
from __future__ import annotations

import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Iterable

import requests

from shared.config import Config
from shared.messaging import broker_uri
from shared.messaging.names import parked_queue, parked_service

REPLY_QUEUE_PREFIX = "rpc.reply-"
# A service's own problem lines are shown as they come, at most this many and this long.
MAX_SERVICE_PROBLEMS, MAX_PROBLEM_LENGTH = 10, 500


@dataclass(frozen=True)
class Management:
    """Where the RabbitMQ management API is and how to log in (never printed)."""

    url: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_config(cls, config: Config, amqp_uri: str) -> "Management":
        """RABBITMQ_MANAGEMENT_URL; user and password from RABBITMQ_MANAGEMENT_USER/PASSWORD,
        else from the URL's own user part, else the AMQP URI's (the usual single account)."""
        parsed = urllib.parse.urlsplit(config.get("RABBITMQ_MANAGEMENT_URL"))
        amqp = urllib.parse.urlsplit(broker_uri.first_node(amqp_uri))
        user = (config.get("RABBITMQ_MANAGEMENT_USER") or parsed.username or amqp.username
                or "guest")
        password = (config.get("RABBITMQ_MANAGEMENT_PASSWORD") or parsed.password
                    or amqp.password or "guest")
        host = parsed.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        if parsed.port:
            netloc += f":{parsed.port}"
        base = urllib.parse.urlunsplit((parsed.scheme or "http", netloc,
                                        parsed.path.rstrip("/"), "", ""))
        return cls(base, urllib.parse.unquote(user), urllib.parse.unquote(password))


def vhost_of(amqp_uri: str) -> str:
    """The virtual host an AMQP URI names ("/" when the path is empty, as kombu reads it);
    for a cluster's failover URI, that of its nodes."""
    return broker_uri.vhost_of(amqp_uri)


def broker_queues(management: Management, vhost: str, timeout: float = 5.0) -> list[dict]:
    """Every queue of the vhost with its depth and consumers, by name."""
    response = requests.get(
        f"{management.url}/api/queues/{urllib.parse.quote(vhost, safe='')}",
        params={"columns": "name,messages,messages_ready,messages_unacknowledged,consumers"},
        auth=(management.user, management.password), timeout=timeout)
    if response.status_code == 401:
        raise PermissionError("the management API refused the credentials "
                              "(set RABBITMQ_MANAGEMENT_USER and RABBITMQ_MANAGEMENT_PASSWORD)")
    response.raise_for_status()
    return sorted(({"name": q.get("name"), "messages": q.get("messages", 0) or 0,
                    "messages_ready": q.get("messages_ready", 0) or 0,
                    "messages_unacknowledged": q.get("messages_unacknowledged", 0) or 0,
                    "consumers": q.get("consumers", 0) or 0}
                   for q in response.json()), key=lambda q: q["name"])


def queue_counts(amqp_uri: str, queues: Iterable[str], timeout: float = 5.0
                 ) -> dict[str, tuple[int, int] | None]:
    """(ready messages, consumers) of each queue, exactly and now, over AMQP (a passive
    declare); None for a queue that does not exist."""
    from amqp.exceptions import NotFound as QueueNotFound
    from kombu import Connection

    counts: dict[str, tuple[int, int] | None] = {}
    with Connection(amqp_uri, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=broker_uri.connect_retries(amqp_uri, rounds=2),
                               timeout=timeout)
        for queue in queues:
            channel = conn.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue, passive=True)
                counts[queue] = (int(messages), int(consumers))
            except QueueNotFound:  # the broker closes the channel too
                counts[queue] = None
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    return counts


def parked_counts(amqp_uri: str, services: Iterable[str], timeout: float = 5.0) -> dict[str, int]:
    """Messages in each service's parked queue, exactly (0 when the queue does not exist)."""
    names = list(services)
    counts = queue_counts(amqp_uri, [parked_queue(n) for n in names], timeout)
    return {n: (counts[parked_queue(n)] or (0, 0))[0] for n in names}


def _ask_one(amqp_uri: str, service: str, timeout: float) -> dict:
    from nameko.exceptions import RpcTimeout, UnknownService
    from nameko.standalone.rpc import ClusterRpcProxy

    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=timeout) as rpc:
            answer = getattr(rpc, service).health()
    except RpcTimeout:
        return {"state": "not answering", "error": f"no answer within {timeout:g}s"}
    except UnknownService:
        return {"state": "not answering", "error": "no such service on this broker"}
    except Exception as exc:  # whatever went wrong over there, it is not ready
        return {"state": "not answering", "error": f"{type(exc).__name__}: {exc}"}
    ready = bool(isinstance(answer, dict) and answer.get("ready"))
    quarantined = answer.get("quarantined") if isinstance(answer, dict) else None
    problems = answer.get("problems") if isinstance(answer, dict) else None
    return {"state": "ready" if ready else "not ready",
            "checks": answer.get("checks") if isinstance(answer, dict) else None,
            "quarantined": quarantined if isinstance(quarantined, dict) else {},
            "problems": [str(p)[:MAX_PROBLEM_LENGTH] for p in problems[:MAX_SERVICE_PROBLEMS]]
            if isinstance(problems, list) else [],
            "channels": answer.get("channels") if isinstance(answer, dict) else None}


def ask_services(amqp_uri: str, services: Iterable[str], timeout: float) -> dict[str, dict]:
    """Every service's `health()` at once; a silent one is "not answering", never an error."""
    names = list(services)
    answers: dict[str, dict] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, len(names)))
    try:
        futures = {name: pool.submit(_ask_one, amqp_uri, name, timeout) for name in names}
        for name, future in futures.items():
            try:
                answers[name] = future.result(timeout=timeout + 10)
            except FutureTimeout:
                answers[name] = {"state": "not answering", "error": "no answer (stuck)"}
    finally:
        pool.shutdown(wait=False)
    return answers


def system_health(amqp_uri: str, services: Iterable[str], management: Management,
                  timeout: float = 5.0) -> dict:
    """Readiness per service, the vhost's queues and parked counts, and `healthy` over all.
    `instances` is the number of consumers of the service's RPC queue, read before it is asked
    (it is asked after, so a stopped one has 0 instances and is "not answering")."""
    names = list(services)
    vhost = vhost_of(amqp_uri)
    problems: list[str] = []
    broker: dict = {"management_url": management.url, "vhost": vhost, "error": None}
    try:
        queues: list[dict] | None = broker_queues(management, vhost, timeout)
    except (requests.RequestException, PermissionError, ValueError) as exc:
        queues = None
        broker["error"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"broker queues could not be read from {management.url}: {exc}")
    extra_parked = sorted({parked_service(q["name"]) for q in queues or []
                           if parked_service(q["name"])} - set(names))
    parked = parked_counts(amqp_uri, [*names, *extra_parked], timeout)
    rpc_queues = queue_counts(amqp_uri, [f"rpc-{name}" for name in names], timeout)
    answers = ask_services(amqp_uri, names, timeout)
    if queues is not None:  # RPC clients' own reply queues (this one's too) are noise here
        queues = [q for q in queues if not q["name"].startswith(REPLY_QUEUE_PREFIX)]
    rows = []
    for name in names:
        answer = answers[name]
        row = {"service": name, "state": answer["state"], "checks": answer.get("checks"),
               "error": answer.get("error"),
               "instances": (rpc_queues[f"rpc-{name}"] or (0, 0))[1],
               "parked": parked.get(name, 0),
               "quarantined": sum((answer.get("quarantined") or {}).values())}
        if answer.get("channels") is not None:
            row["channels"] = answer["channels"]
        rows.append(row)
        if row["state"] != "ready":
            why = row["error"] or ", ".join(k for k, ok in (row["checks"] or {}).items() if not ok)
            problems.append(f"{name}: {row['state']}" + (f" ({why})" if why else ""))
    for name, count in parked.items():
        if count:
            problems.append(f"{name}: {count} parked message(s) "
                            f"(`companion dlq list --service {name}`)")
    for name in names:  # what a service says is wrong with it (a channel that keeps failing)
        problems += [f"{name}: {line}" for line in answers[name].get("problems") or []]
    for name in names:  # webhook deliveries kept after failing to apply (customer_sync)
        for store, count in sorted((answers[name].get("quarantined") or {}).items()):
            if count:
                problems.append(f"{name}: {count} webhook deliveries of store {store} "
                                f"quarantined (`companion quarantine list --store {store}`)")
    return {"healthy": not problems, "services": rows, "parked": parked, "queues": queues,
            "broker": broker, "problems": problems}
