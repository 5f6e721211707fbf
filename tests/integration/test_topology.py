"""Events published before a consumer has ever started reach it once the topology is declared
(the deployment does this first), and are lost without it: the reason for the step."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.loyalty.service import LoyaltyService
from shared.events import build_event, contract
from ops.topology import declare, handler_queues, main
from tests.support import publish, wait_until

STORE = "topo"


def order_placed(order_id: str, customer: str) -> dict:
    data = {**contract("order.placed").sample, "order_id": order_id, "number": order_id,
            "customer_id": customer, "total": {"amount": 10_000, "currency": "EUR"},
            "shipping_total": {"amount": 0, "currency": "EUR"},
            "tax_total": {"amount": 0, "currency": "EUR"},
            "date_created": (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()}
    return build_event("order.placed", store_id=STORE, data=data).to_message()


def points(services, customer: str):
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=10) as rpc:
        try:
            return rpc.loyalty.get_account(STORE, customer)["balance"]
        except Exception:
            return None


@pytest.mark.parametrize("kind", ["classic", "quorum"])
def test_an_order_placed_before_loyalty_ever_ran_is_earned_once_it_starts(
        services, broker_admin, kind):
    declared = declare(services.amqp_uri, handler_queues(kind=kind))
    assert declared == len(handler_queues())
    publish(services.amqp_uri, order_placed("9001", "c-early"))
    services.start(LoyaltyService, AMQP_QUEUE_TYPE=kind)  # its own declaration agrees
    assert wait_until(lambda: points(services, "c-early"), timeout=15,
                      message="points for the early order") > 0


def test_without_the_topology_the_early_event_is_lost(services):
    publish(services.amqp_uri, order_placed("9002", "c-lost"))
    services.start(LoyaltyService)
    publish(services.amqp_uri, order_placed("9003", "c-later"))
    wait_until(lambda: points(services, "c-later"), timeout=15, message="the later order")
    assert points(services, "c-lost") is None


def test_the_command_declares_with_the_environments_settings(services, monkeypatch, capsys):
    monkeypatch.setenv("AMQP_URI", services.amqp_uri)
    assert main([]) == 0
    assert "declared" in capsys.readouterr().out
    monkeypatch.setenv("AMQP_QUEUE_TYPE", "sideways")
    assert main([]) == 2
