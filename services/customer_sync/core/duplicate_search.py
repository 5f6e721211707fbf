"""Possible duplicates of a store's customers: live records sharing a match key, grouped, scored
and paged, with what a merge screen shows of each record; and the batch step that gives keys
to customers written before match keys existed."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable

from services.customer_sync.core.duplicates import (
    BASE_SCORES,
    MATCH_KINDS,
    group_score,
    shared_kinds,
)
from services.customer_sync.repository import MATCH_KEYS_FIELD, CustomerSyncStorage
from services.customer_sync.schemas import STORE_ID, require_text
from shared.errors import ValidationError
from shared.paging import decode_cursor, encode_cursor
from shared.times import utcnow

log = logging.getLogger(__name__)

MAX_LIMIT = 200
# A group lists this many of its records (the oldest ids first); `size` says how many share
# the key. A key shared by hundreds (a shop's own test address) is no merge to make by hand.
MAX_MEMBERS = 25
KEYS_BATCH = 500
# How often the collection is looked through again for customers without keys.
KEYS_PASS_EVERY = timedelta(hours=1)
_MEMBER_FIELDS = {name: 1 for name in ("registered", "first_name", "last_name", "email", "phone",
                                       "billing", "date_created", MATCH_KEYS_FIELD)}


def _invalid(name: str, message: str) -> ValidationError:
    return ValidationError(f"{name} {message}", {"fields": {name: ["invalid"]}})


def _store_id(value: Any) -> str:
    store_id = require_text(value, "store_id")
    try:
        STORE_ID(store_id)
    except Exception:
        raise _invalid("store_id", "is not a valid store id") from None
    return store_id


def _json_time(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def member_view(doc: dict, orders_count: int) -> dict:
    """One record of a group: what staff compare before merging."""
    billing = doc.get("billing") or {}
    return {
        "customer_id": doc["_id"],
        "kind": "registered" if doc.get("registered") else "guest",
        "first_name": doc.get("first_name") or billing.get("first_name") or "",
        "last_name": doc.get("last_name") or billing.get("last_name") or "",
        "email": doc.get("email") or "",
        "phone": doc.get("phone") or billing.get("phone") or "",
        "postcode": billing.get("postcode") or "",
        "country": billing.get("country") or "",
        "orders_count": orders_count,
        "date_created": _json_time(doc.get("date_created")),
    }


class DuplicateSearch:
    def __init__(self, storage: CustomerSyncStorage,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self.clock = clock
        # Where the pass giving older customers their keys has got to, and when the next pass
        # may start: every write gives keys, so after a pass found none left the next is only
        # a check (an instance of an older version may still write customers without them).
        self._after_id: str | None = None
        self._keyed_in_pass = 0
        self._next_pass_at: datetime | None = None

    def add_missing_keys(self, batch: int = KEYS_BATCH) -> bool:
        """One batch of customers given their match keys, or re-keyed after their store's
        country changed (that first); True while more may be left."""
        if self._rekey_batch(batch):
            return True
        if self._next_pass_at is not None:
            if self.clock() < self._next_pass_at:
                return False
            self._next_pass_at = None
        done, self._after_id = self.storage.customers.add_missing_match_keys(self._after_id, batch)
        self._keyed_in_pass += done
        if done:
            log.info("match keys added to older customers",
                     extra={"customers": done, "in_this_pass": self._keyed_in_pass})
        if self._after_id is None:  # the end of the collection: the pass is over
            self._keyed_in_pass = 0
            self._next_pass_at = self.clock() + KEYS_PASS_EVERY
            return False
        return True

    def _rekey_batch(self, batch: int) -> bool:
        """A batch of a store's customers re-keyed, when a store asks; True when it did one."""
        pending = self.storage.stores.pending_rekey()
        if pending is None:
            return False
        store_id, request = pending["_id"], pending["rekey"]
        store = self.storage.stores.get(store_id)
        done, last = self.storage.customers.rekey_batch(
            store_id, store.country if store else None, request.get("after_id"), batch)
        self.storage.stores.advance_rekey(store_id, request["requested_at"], last)
        log.info("match keys computed again after the store's country changed",
                 extra={"store_id": store_id, "customers": done, "finished": last is None})
        return True

    def find(self, store_id: str, cursor: str | None = None, limit: int = 50,
             match: str | None = None) -> dict:
        """Groups of two or more live records sharing a key, strongest kind of key first
        (email, phone, name and postcode), then by group id; a group found by a weaker key
        whose members all share a stronger one is listed under that one only."""
        store_id = _store_id(store_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise _invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        if match is not None and match not in MATCH_KINDS:
            raise _invalid("match", f"must be one of {', '.join(MATCH_KINDS)}")
        kinds = [match] if match else list(MATCH_KINDS)
        start_kind, after = self._position(store_id, cursor, kinds)
        groups: list[dict] = []
        for kind in kinds[kinds.index(start_kind):]:
            self._collect(store_id, kind, after if kind == start_kind else None,
                          limit + 1 - len(groups), groups, listed_alone=match is not None)
            if len(groups) > limit:
                break
        more = len(groups) > limit
        groups = groups[:limit]
        self._add_order_counts(store_id, groups)
        next_cursor = None
        if more:
            last = groups[-1]
            next_cursor = encode_cursor([store_id, match, last["match"], last["key"]])
        for group in groups:
            del group["key"]
        return {"store_id": store_id, "groups": groups, "next_cursor": next_cursor}

    def _position(self, store_id: str, cursor: Any, kinds: list[str]) -> tuple[str, str | None]:
        if cursor is None:
            return kinds[0], None
        if not isinstance(cursor, str):
            raise _invalid("cursor", "is not a cursor of this list")
        try:
            cursor_store, cursor_match, kind, key = decode_cursor(cursor)
        except (ValueError, TypeError):
            raise _invalid("cursor", "is not a cursor of this list") from None
        if cursor_store != store_id:
            raise _invalid("cursor", "belongs to another store")
        if cursor_match != (kinds[0] if len(kinds) == 1 else None) or kind not in kinds \
                or not isinstance(key, str):
            raise _invalid("cursor", "is not a cursor of this list")
        return kind, key

    def _collect(self, store_id: str, kind: str, after: str | None, wanted: int,
                 groups: list[dict], listed_alone: bool) -> None:
        """Append up to `wanted` groups of `kind` whose key sorts after `after`."""
        customers = self.storage.customers
        for key, size in customers.shared_match_keys(store_id, kind, after):
            members = customers.sharing_match_key(store_id, kind, key, _MEMBER_FIELDS,
                                                  MAX_MEMBERS)
            if len(members) < 2:  # changed since the walk read it
                continue
            matched = shared_kinds(members) if size <= MAX_MEMBERS else [kind]
            if kind not in matched:  # changed since the walk read it
                continue
            if not listed_alone and BASE_SCORES[matched[0]] > BASE_SCORES[kind]:
                continue  # every member shares a stronger key: listed under that one
            groups.append({"group_id": f"{kind}-{key}", "match": kind, "key": key,
                           "matched": matched, "score": group_score(matched), "size": size,
                           "customers": members})
            wanted -= 1
            if wanted == 0:
                return

    def _add_order_counts(self, store_id: str, groups: list[dict]) -> None:
        ids = [doc["_id"] for group in groups for doc in group["customers"]]
        counts = self.storage.orders.counts_by_customer(store_id, ids)
        for group in groups:
            group["customers"] = [member_view(doc, counts.get(doc["_id"], 0))
                                  for doc in group["customers"]]
