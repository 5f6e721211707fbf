"""The environment variables gdpr reads beyond the shared library's: which services a request asks,
and how often and how patiently it asks them.

Declared here, beside the code that reads them, and merged with the shared ones by
`services.registry.settings()`; it imports only shared.config, so the runner, the operator tools
and the docs generator can read it without importing the service.
"""
from __future__ import annotations

from shared.config import Setting

SETTINGS: tuple[Setting, ...] = (
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
)
