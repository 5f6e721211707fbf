"""Configuration from environment variables, with documented defaults, read in one place.

Every variable is listed in `SETTINGS`, and docs/configuration.md's table is generated from it
(`python -m ops.config_docs`), so the docs and the code cannot drift apart (a test compares them).
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
    Setting("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ connection URI."),
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
    Setting("MAX_WORKERS", "10", "Concurrent workers per service (and the consumer prefetch)."),
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
    Setting(
        "OUTBOX_SWEEP_SECONDS",
        "30",
        "Safety-net interval of the full search for unsent events (writes in this process "
        "publish at once; a failed publish or a restart sweeps at once).",
    ),
    Setting("OUTBOX_BATCH_SIZE", "200", "Events published per batch of publisher confirms."),
    Setting("CUSTOMER_CHECK_TIMEOUT_SECONDS", "5",
            "How long loyalty, segmentation, notifications and gdpr wait for customer_sync to "
            "say whether a customer named by a request exists; past it the request is refused "
            "with 503, nothing changed."),
    Setting("WEBHOOK_MAX_BODY_BYTES", str(1024 * 1024), "Largest webhook body accepted (413 above)."),
    Setting("INBOX_SWEEP_SECONDS", "5", "How often webhook deliveries not yet applied are retried."),
    Setting(
        "INBOX_BUSY_PAUSE_MS",
        "100",
        "While webhooks arrive and the process is short of CPU, pause this long between applying "
        "deliveries, so answering comes first (0 turns it off).",
    ),
    Setting("INBOX_RETENTION_DAYS", "7", "Days an applied webhook delivery is kept (a quarantined "
            "one is kept until replayed)."),
    Setting(
        "TIMELINE_SWEEP_SECONDS",
        "5",
        "How often customer_sync moves timeline entries a crash left on their documents into "
        "the activity timeline (writes in this process move theirs at once).",
    ),
    Setting("RECONCILE_INTERVAL_MINUTES", "10", "Default interval of a store's REST reconciliation."),
    Setting("RECONCILE_POLL_SECONDS", "30", "How often stores due for reconciliation are looked for."),
    Setting(
        "RECONCILE_FULL_CUSTOMER_SCAN_HOURS",
        "24",
        "Interval of a full customer scan (the REST API cannot filter customers by modification).",
    ),
    Setting(
        "LOYALTY_DAILY_MINUTES",
        "1440",
        "How often loyalty expires points and credit that are due and re-evaluates tiers "
        "(points leave the 12-month window with time); daily by default.",
    ),
    Setting("LOYALTY_REWARD_STEP_SECONDS", "5",
            "How often loyalty looks for reward coupons due at the shop (to create, retry or "
            "delete) and for rewards past their expiry."),
    Setting("LOYALTY_REWARD_RETRY_SECONDS", "30",
            "Wait before a reward's coupon step that failed (shop down) is tried again; doubles "
            "with each attempt. Also how long loyalty waits for customer_sync's answer, and how "
            "long an attempt is its worker's before another may take it over."),
    Setting("LOYALTY_REWARD_RETRY_MAX_SECONDS", "3600",
            "The longest wait between two tries of a reward's coupon step."),
    Setting("SMTP_HOST", "localhost", "Mail server notifications sends email through."),
    Setting("SMTP_PORT", "25", "Its port (587 for STARTTLS, 465 for TLS are usual)."),
    Setting("SMTP_SECURITY", "none", "`none`, `starttls` or `tls` (implicit TLS)."),
    Setting("SMTP_USERNAME", "", "SMTP login; empty for none."),
    Setting("SMTP_PASSWORD", "", "SMTP password (secret: set it in the environment)."),
    Setting("SMTP_TIMEOUT_SECONDS", "10", "SMTP connect and reply timeout."),
    Setting("MAIL_FROM", "Woo Companion <noreply@localhost>",
            "Default From of emails (a store's `from_email` setting overrides it)."),
    Setting("MAIL_DOMAIN", "", "Domain of generated Message-IDs (empty: this host's name)."),
    Setting("TWILIO_ACCOUNT_SID", "", "Twilio account SID for SMS (empty: SMS not configured)."),
    Setting("TWILIO_AUTH_TOKEN", "", "Twilio auth token (secret); also validates callbacks."),
    Setting("TWILIO_FROM_NUMBER", "", "The number SMS are sent from (E.164)."),
    Setting("TWILIO_API_BASE", "https://api.twilio.com",
            "Twilio's API root (tests point it at a local stand-in)."),
    Setting("NOTIFY_PUBLIC_URL", "",
            "The public base URL of notifications: what Twilio calls back (behind a proxy, what "
            "Twilio sees; signatures are checked against it) and where the links in messages "
            "lead (https in production). Empty: the URL as the request arrived, no status "
            "callbacks are asked for, and no marketing email goes (it could not carry its "
            "unsubscribe link)."),
    Setting("EMAIL_REPORT_SECRET", "",
            "Secret (a long random string) of the HMAC-SHA256 that signs bounce and complaint reports "
            "posted to notifications' `/email/reports` (docs/suppression.md). Empty: every "
            "report is refused."),
    Setting("NOTIFY_LINK_SECRET", "",
            "Secret (at least 32 characters) that signs the unsubscribe, preference and "
            "email-confirmation links in messages; the same on every notifications instance, "
            "and kept: links signed with another secret answer 404. Empty: a random one per "
            "process (logged), so links stop working at a restart; with an https "
            "NOTIFY_PUBLIC_URL (a real deployment) notifications refuses to start without it."),
    Setting("NOTIFY_UNSUBSCRIBE_MAX_BODY_BYTES", "8192",
            "Largest body the public unsubscribe and preference pages read (413 above)."),
    Setting("NOTIFICATIONS_WEB_SERVER_ADDRESS", "0.0.0.0:8001",
            "Address of notifications' own HTTP endpoints (Twilio callbacks, the unsubscribe "
            "and preference pages, bounce reports, health)."),
    Setting("NOTIFY_POLL_SECONDS", "2", "How often notifications looks for sends that are due."),
    Setting("NOTIFY_MAX_ATTEMPTS", "5", "Attempts of a send that fails transiently before it "
            "is given up."),
    Setting("NOTIFY_RETRY_SECONDS", "60", "Wait before the first retry of a send; doubles "
            "with each attempt."),
    Setting("NOTIFY_LEASE_SECONDS", "120", "How long a claimed send is a sender's; after that a "
            "stopped sender's send is taken over (and, if the provider was being called, not "
            "resent)."),
    Setting("NOTIFY_DATE_RULES_MINUTES", "60",
            "How often birthday and days-since-last-order workflows are checked."),
    Setting("NOTIFY_COUPON_PREFIX", "gift",
            "Prefix of the codes of coupons workflows attach to messages (`gift-7kq2m9xwpa`), "
            "unless the workflow's coupon names its own: 1-12 lower-case letters or digits 2-9."),
    Setting("NOTIFY_COUPON_TIMEOUT_SECONDS", "10",
            "How long a send waits for customer_sync to make its coupon at the shop; past it "
            "the send is retried like a provider's transient failure."),
    Setting("NOTIFY_COUPON_WITHDRAW_SECONDS", "60",
            "How often notifications asks the shop to delete the unused message coupons of "
            "erased customers, and the first wait before a failed deletion is tried again "
            "(doubling)."),
    Setting("NOTIFY_COUPON_WITHDRAW_MAX_SECONDS", "3600",
            "Longest wait between tries to delete an erased customer's message coupon."),
    Setting("TEMPLATE_EMAIL_MAX_CHARS", "200000",
            "Longest rendered part of an email (subject, HTML or text), and longest value a "
            "template may make while rendering one; a template over it is refused when saved or "
            "previewed, and its send fails for good."),
    Setting("TEMPLATE_SMS_MAX_CHARS", "1600",
            "Longest rendered SMS body (Twilio's limit), likewise."),
    Setting("TEMPLATE_RENDER_SECONDS", "1",
            "Longest time rendering one message (all its parts) may take, likewise."),
    Setting("GDPR_SERVICES", "customer_sync,segmentation,loyalty,notifications",
            "The data-owning services a GDPR request asks (exports, erasure confirmations, "
            "verification)."),
    Setting("GDPR_PROCESS_SECONDS", "10", "How often gdpr works through verified requests."),
    Setting("GDPR_RPC_TIMEOUT_SECONDS", "10",
            "How long gdpr waits for a service's answer before trying again later."),
    Setting("GDPR_RETRY_SECONDS", "60", "Wait before a request step that could not finish is "
            "tried again."),
    Setting("GDPR_CONFIRMATION_MINUTES", "60", "After this long without a service's erasure "
            "confirmation it is overdue: the erasure is asked again and the service named."),
    Setting(
        "SEGMENT_RECOMPUTE_MINUTES",
        "60",
        "How often segmentation recomputes every store (segments drift with time; RFM and the "
        "top-10% cutoff are store-wide).",
    ),
    Setting("GATEWAY_WEB_SERVER_ADDRESS", "0.0.0.0:8080",
            "Address of the gateway's HTTP API (`/api/v1`) and its health endpoints."),
    Setting("GATEWAY_RPC_TIMEOUT_SECONDS", "10",
            "How long the gateway waits for a service's answer before it answers 504."),
    Setting("GATEWAY_RATE_LIMIT_PER_MINUTE", "600",
            "Requests a minute an API key may make, per gateway instance, unless the key sets "
            "its own limit; bursts may spend the whole minute's allowance at once."),
    Setting("GATEWAY_AUTH_FAILURES_PER_MINUTE", "30",
            "Failed API key checks a minute one client address may make, per gateway "
            "instance; past that the address is answered 429 with Retry-After, before any key "
            "is looked up, until it has waited. Behind a proxy every client has the proxy's "
            "address. 0: no limit."),
    Setting("GATEWAY_KEY_CACHE_SECONDS", "30",
            "How long the gateway trusts an API key check. A revocation does not wait for it: "
            "every gateway drops the key on the `api_key.revoked` broadcast, key management is "
            "always checked uncached, and an instance whose broadcast connection is down "
            "checks every key uncached, then forgets its whole cache when it is back."),
    Setting("GATEWAY_MAX_BODY_BYTES", "1048576", "Largest JSON request body the gateway reads."),
    Setting("GATEWAY_MAX_IMPORT_BYTES", "5242880", "Largest CSV file the import takes."),
    Setting("CONSOLE_SESSION_SECRET", "",
            "Secret (at least 16 characters) that encrypts and signs the admin console's "
            "session cookie; the same on every gateway instance. Empty: a random secret per "
            "process, so sessions end at a restart (logged at start)."),
    Setting("CONSOLE_SESSION_IDLE_MINUTES", "30",
            "An admin console session ends after this long without a request (kept by "
            f"customer_sync, for every copy of the cookie; at most "
            f"{CONSOLE_SESSION_IDLE_MINUTES_MAX})."),
    Setting("CONSOLE_SESSION_MAX_HOURS", "12",
            "An admin console session ends this long after sign-in, however busy (at most "
            f"{CONSOLE_SESSION_MAX_HOURS_MAX})."),
    Setting("CONSOLE_COOKIE_SECURE", "auto",
            "`Secure` flag of the console's cookie: `auto` (when the request came over https, "
            "directly or as `X-Forwarded-Proto: https` from a TLS proxy), `true` or `false`."),
    Setting("WOO_HTTP_TIMEOUT_SECONDS", "30", "Timeout of one request to a shop's REST API."),
    Setting("WOO_MAX_RETRIES", "6", "Retries of a shop API request on 429, 5xx and network errors."),
    Setting("WOO_COUPON_RETRIES", "1", "Retries of one coupon write to a shop within a call; "
            "the rewards and messages that need it retry later with their own backoff."),
    Setting("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672",
            "RabbitMQ management API that `companion health` reads queue depths from."),
    Setting("RABBITMQ_MANAGEMENT_USER", "",
            "Its user (empty: the user in RABBITMQ_MANAGEMENT_URL, else in AMQP_URI)."),
    Setting("RABBITMQ_MANAGEMENT_PASSWORD", "",
            "Its password (secret; empty: as for the user)."),
    # -- deployment: queue type and TLS (deploy/README.md) ------------------------------------
    Setting("AMQP_QUEUE_TYPE", "classic",
            "Type of the durable queues the services declare (RPC, event handlers, retries, "
            "parked): `classic`, or `quorum` on a RabbitMQ cluster. Per-process reply queues "
            "stay classic."),
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

    `settings` are the variables this Config knows (all of `SETTINGS` by default), so a name
    nobody declared is refused rather than read as an empty default."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 settings: Iterable[Setting] = SETTINGS, **overrides: str) -> None:
        source = dict(os.environ if env is None else env)
        source.update({k: str(v) for k, v in overrides.items()})
        self._env = source
        self.settings: tuple[Setting, ...] = tuple(settings)
        self._defaults = {s.name: s.default for s in self.settings}

    def get(self, name: str) -> str:
        if name not in self._defaults:
            raise KeyError(f"unknown setting {name!r}: add it to shared.config.SETTINGS")
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
    config built without them knows `SETTINGS`."""
    declared = container_config.get(DECLARED_SETTINGS_KEY)
    settings = declared if isinstance(declared, tuple) else SETTINGS
    names = {s.name for s in settings}
    return Config({k: str(v) for k, v in container_config.items() if k in names},
                  settings=settings)
