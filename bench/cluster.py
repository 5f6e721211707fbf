"""`python -m bench.cluster`: the services' messaging path on a three-node RabbitMQ cluster with
quorum queues, beside a single node with classic queues.

    python -m bench.cluster [--events 3000] [--rate 300] [--batch 50] [--json PATH]

Both brokers are private (tests/private_broker.py, tests/private_cluster.py: child processes
with ports and directories of their own), never the machine's shared one, and started one after
the other. On each, a nameko service in this process consumes `customer.deleted` with a
reliable event handler and a batch handler (neither claims events, so the broker is measured,
not the database), with AMQP_QUEUE_TYPE classic on the single node and quorum on the cluster
(whose AMQP_URI lists the three nodes). The project's ConfirmingPublisher, as the outbox relay
uses it, publishes --events events in batches of --batch at --rate events/s.

Figures per broker: the publisher's confirmed events/s; per handler, events/s applied (from the
first send to the last event applied) and lag (event applied - its batch sent: publish,
confirm, route, replicate, deliver) p50/p95/p99/max. bench/results/cluster.json keeps them with
the machine they ran on.

Exit status 0 when both runs completed; 1 when one failed.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.common import log, machine, source_state, write_results  # noqa: E402
from bench.system import achieved_rate, lag_summary  # noqa: E402
from shared.events import build_event, contract  # noqa: E402
from shared.messaging.batches import batch_event_handler  # noqa: E402
from shared.messaging.handlers import event_handler  # noqa: E402
from shared.messaging.publisher import (ConfirmingPublisher, OutgoingMessage,  # noqa: E402
                                        events_exchange)

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench" / "results" / "cluster.json"
HANDLERS = ("one_by_one", "in_batches")
WAIT_FOR_HANDLERS_S = 300.0

# event id -> monotonic time a handler applied it, per handler (filled by the service)
APPLIED: dict[str, dict[str, float]] = {name: {} for name in HANDLERS}


class ClusterBenchService:
    name = "clusterbench"

    @event_handler("customer_sync", "customer.deleted", claims=False)
    def one_by_one(self, event):
        APPLIED["one_by_one"].setdefault(event.event_id, time.monotonic())

    @batch_event_handler("customer_sync", "customer.deleted", claims=False)
    def in_batches(self, events):
        now = time.monotonic()
        for event in events:
            APPLIED["in_batches"].setdefault(event.event_id, now)


def run_on(amqp_uri: str, queue_type: str, events: int, rate: float, batch: int) -> dict:
    """One measured run against the broker at `amqp_uri` (its vhost exists and is empty)."""
    from tests.support import ServiceHarness

    for applied in APPLIED.values():
        applied.clear()
    services = ServiceHarness(amqp_uri, f"mongomock://bench-{uuid.uuid4().hex[:8]}")
    services.start(ClusterBenchService, AMQP_QUEUE_TYPE=queue_type)
    publisher = ConfirmingPublisher(amqp_uri)
    sent: dict[str, float] = {}
    confirmed_at: list[float] = []
    failed_batches = 0
    exchange = events_exchange(contract("customer.deleted").source)
    try:
        start = time.monotonic()
        for first in range(0, events, batch):
            due = start + first / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            bodies = [build_event("customer.deleted", store_id="bench",
                                  data={"customer_id": f"c-{n}", "woo_customer_id": n}
                                  ).to_message()
                      for n in range(first, min(events, first + batch))]
            began = time.monotonic()
            while True:
                try:
                    publisher.publish_batch([OutgoingMessage(exchange, "customer.deleted", body,
                                                             message_id=body["event_id"])
                                             for body in bodies])
                    break
                except Exception as exc:  # counted, and the same batch sent again
                    failed_batches += 1
                    log(f"publish failed, again: {exc}")
                    time.sleep(0.2)
            for body in bodies:
                sent[body["event_id"]] = began
            confirmed_at.append(time.monotonic())
        deadline = time.monotonic() + WAIT_FOR_HANDLERS_S
        while any(len(APPLIED[h]) < events for h in HANDLERS):
            if time.monotonic() > deadline:
                raise TimeoutError(f"handlers applied {[len(APPLIED[h]) for h in HANDLERS]} of "
                                   f"{events} events in {WAIT_FOR_HANDLERS_S:.0f}s")
            time.sleep(0.05)
    finally:
        publisher.close()
        services.stop_all()
    result: dict = {"queue_type": queue_type, "events": events,
                    "published_per_s": round(events / (confirmed_at[-1] - start), 1),
                    "failed_batches": failed_batches, "handlers": {}}
    for handler in HANDLERS:
        applied = APPLIED[handler]
        last = max(applied.values())
        result["handlers"][handler] = {
            "applied_per_s": round(events / (last - start), 1),
            "delivery_rate_per_s": achieved_rate(list(applied.values())),
            "lag": lag_summary(applied[event_id] - sent[event_id] for event_id in sent),
        }
    return result


def single_node_run(args) -> dict:
    from tests.private_broker import PrivateBroker
    from tests.support import BrokerAdmin

    began = time.monotonic()
    with PrivateBroker.start() as broker:
        log(f"single node up in {time.monotonic() - began:.1f}s")
        BrokerAdmin(f"http://guest:guest@127.0.0.1:{broker.management_port}").create_vhost("bench")
        return run_on(broker.amqp_uri("bench"), "classic", args.events, args.rate, args.batch)


def cluster_run(args) -> dict:
    from tests.private_cluster import PrivateCluster

    began = time.monotonic()
    with PrivateCluster.start(nodes=3) as cluster:
        log(f"three-node cluster up in {time.monotonic() - began:.1f}s")
        cluster.admin().create_vhost("bench")
        return run_on(cluster.amqp_uri("bench"), "quorum", args.events, args.rate, args.batch)


def render(results: dict) -> str:
    lines = [f"{results['events']} events at {results['rate']}/s in batches of {results['batch']}:"]
    for name in ("single_node", "cluster"):
        run = results[name]
        lines.append(f"  {name} ({run['queue_type']} queues): published {run['published_per_s']}"
                     f"/s, {run['failed_batches']} batches sent again")
        for handler, figures in run["handlers"].items():
            lag = figures["lag"]
            lines.append(f"    {handler:<11} applied {figures['applied_per_s']}/s; lag ms p50 "
                         f"{lag['p50_ms']} p95 {lag['p95_ms']} p99 {lag['p99_ms']} "
                         f"max {lag['max_ms']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0, help="events per second")
    parser.add_argument("--batch", type=int, default=50, help="events per confirmed batch")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    from tests.private_broker import available

    reason = available()
    if reason:
        log(f"cannot run: {reason}")
        return 1
    results: dict = {"started_at": datetime.now(timezone.utc).isoformat(),
                     "machine": machine(), "source": source_state(),
                     "events": args.events, "rate": args.rate, "batch": args.batch}
    status = 0
    try:
        log("single private node, classic queues")
        results["single_node"] = single_node_run(args)
        log("three-node private cluster, quorum queues")
        results["cluster"] = cluster_run(args)
    except Exception as exc:
        log(f"run failed: {type(exc).__name__}: {exc}")
        results["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    write_results(results, args.json, status, render)
    return status


if __name__ == "__main__":
    sys.exit(main())
