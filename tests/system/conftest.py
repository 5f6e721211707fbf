"""The system scenario's fixtures: a vhost, the six services as OS processes, the fake shop,
SMTP server and Twilio, and the store registered over the operator CLI (`system`); and the
fault tests' stack (`stack`), on which each test adds a store and fake shop of its own.

Sizes come from the environment (pytest options cannot be added below the root conftest):
SYSTEM_CUSTOMERS, SYSTEM_ORDERS, SYSTEM_SEED. `make test` runs the small default;
`make test-system` the full 1,000 customers and 5,000 orders. SYSTEM_MONGO chooses the database:
`wire` (the default) starts tests/fakes/mongo_server.py as one process that every service
reaches through pymongo; `mongomock` gives each service process its own in-memory database. A
test module can insist with a module-level `SYSTEM_MONGO` (the kill test needs `wire`), and run
several processes of a service with a module-level `SYSTEM_INSTANCES` ({"loyalty": 2, ...};
one of each by default; several need `wire`, the database they share).
"""
from __future__ import annotations

import os
import signal
import tempfile
import uuid
from pathlib import Path

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from tests.conftest import RABBIT_AMQP_HOST
from demo.mailbox import SmtpServer
from demo.sms import FakeTwilio
from demo.shop import FakeWooShop
from tests.fakes.load_balancer import RoundRobinBalancer
from tests.system.fault_stack import FaultStack, log_dir
from tests.system.harness import (APPLIER, SERVICE_NAMES, MongoServerProcess, SystemProcesses,
                                  register_store, system_env)

STORE = "sysshop"
SECRET = "whsec-system-scenario-1"


def _dump_greenlets(signum, frame) -> None:  # noqa: ARG001
    """`kill -USR1 <pytest pid>` prints every green thread's stack: a hang's evidence."""
    import gc
    import sys
    import traceback

    import greenlet

    for obj in gc.get_objects():
        if isinstance(obj, greenlet.greenlet) and obj.gr_frame is not None:
            print("--- greenlet", obj, file=sys.stderr)
            traceback.print_stack(obj.gr_frame, file=sys.stderr)
    sys.stderr.flush()


signal.signal(signal.SIGUSR1, _dump_greenlets)


def size(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@pytest.fixture(scope="module")
def system_vhost():
    from tests.conftest import RABBIT_MANAGEMENT_URL
    from tests.support import BrokerAdmin

    admin = BrokerAdmin(RABBIT_MANAGEMENT_URL)
    reason = admin.unavailable_reason()
    if reason:
        pytest.fail(f"RabbitMQ with its management plugin is required: {reason}")
    vhost = f"system-{uuid.uuid4().hex[:10]}"
    admin.create_vhost(vhost)
    yield admin, vhost, f"amqp://guest:guest@{RABBIT_AMQP_HOST}/{vhost}"
    admin.delete_vhost(vhost)


@pytest.fixture(scope="module")
def system(system_vhost, request):
    admin, vhost, amqp_uri = system_vhost
    log_dir = Path(os.environ.get("SYSTEM_LOG_DIR") or tempfile.mkdtemp(prefix="system-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    mongo_kind = getattr(request.module, "SYSTEM_MONGO", None) or os.environ.get("SYSTEM_MONGO", "wire")
    smtp = SmtpServer().start()
    twilio = FakeTwilio(seed=5).start()
    shop = FakeWooShop(seed=size("SYSTEM_SEED", 7), ping_webhooks=True).start()
    mongo = MongoServerProcess(log_dir) if mongo_kind == "wire" else None
    procs = SystemProcesses(amqp_uri, log_dir, system_env(
        smtp, twilio, MONGO_URI=mongo.uri if mongo else "mongomock://",
        # A claim a killed worker left blocks its event's redelivery until the lease ends.
        EVENT_CLAIM_LEASE_SECONDS="20", NOTIFY_LEASE_SECONDS="20"))
    balancer = None
    try:
        procs.topology()
        instances = getattr(request.module, "SYSTEM_INSTANCES", {})
        by_count: dict[int, list[str]] = {}
        for name in SERVICE_NAMES:
            by_count.setdefault(instances.get(name, 1), []).append(name)
        for count, names in sorted(by_count.items()):
            procs.start(*names, instances=count)
        if APPLIER in procs.names:  # customer_sync's door hands its deliveries over
            procs.start(APPLIER)
        doors = procs.instances("customer_sync")
        if len(doors) > 1:  # the shop reaches every webhook door through a load balancer
            balancer = RoundRobinBalancer([procs.web_url(name) for name in doors]).start()
        register_store(procs, shop, STORE, SECRET, balancer.url if balancer else None)
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as rpc:
            yield {"admin": admin, "vhost": vhost, "amqp_uri": amqp_uri, "procs": procs,
                   "smtp": smtp, "twilio": twilio, "shop": shop, "rpc": rpc, "log_dir": log_dir,
                   "mongo": mongo, "balancer": balancer}
    finally:
        if balancer is not None:
            balancer.stop()
        procs.stop_all()
        if mongo is not None:
            mongo.stop()
        shop.stop()
        twilio.stop()
        smtp.stop()


@pytest.fixture(scope="module")
def stack(system_vhost, request):
    """The fault tests' six processes with SMTP and Twilio stand-ins (fault_stack.FaultStack),
    one set per test module, each test driving a store of its own (StoreScenario)."""
    admin, vhost, amqp_uri = system_vhost
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    running = FaultStack(admin, vhost, amqp_uri, log_dir(module))
    try:
        yield running.start()
    finally:
        running.clear_handler_faults()
        running.stop()
