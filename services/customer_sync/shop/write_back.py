"""What every use case that writes a customer back to the shop is built from."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.shop.woo_client import WooClient
from shared.times import utcnow


class ShopWriteBack:
    """A use case that changes a customer in the shop first and then applies the shop's answer
    here (staff edits, rectifications, deletions): it needs the repositories, the sync that
    applies the answer, a REST client per store, and the clock that dates its audit entries."""

    def __init__(self, storage: CustomerSyncStorage, sync: CustomerSync,
                 client_factory: Callable[[Store], WooClient],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.sync = sync
        self.client_factory = client_factory
        self.clock = clock
