"""Every service this deployment can run, by name, how to load one, and the settings each reads.

Its own module, importing nothing of the services but their settings modules (which import only
shared.config), so that the runner and the operator tools can name the services and build their
configuration without starting or importing any of them.
"""
from __future__ import annotations

import importlib
from typing import Iterable

from shared.config import SETTINGS as SHARED_SETTINGS, Setting

# name -> "module:Class".
SERVICES = {
    "customer_sync": "services.customer_sync.service:CustomerSyncService",
    "segmentation": "services.segmentation.service:SegmentationService",
    "loyalty": "services.loyalty.service:LoyaltyService",
    "notifications": "services.notifications.service:NotificationsService",
    "gdpr": "services.gdpr.service:GdprService",
    "gateway": "services.gateway.service:GatewayService",
}

# Processes that run one part of a service, by name: (the service, "module:Class"). A part is
# its service in another process (same nameko name, database, settings and broker user), so
# it never runs in the same process as the whole service. customer_sync's applier applies the
# webhook deliveries its door records (INBOX_APPLY=applier, services/customer_sync/applier.py).
SERVICE_PARTS = {
    "customer_sync_applier": ("customer_sync",
                              "services.customer_sync.applier:CustomerSyncApplier"),
}


def runnable() -> dict[str, str]:
    """Every name `python -m services` runs: the services, then their parts."""
    return {**SERVICES, **{name: path for name, (_, path) in SERVICE_PARTS.items()}}


def owner_of(name: str) -> str:
    """The service a runnable name belongs to (a service owns itself)."""
    return SERVICE_PARTS[name][0] if name in SERVICE_PARTS else name


def load_service(path: str) -> type:
    """The service class a "module:Class" path names, importing its module only now."""
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_all() -> dict[str, type]:
    """Every registered service's class, by name (imports every service)."""
    return {name: load_service(path) for name, path in SERVICES.items()}


def settings_by_owner(names: Iterable[str] | None = None) -> dict[str, tuple[Setting, ...]]:
    """The shared library's settings ("shared") and each named service's own (default: every
    service's), in that order: what the configuration page lists, grouped as declared."""
    owners: dict[str, tuple[Setting, ...]] = {"shared": SHARED_SETTINGS}
    for name in SERVICES if names is None else names:
        if name not in SERVICES:
            raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
        owners[name] = importlib.import_module(f"services.{name}.settings").SETTINGS
    return owners


def merge(owners: dict[str, tuple[Setting, ...]]) -> tuple[Setting, ...]:
    """One tuple of every setting the owners declare, each name once. Two owners may declare
    the same variable only with the same default: a process running both reads it once, and
    could not honour two defaults."""
    merged: dict[str, Setting] = {}
    declared_by: dict[str, str] = {}
    for owner, declared in owners.items():
        for setting in declared:
            known = merged.get(setting.name)
            if known is None:
                merged[setting.name] = setting
                declared_by[setting.name] = owner
            elif known.default != setting.default:
                raise ValueError(
                    f"{setting.name} is declared by {declared_by[setting.name]} with default "
                    f"{known.default!r} and by {owner} with default {setting.default!r}")
    return tuple(merged.values())


def settings(names: Iterable[str] | None = None) -> tuple[Setting, ...]:
    """The shared library's settings plus those of each named service (default: every
    service): what a Config for a process running those services must know."""
    return merge(settings_by_owner(names))
