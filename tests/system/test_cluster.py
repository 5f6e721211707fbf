"""The whole system (every service its own OS process, two instances of each consumer service
sharing their queues and, in the wire stand-in, their databases; customer_sync's door handing
its deliveries to its applier as deployed) on a three-node RabbitMQ cluster of our own
(tests/private_cluster.py) with quorum queues, while a seeded WooCommerce scenario runs:
a node that leads none of the hot queues is stopped mid-stream (and started again), then the
node leading loyalty's `order.placed` queue is killed mid-stream. Each service's AMQP_URI lists
the three nodes, in an order of its own (the two instances of a service start at different
nodes) so that their connections are spread over the nodes;
afterwards the scenario's oracle (tests/system/scenario.py) must hold: nothing lost, nothing
applied twice, nothing parked; and no service logged a node's password.

Sizes: CLUSTER_CUSTOMERS and CLUSTER_ORDERS (default 15 and 60), CLUSTER_SEED. Service logs go
to SYSTEM_LOG_DIR.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests import private_cluster
from tests.private_cluster import PrivateCluster
from tests.system.fault_stack import FaultStack, StoreScenario, log_dir, size
from tests.system.harness import APPLIER, SERVICE_NAMES, service_of

CUSTOMERS, ORDERS = size("CLUSTER_CUSTOMERS", 15), size("CLUSTER_ORDERS", 60)
INSTANCES = 2  # of each consumer service
SEED = size("CLUSTER_SEED", 17)
VHOST = "cluster"
# The queues order traffic keeps busy: every order placed goes to both.
HOT = ("evt-customer_sync-order.placed--loyalty.on_order_placed",
       "evt-customer_sync-order.placed--segmentation.on_order_placed")


class Delivering:
    """A slice of the scenario's webhooks delivered on a thread of its own, so that a node can
    be taken away while they come in."""

    def __init__(self, scenario: StoreScenario, deliveries: list) -> None:
        self.result: dict | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(scenario, deliveries))
        self._thread.start()

    def _run(self, scenario: StoreScenario, deliveries: list) -> None:
        try:
            self.result = scenario.deliver(deliveries)
        except BaseException as exc:  # re-raised by `join` in the test's thread
            self.error = exc

    def join(self) -> dict:
        self._thread.join(300)
        assert not self._thread.is_alive(), "delivering the webhooks did not finish in 300 s"
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


def spread_services(stack: FaultStack, cluster: PrivateCluster) -> None:
    """Each service lists the nodes in an order of its own (rotated by its position), so their
    connections are spread over the cluster as clients of a real one are, and every node taken
    away takes some of them along. The queues are still declared first through node 0
    (`SystemProcesses.topology` uses the shared URI)."""
    env_of = stack.procs._env
    processes = list(SERVICE_NAMES) + [APPLIER]

    def spread(name: str) -> dict[str, str]:
        env = env_of(name)
        number = int(name.split("@", 1)[1]) if "@" in name else 1  # "loyalty@2": the second
        first = (processes.index(service_of(name)) + number - 1) % len(cluster.nodes)
        order = [(first + step) % len(cluster.nodes) for step in range(len(cluster.nodes))]
        env["AMQP_URI"] = cluster.amqp_uri(VHOST, order=order)
        return env

    stack.procs._env = spread


def passwords_in_logs(log_dir: Path) -> list[str]:
    """Log lines showing a node's password (every node's user and password here: guest)."""
    return [line for path in sorted(log_dir.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines() if "guest:guest@" in line]


def test_the_system_loses_nothing_while_cluster_nodes_stop_and_die():
    reason = private_cluster.available()
    if reason:
        pytest.skip(f"a private RabbitMQ cluster cannot run here: {reason}")
    with PrivateCluster.start(nodes=3) as cluster:
        cluster.admin().create_vhost(VHOST)
        stack = FaultStack(cluster.admin(), VHOST, cluster.amqp_uri(VHOST), log_dir("cluster"),
                           env={"AMQP_QUEUE_TYPE": "quorum"}, instances=INSTANCES)
        spread_services(stack, cluster)
        scenario = None
        try:
            stack.start()
            for queue in HOT:
                assert cluster.queue(queue, VHOST)["type"] == "quorum"
                assert cluster.members_of(queue, VHOST) == [0, 1, 2]
                # Both instances consume it (the management API samples consumers).
                deadline = time.monotonic() + 30
                while cluster.queue(queue, VHOST).get("consumers", 0) < INSTANCES:
                    assert time.monotonic() < deadline, f"{queue}: fewer than two consumers"
                    time.sleep(0.5)
            scenario = StoreScenario(stack, "clustershop", SEED, CUSTOMERS, ORDERS)
            scenario.sign_up()
            before, during_stop, during_kill = scenario.order_slices(3)
            scenario.deliver(before)

            leaders = {queue: cluster.leader_of(queue, VHOST) for queue in HOT}
            bystander = min(set(range(3)) - set(leaders.values()))  # two queues, three nodes
            delivering = Delivering(scenario, during_stop)
            cluster.stop_node(bystander)
            stack.admin = cluster.admin()  # the management API of a running node
            scenario.lap(f"node {bystander} stopped")
            sent = delivering.join()
            assert set(sent["statuses"]) == {200}, sent
            cluster.start_node(bystander)
            for queue in HOT:
                cluster.wait_online(queue, VHOST, range(3))
            scenario.lap(f"node {bystander} back")

            leader = cluster.leader_of(HOT[0], VHOST)
            delivering = Delivering(scenario, during_kill)
            cluster.kill_node(leader)
            stack.admin = cluster.admin()
            scenario.lap(f"node {leader} killed")
            sent = delivering.join()
            assert set(sent["statuses"]) == {200}, sent
            assert cluster.leader_of(HOT[0], VHOST) != leader
            print(f"leaders {leaders}; stopped node {bystander}, killed node {leader}")

            for name in stack.procs.children:
                stack.procs.wait_ready(name, timeout=120)
            scenario.settle_and_check()  # nothing parked, everything applied once
            assert not passwords_in_logs(stack.log_dir)
            reconnects = {path.name: sum("Error connecting to broker" in line
                                         for line in path.read_text(errors="replace").splitlines())
                          for path in sorted(stack.log_dir.glob("*.log"))}
            print(f"broker reconnection warnings per service log: {reconnects}")
        finally:
            if scenario is not None:
                scenario.close()
            stack.stop()
