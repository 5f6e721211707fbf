"""The daily run: points and credit that fall due expire, warnings of points expiring soon go
out, and every tier is looked at again, since points leave the 12-month window with time and no
event says so. It also finishes ledger copies a crash left in account journals."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import eventlet

from services.loyalty.accounts import Accounts

log = logging.getLogger(__name__)


def run_daily(accounts: Accounts, notify: Callable[[Iterable[tuple[str, str]]], None]) -> dict:
    """One pass over every active account; an account that fails is left to the next pass.
    `notify` is told of the documents that owe events."""
    moved = accounts.storage.ledger.sweep()
    counts = {"accounts": 0, "changed": 0, "journal_entries_moved": moved}
    for store_id, customer_id in accounts.active_accounts():
        counts["accounts"] += 1
        try:
            outcome = accounts.daily(store_id, customer_id)
        except Exception:
            log.exception("daily run failed for an account; the next run retries",
                          extra={"store_id": store_id})
            continue
        if outcome.entries or outcome.events:
            counts["changed"] += 1
            notify(outcome.touched)
        eventlet.sleep(0)
    log.info("loyalty daily run", extra=counts)
    return counts
