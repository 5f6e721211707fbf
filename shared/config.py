"""Configuration from environment variables, with documented defaults, read in one place.

`SETTINGS` lists the variables the shared library itself reads; each service declares its own in
`services/<service>/settings.py`, and `services.registry.settings()` merges them.
docs/configuration.md's tables are generated from that merge (`python -m ops.config_docs`), so
the docs and the code cannot drift apart (a test compares them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping


# The admin console's session bounds: the gateway refuses settings past them at start, and
# customer_sync, which keeps the sessions, refuses any gateway that asks for more.
CONSOLE_SESSION_IDLE_MINUTES_MAX = 24 * 60
CONSOLE_SESSION_MAX_HOURS_MAX = 30 * 24


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    description: str


SETTINGS: tuple[Setting, ...] = (
    Setting("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/",
            "RabbitMQ connection URI. For a cluster, one URI per node separated by `;` (each "
            "with the same user and vhost): connections go to the first node that answers."),
    Setting(
        "MONGO_URI",
        "mongomock://",
        "MongoDB URI (`mongodb://...`), or `mongomock://` for an in-memory database that is "
        "lost at exit (tests and a local demo).",
    ),
    Setting("MONGO_DB_PREFIX", "companion_", "Prefix of each service's database name."),
    Setting("WEB_SERVER_ADDRESS", "0.0.0.0:8000", "Address of the HTTP endpoints (webhooks, health)."),
    Setting("WEB_LISTEN_BACKLOG", "1024",
            "Connections the HTTP endpoints let wait to be accepted (capped by the kernel's "
            "net.core.somaxconn); past it a burst's surplus connections are reset."),
    Setting("LOG_LEVEL", "INFO", "Log level of the JSON-lines logs."),
    Setting("LOG_FORMAT", "auto", "json (one JSON object per line, for log collectors), text "
            "(one readable line per record), or auto: text when standard error is a terminal, "
            "json otherwise."),
    Setting("METRICS_PORT", "9102",
            "Port of each process's Prometheus `/metrics`, `/health/live` and `/health/ready` "
            "(all interfaces); 0 turns the server off."),
    Setting("MAX_WORKERS", "10", "Concurrent workers per service (and the consumer prefetch); each batch event "
            "handler adds a slot of its own (docs/batching.md)."),
    Setting("EVENT_MAX_ATTEMPTS", "5", "Tries of an event handler before its message is parked."),
    Setting("EVENT_CLAIM_LEASE_SECONDS", "300",
            "How long an event handler's claim on an event is its own: a claim left by a killed "
            "process blocks that event's redelivery until it expires, then another takes it over."),
    Setting(
        "EVENT_RETRY_DELAYS_MS",
        "1000,5000,30000,120000",
        "Back-off before each retry of a failed event handler, in milliseconds; the last value "
        "repeats.",
    ),
    Setting("EVENT_BATCH_SIZE", "100",
            "Most events a batch event handler is given at once (1 to 1000); its consumer "
            "prefetches twice as many. A service may declare a setting of its own for one "
            "handler (docs/batching.md)."),
    Setting("EVENT_BATCH_WAIT_MS", "50",
            "Longest a batch event handler waits after a batch's first event for it to fill "
            "(0 to 60000 ms); a batch goes as soon as it is full."),
    Setting(
        "OUTBOX_SWEEP_SECONDS",
        "30",
        "Safety-net interval of the search for unsent events, which takes those older than "
        "it (writes publish at once from the process that made them; a failed publish sweeps "
        "everything at once, a start what was owed before it).",
    ),
    Setting("OUTBOX_BATCH_SIZE", "200", "Events published per batch of publisher confirms."),
    Setting("CUSTOMER_CHECK_TIMEOUT_SECONDS", "5",
            "How long loyalty, segmentation, notifications and gdpr wait for customer_sync to "
            "say whether a customer named by a request exists; past it the request is refused "
            "with 503, nothing changed."),
    # -- deployment: queue type and TLS (deploy/README.md) ------------------------------------
    Setting("AMQP_QUEUE_TYPE", "classic",
            "Type of the durable queues the services declare (RPC, event handlers, retries, "
            "parked, customer_sync's inbox work queue): `classic`, or `quorum` on a RabbitMQ "
            "cluster. Per-process reply queues stay classic (and transient)."),
    Setting("AMQP_SSL_CA_FILE", "",
            "CA bundle (PEM) that verifies the broker's certificate; needs an `amqps://` "
            "AMQP_URI. Empty with `amqps://`: the system's CAs."),
    Setting("AMQP_SSL_CERT_FILE", "",
            "Client certificate (PEM) presented to the broker (mutual TLS); needs "
            "AMQP_SSL_KEY_FILE."),
    Setting("AMQP_SSL_KEY_FILE", "", "Private key (PEM) of AMQP_SSL_CERT_FILE."),
    Setting("MONGO_TLS_CA_FILE", "",
            "CA bundle (PEM) that verifies MongoDB's certificate; turns TLS on (as does "
            "`tls=true` in MONGO_URI)."),
    Setting("MONGO_TLS_CERT_KEY_FILE", "",
            "Client certificate and its key in one PEM file, presented to MongoDB (x.509 or "
            "mutual TLS); turns TLS on."),
)

# The key of a nameko container's config that carries the settings its Config was built with.
DECLARED_SETTINGS_KEY = "COMPANION_SETTINGS"


class Config:
    """Typed read access to the settings; `env` defaults to the process environment.

    `settings` are the variables this Config knows: the shared library's by default, and a
    service's own added by whoever builds the Config for it (`services.registry.settings()`),
    so a name nobody declared is refused rather than read as an empty default."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 settings: Iterable[Setting] = SETTINGS, **overrides: str) -> None:
        source = dict(os.environ if env is None else env)
        source.update({k: str(v) for k, v in overrides.items()})
        self._env = source
        self.settings: tuple[Setting, ...] = tuple(settings)
        self._defaults = {s.name: s.default for s in self.settings}

    def get(self, name: str) -> str:
        if name not in self._defaults:
            raise KeyError(f"unknown setting {name!r}: declare it in shared/config.py if the "
                           "shared library reads it, else in services/<service>/settings.py, "
                           "and build the Config with services.registry.settings()")
        value = self._env.get(name)
        return self._defaults[name] if value is None or value == "" else value

    def int(self, name: str) -> int:
        raw = self.get(name)
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} must be a whole number, got {raw!r}") from None

    def float(self, name: str) -> float:
        raw = self.get(name)
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {raw!r}") from None

    def int_list(self, name: str) -> list[int]:
        raw = self.get(name)
        try:
            values = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated whole numbers, got {raw!r}") from None
        if not values or any(v < 0 for v in values):
            raise ValueError(f"{name} needs at least one non-negative value, got {raw!r}")
        return values

    def values(self) -> dict[str, object]:
        """Every setting's value by name, defaults filled in, and the settings themselves under
        DECLARED_SETTINGS_KEY: what a nameko container carries so that `from_nameko` can
        rebuild this Config inside it."""
        built: dict[str, object] = {name: self.get(name) for name in self._defaults}
        built[DECLARED_SETTINGS_KEY] = self.settings
        return built


def from_nameko(container_config: Mapping[str, object]) -> Config:
    """Rebuild a Config from a nameko container's config (which started from `nameko_config`).

    The declared settings travel in the container's config beside their values, so inside a
    container the same names are known (and the same defaults fill emptied values) as where
    the Config was built, and nameko's own upper-case keys are never taken for settings. A
    nameko config is a dict that stays in the process, so it can carry them as they are. A
    config built without them knows the shared library's settings only."""
    declared = container_config.get(DECLARED_SETTINGS_KEY)
    settings = declared if isinstance(declared, tuple) else SETTINGS
    names = {s.name for s in settings}
    return Config({k: str(v) for k, v in container_config.items() if k in names},
                  settings=settings)
