"""The environment variables customer_sync reads beyond the shared library's: the webhook door, its
inbox, the activity timeline, reconciliation and the shop's REST API.

Declared here, beside the code that reads them, and merged with the shared ones by
`services.registry.settings()`; it imports only shared.config, so the runner, the operator tools
and the docs generator can read it without importing the service.
"""
from __future__ import annotations

from shared.config import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("CUSTOMER_TIMELINE_BATCH_SIZE", "100",
            "Most events of one kind (tags, segments, points, rewards, messages sent, consent) "
            "customer_sync puts on timelines at once, with one read of the customers and one "
            "write of the entries (1 to 1000; docs/batching.md)."),
    Setting("CUSTOMER_TIMELINE_BATCH_WAIT_MS", "50",
            "Longest those handlers wait after a batch's first event for it to fill "
            "(0 to 60000 ms)."),
    Setting("WEBHOOK_MAX_BODY_BYTES", str(1024 * 1024), "Largest webhook body accepted (413 above)."),
    Setting(
        "INBOX_APPLY",
        "here",
        "Where the webhook deliveries customer_sync records are applied: `here`, by worker "
        "threads of the process that answers the webhooks (one process is enough), or "
        "`applier`, by separate `python -m services customer_sync_applier` processes sharing "
        "its database, told of each delivery over the `customer_sync.inbox` queue, so that "
        "applying never slows the answers (the shipped deployment).",
    ),
    Setting(
        "INBOX_APPLIER_CONCURRENCY",
        "4",
        "Deliveries one customer_sync_applier process applies at once. Applying is CPU work in "
        "one interpreter: more applier processes apply faster, more at once in one process "
        "only queue more commands at the database (and the door's inserts behind them).",
    ),
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
    Setting(
        "MATCH_KEYS_BATCH_SECONDS",
        "60",
        "How often customers written before duplicate match keys existed are looked for and "
        "given theirs, and a store whose country changed has its customers' keys computed "
        "again; 500 at a time (batches follow at once while some are left).",
    ),
    Setting(
        "COMPANY_SWEEP_SECONDS",
        "30",
        "How often customer_sync looks for company and custom field work left to do: "
        "customers already there joining a company by their email domain (after a store "
        "turned matching on, or a company got a domain), a company's or a custom field's "
        "deletion that stopped short, and customers holding a company that is gone; 200 "
        "customers at a time (batches follow at once while some are left).",
    ),
    Setting("RECONCILE_INTERVAL_MINUTES", "10", "Default interval of a store's REST reconciliation."),
    Setting("RECONCILE_POLL_SECONDS", "30", "How often stores due for reconciliation are looked for."),
    Setting(
        "RECONCILE_FULL_CUSTOMER_SCAN_HOURS",
        "24",
        "Interval of a full customer scan (the REST API cannot filter customers by modification).",
    ),
    Setting("WOO_HTTP_TIMEOUT_SECONDS", "30", "Timeout of one request to a shop's REST API."),
    Setting("WOO_MAX_RETRIES", "6", "Retries of a shop API request on 429, 5xx and network errors."),
    Setting("WOO_COUPON_RETRIES", "1", "Retries of one coupon write to a shop within a call; "
            "the rewards and messages that need it retry later with their own backoff."),
)
