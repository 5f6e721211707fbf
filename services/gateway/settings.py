"""The environment variables gateway reads beyond the shared library's: its HTTP API, rate limits,
API key cache, body bounds and the admin console's session.

Declared here, beside the code that reads them, and merged with the shared ones by
`services.registry.settings()`; it imports only shared.config, so the runner, the operator tools
and the docs generator can read it without importing the service.
"""
from __future__ import annotations

from shared.config import CONSOLE_SESSION_IDLE_MINUTES_MAX, CONSOLE_SESSION_MAX_HOURS_MAX, Setting

SETTINGS: tuple[Setting, ...] = (
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
)
