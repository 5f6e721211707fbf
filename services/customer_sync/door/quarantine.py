"""Quarantined webhook deliveries: what an operator lists, inspects and replays.

A delivery answered 200 that then cannot be applied is kept in the inbox as `quarantined`
(inbox.py) rather than dropped, since WooCommerce never sends it again. Once the cause is fixed
(a deploy, a corrected store), replaying puts it back to be applied through the same path as
any delivery; one that fails again is quarantined again, with its new error.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from services.customer_sync.door.inbox import delivery_payload
from services.customer_sync.repository import CustomerSyncStorage
from services.customer_sync.schemas import PageSchema, load, require_text
from shared.errors import NotFound, ValidationError
from shared.paging import decode_cursor, encode_cursor
from shared.times import iso

MAX_REPLAY = 1000  # deliveries released by one call; `--all` on more says how many are left
MAX_IDS = 1000


def quarantine_view(doc: dict) -> dict:
    """What an operator needs to judge a delivery, without what the shop said about people."""
    return {
        "quarantine_id": doc.get("quarantine_id"),
        "store_id": doc.get("store_id"),
        "topic": doc.get("topic"),
        "resource_id": doc.get("resource_id"),
        "error": doc.get("error"),
        "attempts": doc.get("attempts"),
        "replays": doc.get("replays", 0),
        "received_at": iso(doc.get("received_at")),
        "quarantined_at": iso(doc.get("quarantined_at")),
    }


class WebhookQuarantine:
    """List, show and release a store's quarantined deliveries."""

    def __init__(self, storage: CustomerSyncStorage) -> None:
        self.storage = storage

    def _store(self, store_id: Any) -> str:
        store_id = require_text(store_id, "store_id")
        if self.storage.stores.get(store_id) is None:
            raise NotFound(f"no store {store_id}")
        return store_id

    def list(self, store_id: Any, page: Any = None) -> dict:
        """Oldest first, a page at a time (`next_cursor`)."""
        store_id = self._store(store_id)
        paging = load(PageSchema(), page, "page")
        after = None
        if paging["cursor"]:
            try:
                at, key = decode_cursor(paging["cursor"])
                after = (datetime.fromisoformat(at), str(key))
            except (ValueError, TypeError):
                raise ValidationError("page.cursor is not valid",
                                      {"fields": {"page": ["cursor"]}}) from None
        docs = self.storage.inbox.quarantined(store_id, after, paging["size"] + 1)
        more = len(docs) > paging["size"]
        docs = docs[: paging["size"]]
        next_cursor = None
        if more and docs:
            next_cursor = encode_cursor((iso(docs[-1]["quarantined_at"]), docs[-1]["_id"]))
        return {"items": [quarantine_view(d) for d in docs], "next_cursor": next_cursor}

    def show(self, store_id: Any, quarantine_id: Any) -> dict:
        """One delivery with the body the shop sent, to find what is wrong with it."""
        store_id = self._store(store_id)
        quarantine_id = require_text(quarantine_id, "quarantine_id")
        doc = self.storage.inbox.collection.find_one(
            {"store_id": store_id, "status": "quarantined", "quarantine_id": quarantine_id})
        if doc is None:
            raise NotFound(f"no quarantined delivery {quarantine_id} in store {store_id}")
        try:
            payload = delivery_payload(doc)
        except ValueError:
            payload = None
        view = {**quarantine_view(doc), "payload": payload}
        if payload is None:  # not JSON any more (written before the door parsed bodies)
            view["body"] = (doc.get("body") or "")[:100_000]
        return view

    def release(self, store_id: Any, quarantine_ids: Any = None,
                everything: bool = False) -> tuple[dict, list[str]]:
        """Put the named deliveries (or all of the store's) back to be applied. Answers what
        to tell the operator, and the inbox keys for the workers."""
        store_id = self._store(store_id)
        if quarantine_ids is None and not everything:
            raise ValidationError("name deliveries with quarantine_ids, or replay all",
                                  {"fields": {"quarantine_ids": ["required"]}})
        ids = None
        if quarantine_ids is not None:
            if (not isinstance(quarantine_ids, list) or not 0 < len(quarantine_ids) <= MAX_IDS
                    or not all(isinstance(i, str) and 0 < len(i) <= 64 for i in quarantine_ids)):
                raise ValidationError(
                    f"quarantine_ids must be a list of 1 to {MAX_IDS} ids",
                    {"fields": {"quarantine_ids": ["not a list of ids"]}})
            ids = sorted(set(quarantine_ids))
        released = self.storage.inbox.release(store_id, ids, MAX_REPLAY)
        replayed = sorted(d.get("quarantine_id") or "" for d in released)
        answer = {"store_id": store_id, "replayed": replayed,
                  "not_found": sorted(set(ids) - set(replayed)) if ids is not None else [],
                  "remaining": self.storage.inbox.counts(store_id).get("quarantined", 0)}
        return answer, [d["_id"] for d in released]
