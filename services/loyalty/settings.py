"""The environment variables loyalty reads beyond the shared library's: its daily run, the
reward coupons at the shop and the batches of order events.

Declared here, beside the code that reads them, and merged with the shared ones by
`services.registry.settings()`; it imports only shared.config, so the runner, the operator tools
and the docs generator can read it without importing the service.
"""
from __future__ import annotations

from shared.config import Setting

SETTINGS: tuple[Setting, ...] = (
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
    Setting("LOYALTY_ORDER_BATCH_SIZE", "100",
            "Most order events (of one type) loyalty applies as one batch: one read and one "
            "write of the accounts they name (1 to 1000; the broker hands it twice this many "
            "at a time)."),
    Setting("LOYALTY_ORDER_BATCH_WAIT_MS", "50",
            "Longest wait, in milliseconds, after a batch of order events' first event for "
            "more to join it (0 to 60000)."),
)
