"""The environment variables segmentation reads beyond the shared library's: how often every store
is recomputed, and how its order handlers batch.

Declared here, beside the code that reads them, and merged with the shared ones by
`services.registry.settings()`; it imports only shared.config, so the runner, the operator tools
and the docs generator can read it without importing the service.
"""
from __future__ import annotations

from shared.config import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SEGMENT_RECOMPUTE_MINUTES",
        "60",
        "How often segmentation recomputes every store (segments drift with time; RFM and the "
        "top-10% cutoff are store-wide).",
    ),
    Setting(
        "SEGMENT_ORDER_BATCH_SIZE",
        "100",
        "Most order events (placed, updated, refunded, cancelled: each handler its own) "
        "segmentation applies in one batch, with one read of their profiles and one bulk "
        "write (1 to 1000); its consumer prefetches twice as many.",
    ),
    Setting(
        "SEGMENT_ORDER_BATCH_WAIT_MS",
        "50",
        "Longest segmentation's order handlers wait after a batch's first event for it to "
        "fill (0 to 60000 ms); a batch goes as soon as it is full.",
    ),
    Setting(
        "SEGMENT_CUSTOMER_BATCH_SIZE",
        "100",
        "Most customer.created or customer.updated events (each handler its own) "
        "segmentation applies in one batch, with one read of their profiles and one bulk "
        "write (1 to 1000); its consumer prefetches twice as many.",
    ),
    Setting(
        "SEGMENT_CUSTOMER_BATCH_WAIT_MS",
        "50",
        "Longest segmentation's customer handlers wait after a batch's first event for it "
        "to fill (0 to 60000 ms); a batch goes as soon as it is full.",
    ),
)

