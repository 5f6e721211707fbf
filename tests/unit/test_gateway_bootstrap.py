"""The gateway built once from its config: the settings reach the parts that read them, the
console is a client of the same app, a misconfigured console stops the start, and readiness
is the broker's alone."""
from __future__ import annotations

import pytest

from services import registry
from services.gateway.bootstrap import build
from shared.config import Config
from tests.support import free_port


def _config(**settings: str) -> Config:
    return Config({}, settings=registry.settings(["gateway"]), CONSOLE_SESSION_SECRET="s" * 32,
                  **settings)


def test_the_settings_reach_the_parts_built_once():
    gateway = build(_config(GATEWAY_RATE_LIMIT_PER_MINUTE="7", GATEWAY_RPC_TIMEOUT_SECONDS="2.5",
                            GATEWAY_MAX_BODY_BYTES="1000", GATEWAY_MAX_IMPORT_BYTES="5000"))
    assert gateway.app.limiter.default_per_minute == 7
    assert (gateway.app.max_body_bytes, gateway.app.max_import_bytes) == (1000, 5000)
    assert gateway.console.gateway is gateway.app  # the same routes, keys and limits
    proxies = {"customer_sync": object()}
    backends = gateway.backends(proxies)
    assert backends.proxies is proxies and backends.timeout == 2.5


def test_a_misconfigured_console_stops_the_gateway_starting():
    with pytest.raises(ValueError, match="CONSOLE_COOKIE_SECURE"):
        build(_config(CONSOLE_COOKIE_SECURE="sometimes"))


def test_readiness_is_the_brokers_alone():
    gateway = build(_config(AMQP_URI=f"amqp://guest:guest@127.0.0.1:{free_port()}//"))
    assert gateway.readiness() == {"ready": False, "checks": {"broker": False}}
