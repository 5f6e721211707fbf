"""The environment variables only the operator tools read (the RabbitMQ management API behind
`companion health`), and every setting an operator tool may need: these, the shared library's
and every service's, since a tool reads the settings of whichever service it works on."""
from __future__ import annotations

from services import registry
from shared.config import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672",
            "RabbitMQ management API that `companion health` reads queue depths from."),
    Setting("RABBITMQ_MANAGEMENT_USER", "",
            "Its user (empty: the user in RABBITMQ_MANAGEMENT_URL, else in AMQP_URI)."),
    Setting("RABBITMQ_MANAGEMENT_PASSWORD", "",
            "Its password (secret; empty: as for the user)."),
    Setting("BROKER_VHOST", "companion",
            "The virtual host `python -m ops.broker_permissions` grants the services' users on."),)


def settings_by_owner() -> dict[str, tuple[Setting, ...]]:
    """The shared library's settings, each service's, then the operator tools' ("ops")."""
    return {**registry.settings_by_owner(), "ops": SETTINGS}


def every_setting() -> tuple[Setting, ...]:
    """Every variable any part of the deployment reads, each once."""
    return registry.merge(settings_by_owner())
