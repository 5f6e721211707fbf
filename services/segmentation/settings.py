"""The environment variables segmentation reads beyond the shared library's: how often every store
is recomputed.

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
)
