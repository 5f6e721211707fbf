"""Matching customers to companies by their email's domain: a store option (off unless turned
on), kept with the store's other settings on its document, read through the stores' short
cache because every customer write asks. The write paths (core/sync.py, core/importing.py,
privacy/rectify.py) ask `joined` for the company a customer joins in the same write; the
customers already there join through a sweep (crm/companies.py), requested here."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from services.customer_sync.crm.company_rules import MATCH_EMAIL_DOMAIN, joins_by_domain
from services.customer_sync.repository import COMPANY_MATCHING_FIELD, CustomerSyncStorage
from shared.errors import NotFound
from shared.times import utcnow

SETTINGS_FIELD = COMPANY_MATCHING_FIELD
# A sweep's place: {"requested_at", "after_id"} on the store's document, so any instance may
# carry it on and a crash resumes where it stopped.
SWEEP_FIELD = "company_sweep"


class CompanyMatching:
    """The store's matching option, and the company a customer joins by it."""

    def __init__(self, storage: CustomerSyncStorage,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.stores = storage.stores.collection
        self.clock = clock

    def enabled(self, store_id: str) -> bool:
        """Read through the stores' short cache, which the webhook door keeps warm: asking
        costs a write path no round trip (a change reaches other instances within seconds)."""
        store = self.storage.stores.get_cached(store_id)
        return store is not None and store.match_email_domain

    def get(self, store_id: str) -> dict:
        doc = self.stores.find_one({"_id": store_id}, {SETTINGS_FIELD: 1})
        if doc is None:
            raise NotFound(f"no store {store_id}", {"fields": {"store_id": ["not found"]}})
        return {MATCH_EMAIL_DOMAIN: bool((doc.get(SETTINGS_FIELD) or {}).get(MATCH_EMAIL_DOMAIN))}

    def save(self, store_id: str, settings: dict, actor: str) -> bool:
        """Store the option; True when it was turned on by this call (a sweep is due)."""
        before = self.get(store_id)[MATCH_EMAIL_DOMAIN]
        self.stores.update_one({"_id": store_id}, {"$set": {SETTINGS_FIELD: {
            **settings, "updated_at": self.clock(), "updated_by": actor}}})
        self.storage.stores.forget_cached(store_id)
        return settings[MATCH_EMAIL_DOMAIN] and not before

    def joined(self, store_id: str, customer: dict) -> dict:
        """`{"company_id": id}` when the customer as it is about to be written joins a company
        by its email domain (the option on, no company yet, a company with that domain);
        else {}."""
        domain = joins_by_domain(customer)
        if domain is None or not self.enabled(store_id):
            return {}
        found = self.storage.companies.by_domains(store_id, [domain])
        return {"company_id": found[domain]} if domain in found else {}

    # -- the sweep's place ------------------------------------------------------------------
    def request_sweep(self, store_id: str) -> None:
        self.stores.update_one({"_id": store_id}, {"$set": {SWEEP_FIELD: {
            "requested_at": self.clock(), "after_id": None}}})

    def pending_sweep(self) -> dict | None:
        """One store with a sweep to carry on ({"_id", SWEEP_FIELD: {...}}), or None."""
        return self.stores.find_one({SWEEP_FIELD: {"$exists": True}}, {SWEEP_FIELD: 1})

    def advance_sweep(self, store_id: str, requested_at: datetime, after_id: str | None) -> None:
        """Record how far the sweep got, or end it (`after_id` None), unless it was asked for
        again meanwhile (then it starts over)."""
        change = ({"$set": {f"{SWEEP_FIELD}.after_id": after_id}} if after_id is not None
                  else {"$unset": {SWEEP_FIELD: ""}})
        self.stores.update_one({"_id": store_id, f"{SWEEP_FIELD}.requested_at": requested_at},
                               change)
