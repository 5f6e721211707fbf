"""A private three-node RabbitMQ cluster for tests that take nodes away.

Each node is a private node as in tests/private_broker.py (the installed RabbitMQ run as a child
process with its own name, AMQP, distribution and management ports, Mnesia and log
directories), all with one Erlang cookie of their own so that they can cluster: nodes 1 and 2
join node 0 (`rabbitmqctl join_cluster`). Every node runs the management plugin, so the
cluster can be asked about its queues whichever node is down.

    with PrivateCluster.start(nodes=3) as cluster:
        admin = cluster.admin()                    # BrokerAdmin on a running node
        admin.create_vhost("v")
        uri = cluster.amqp_uri("v")                # "amqp://...:p0/v;amqp://...:p1/v;..."
        cluster.leader_of("some-queue", "v")       # index of the node leading a quorum queue
        cluster.stop_node(1); cluster.start_node(1)
        cluster.kill_node(0); cluster.start_node(0)

`stop_node` stops a node gracefully (`rabbitmqctl stop`: its connections are closed, it leaves
the cluster's running set); `kill_node` SIGKILLs it, as a crash or a lost machine would;
`start_node` boots either again from its Mnesia directory, and it rejoins the cluster.
`close()` kills whatever still runs and deletes every directory, whatever happened before.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import requests

from tests.private_broker import PrivateBroker, _script, available
from tests.support import BrokerAdmin

__all__ = ["PrivateCluster", "ClusterNode", "available"]

# Keep idle schedulers from spinning: three nodes share a small machine with other work.
_QUIET_SCHEDULERS = "+sbwt none +sbwtdcpu none +sbwtdio none"


class ClusterNode(PrivateBroker):
    """One node of a PrivateCluster: a PrivateBroker with the cluster's cookie, which can be
    stopped, killed and booted again."""

    def __init__(self, base: Path, cluster_id: str, index: int, cookie: str) -> None:
        super().__init__(base)
        self.index = index
        self.name = f"companion-cluster-{cluster_id}-{index}@localhost"
        self.env["RABBITMQ_NODENAME"] = self.name
        self.env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] += f" {_QUIET_SCHEDULERS}"
        cookie_file = base / "home" / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        with open(base / "rabbitmq.conf", "a") as conf:
            # Queue figures in the management API every second rather than every five.
            conf.write("collect_statistics_interval = 1000\n")

    def launch(self) -> None:
        """Start the node's server process (not waiting for it); its output is appended to
        the same file across restarts."""
        if self.running():
            raise RuntimeError(f"node {self.index} is already running")
        if self._log is None:
            self._log = open(self.base / "server.out", "ab")
        self.proc = subprocess.Popen([_script("rabbitmq-server")], env=self.env, cwd=self.base,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._app_stopped = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """`rabbitmqctl stop`, waiting for the process to end."""
        self.ctl("stop", timeout=timeout)
        try:
            self.proc.wait(timeout)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"node {self.index} did not exit after `rabbitmqctl stop`:\n"
                               f"{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL to the node's whole process group: the start script, beam and its children."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)


class PrivateCluster:
    """A RabbitMQ cluster of private nodes; see the module doc."""

    def __init__(self, base: Path, nodes: int) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self.base = base
        cluster_id = uuid.uuid4().hex[:8]
        cookie = secrets.token_hex(16).upper()
        self.nodes: list[ClusterNode] = []
        for index in range(nodes):
            node_dir = base / f"node{index}"
            node_dir.mkdir()
            self.nodes.append(ClusterNode(node_dir, cluster_id, index, cookie))

    # -- life -------------------------------------------------------------------------------
    @classmethod
    def start(cls, nodes: int = 3, timeout: float = 180.0) -> "PrivateCluster":
        """Boot `nodes` nodes side by side and cluster them; everything is cleaned up when
        any step fails. `timeout` bounds the whole start."""
        reason = available()
        if reason is not None:
            raise FileNotFoundError(reason)
        cluster = cls(Path(tempfile.mkdtemp(prefix="companion-cluster-")), nodes)
        try:
            cluster._form(time.monotonic() + timeout)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _form(self, deadline: float) -> None:
        for node in self.nodes:  # they boot at the same time; each is then waited for
            node.launch()
        for node in self.nodes:
            node.await_startup(_left(deadline))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app", timeout=_left(deadline))
            node.ctl("join_cluster", seed.name, timeout=_left(deadline))
            node.ctl("start_app", timeout=_left(deadline))
            node.await_startup(_left(deadline))
        self.wait_running(range(len(self.nodes)), _left(deadline))

    def stop_node(self, index: int, timeout: float = 60.0) -> None:
        """Stop node `index` gracefully; the others see it leave."""
        self.nodes[index].stop(timeout)
        self.wait_running(self._running_indexes(), timeout, absent=[index])

    def kill_node(self, index: int, timeout: float = 60.0) -> None:
        """SIGKILL node `index`; returns once the surviving nodes no longer count it running
        (they notice the lost distribution connection at once on one machine)."""
        self.nodes[index].kill()
        self.wait_running(self._running_indexes(), timeout, absent=[index])

    def start_node(self, index: int, timeout: float = 180.0) -> None:
        """Boot node `index` again (after stop_node or kill_node); returns once every running
        node, this one too, counts it running in the cluster."""
        deadline = time.monotonic() + timeout
        node = self.nodes[index]
        node.launch()
        node.await_startup(_left(deadline))
        self.wait_running(self._running_indexes(), _left(deadline))

    def close(self) -> None:
        """Kill every node and delete every directory (always; nothing here is worth a
        graceful stop)."""
        try:
            for node in self.nodes:
                try:
                    node.kill()
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            for node in self.nodes:
                node.close()  # closes its log, deletes its directory
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "PrivateCluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses --------------------------------------------------------------------------
    def amqp_uri(self, vhost: str = "/", order: list[int] | None = None) -> str:
        """A failover URI over the nodes (kombu's `;`-separated list), in `order` (default:
        by index): clients connect to the first that answers."""
        indexes = list(range(len(self.nodes))) if order is None else order
        return ";".join(self.nodes[i].amqp_uri(vhost) for i in indexes)

    def _running_indexes(self) -> list[int]:
        return [node.index for node in self.nodes if node.running()]

    def management_url(self) -> str:
        """The management API of the first running node."""
        running = self._running_indexes()
        if not running:
            raise RuntimeError("no node of the cluster is running")
        return self.nodes[running[0]].management_url

    def admin(self) -> BrokerAdmin:
        """The tests' management client, on the first running node."""
        return BrokerAdmin(self.management_url().replace("http://", "http://guest:guest@"))

    def _get(self, path: str) -> requests.Response:
        return requests.get(f"{self.management_url()}/api/{path}", auth=("guest", "guest"),
                            timeout=10)

    # -- state ------------------------------------------------------------------------------
    def running_names(self) -> set[str]:
        """The nodes the first running node's management API counts as running."""
        response = self._get("nodes")
        response.raise_for_status()
        return {n["name"] for n in response.json() if n.get("running")}

    def wait_running(self, indexes, timeout: float, absent: list[int] = ()) -> None:
        """Until every running node's management API answers and counts exactly the nodes
        `indexes` (none of `absent`) as running."""
        wanted = {self.nodes[i].name for i in indexes}
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                for i in indexes:
                    response = requests.get(f"{self.nodes[i].management_url}/api/nodes",
                                            auth=("guest", "guest"), timeout=5)
                    response.raise_for_status()
                    last = {n["name"] for n in response.json() if n.get("running")}
                    if last != wanted:
                        break
                else:
                    return
            except requests.RequestException as exc:
                last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the cluster did not settle on nodes {sorted(wanted)} "
                    f"(without {[self.nodes[i].name for i in absent]}) in {timeout:g}s; "
                    f"last seen: {last}")
            time.sleep(0.5)

    def queue(self, queue: str, vhost: str) -> dict:
        """The management API's record of a queue (`type`, `leader`, `members`, `online`...)."""
        response = self._get(f"queues/{urllib.parse.quote(vhost, safe='')}/"
                             f"{urllib.parse.quote(queue, safe='')}")
        response.raise_for_status()
        return response.json()

    def index_of(self, node_name: str) -> int:
        for node in self.nodes:
            if node.name == node_name:
                return node.index
        raise KeyError(f"{node_name} is not a node of this cluster")

    def members_of(self, queue: str, vhost: str) -> list[int]:
        """The nodes holding a replica of a quorum queue."""
        return sorted(self.index_of(name) for name in self.queue(queue, vhost).get("members", []))

    def leader_of(self, queue: str, vhost: str, timeout: float = 30.0) -> int:
        """The node leading a quorum queue: the `leader` of the management API's record
        (`node` on versions without it), once it names a running node that is online for
        the queue (after a leader is lost, until the election the record names the old one)."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.queue(queue, vhost)
            leader = record.get("leader") or record.get("node")
            online = record.get("online")
            if leader and (online is None or leader in online):
                index = self.index_of(leader)
                if self.nodes[index].running():
                    return index
            if time.monotonic() > deadline:
                raise TimeoutError(f"no running leader of {queue} in {timeout:g}s: "
                                   f"leader {leader!r}, online {online!r}")
            time.sleep(0.2)

    def wait_online(self, queue: str, vhost: str, indexes, timeout: float = 60.0) -> None:
        """Until the quorum queue's replicas on nodes `indexes` are online."""
        wanted = {self.nodes[i].name for i in indexes}
        deadline = time.monotonic() + timeout
        while True:
            online = set(self.queue(queue, vhost).get("online") or [])
            if wanted <= online:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas of {queue} on {sorted(wanted - online)} not online "
                                   f"in {timeout:g}s (online: {sorted(online)})")
            time.sleep(0.2)

    def tail(self, lines: int = 20) -> str:
        """The last log lines of every node, for a failure's message."""
        return "\n".join(f"--- node {node.index} ---\n{node.tail(lines)}" for node in self.nodes)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the private cluster did not form in time")
    return left
