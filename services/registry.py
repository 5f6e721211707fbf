"""Every service this deployment can run, by name, and how to load one.

Its own module, importing nothing of the services, so that the runner and the operator tools
can name the services without starting or importing any of them.
"""
from __future__ import annotations

import importlib

# name -> "module:Class".
SERVICES = {
    "customer_sync": "services.customer_sync.service:CustomerSyncService",
    "segmentation": "services.segmentation.service:SegmentationService",
    "loyalty": "services.loyalty.service:LoyaltyService",
    "notifications": "services.notifications.service:NotificationsService",
    "gdpr": "services.gdpr.service:GdprService",
    "gateway": "services.gateway.service:GatewayService",
}


def load_service(path: str) -> type:
    """The service class a "module:Class" path names, importing its module only now."""
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_all() -> dict[str, type]:
    """Every registered service's class, by name (imports every service)."""
    return {name: load_service(path) for name, path in SERVICES.items()}
