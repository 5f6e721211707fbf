"""Registering shops: their URL, webhook secret and REST credentials (never handed back)."""
from __future__ import annotations

import logging

from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.schemas import StoreSchema, load

log = logging.getLogger(__name__)


class StoreAdmin:
    def __init__(self, storage: CustomerSyncStorage, default_reconcile_minutes: int) -> None:
        """`default_reconcile_minutes` is a store's reconciliation interval where its
        registration names none."""
        self.storage = storage
        self.default_interval = default_reconcile_minutes

    def register(self, settings: dict) -> dict:
        """Create or update a store; answers its public view and whether it was new."""
        data = load(StoreSchema(), settings, "store")
        # Registering again without a country keeps the one saved: it is how phone numbers
        # were read for the duplicate finder, and an update need not repeat it.
        saved = self.storage.stores.get(data["store_id"])
        store = Store(
            store_id=data["store_id"],
            shop_url=data["shop_url"] if data["shop_url"].endswith("/") else data["shop_url"] + "/",
            webhook_secret=data["webhook_secret"],
            consumer_key=data["consumer_key"],
            consumer_secret=data["consumer_secret"],
            reconcile_interval_minutes=data["reconcile_interval_minutes"] or self.default_interval,
            country=data["country"].upper() if data["country"] else (saved.country if saved else None),
        )
        created = self.storage.stores.save(store)
        if saved is not None and saved.country != store.country:
            # National phone numbers read with the old country: their keys are computed again
            # in the background (core/duplicate_search.py), a batch at a time.
            self.storage.stores.request_rekey(store.store_id)
        log.info("store %s", "registered" if created else "updated",
                 extra={"store_id": store.store_id, "shop_url": store.shop_url})
        return {**store.public(), "created": created}

    def list(self) -> list[dict]:
        return [store.public() for store in self.storage.stores.all()]
