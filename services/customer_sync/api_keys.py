"""API keys for the gateway, per store: customer_sync keeps them with the stores' other secrets.

The gateway owns no data, so it asks here. A key is shown once, at creation, as
`wcc_<key_id>_<secret>`; only a SHA-256 of the secret is stored. The secret is 256 random
bits, so a fast hash is enough (a slow password hash guards low-entropy secrets, which these
are not), and the lookup is by `key_id` with a constant-time comparison of the hashes.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo import ASCENDING
from pymongo.collection import Collection

from shared.errors import NotFound, ValidationError
from shared.events import build_event
from shared.outbox import push_events
from shared.times import iso, utcnow

SCOPES = ("read", "write", "gdpr", "admin")
KEY_PREFIX = "wcc"
_KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")
# Remembering when a key was last used costs a write; once a minute per key is enough to tell
# an operator which keys are idle.
_LAST_USED_GRANULARITY = timedelta(minutes=1)
# Event ids derived from what they name: a key is revoked once, so its event has one id.
_EVENT_NAMESPACE = uuid.UUID("9a4c1f52-6a0e-4c8e-9a55-3f1d2b7e8c01")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_view(doc: dict) -> dict:
    return {
        "key_id": doc["_id"], "store_id": doc["store_id"], "name": doc["name"],
        "scopes": list(doc["scopes"]), "rate_limit_per_minute": doc.get("rate_limit_per_minute"),
        "created_at": iso(doc.get("created_at")), "created_by": doc.get("created_by"),
        "last_used_at": iso(doc.get("last_used_at")),
        "revoked_at": iso(doc.get("revoked_at")), "revoked_by": doc.get("revoked_by"),
    }


def validate_scopes(scopes) -> list[str]:
    if isinstance(scopes, str):
        scopes = [s.strip() for s in scopes.split(",") if s.strip()]
    if not isinstance(scopes, (list, tuple)) or not scopes:
        raise ValidationError("scopes must be a non-empty list",
                              {"fields": {"scopes": [f"choose from {', '.join(SCOPES)}"]}})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValidationError(f"unknown scope(s): {', '.join(map(str, unknown))}",
                              {"fields": {"scopes": [f"choose from {', '.join(SCOPES)}"]}})
    return [s for s in SCOPES if s in scopes]


class ApiKeys:
    def __init__(self, collection: Collection,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.collection = collection
        self.now = now

    def ensure_indexes(self) -> None:
        self.collection.create_index([("store_id", ASCENDING), ("created_at", ASCENDING)])

    def create(self, store_id: str, name: str, scopes, actor: str,
               rate_limit_per_minute: int | None = None) -> dict:
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ValidationError("name must be 1 to 100 characters",
                                  {"fields": {"name": ["1 to 100 characters"]}})
        if rate_limit_per_minute is not None and (
                isinstance(rate_limit_per_minute, bool) or not isinstance(rate_limit_per_minute, int)
                or not 1 <= rate_limit_per_minute <= 100_000):
            raise ValidationError("rate_limit_per_minute must be an integer from 1 to 100000",
                                  {"fields": {"rate_limit_per_minute": ["1 to 100000"]}})
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        doc = {"_id": key_id, "store_id": store_id, "name": name.strip(),
               "scopes": validate_scopes(scopes), "secret_sha256": _hash(secret),
               "rate_limit_per_minute": rate_limit_per_minute, "created_at": self.now(),
               "created_by": actor, "last_used_at": None, "revoked_at": None}
        self.collection.insert_one(doc)
        return {**key_view(doc), "api_key": f"{KEY_PREFIX}_{key_id}_{secret}"}

    def list(self, store_id: str, include_revoked: bool = False) -> list[dict]:
        query: dict = {"store_id": store_id}
        if not include_revoked:
            query["revoked_at"] = None
        return [key_view(d) for d in self.collection.find(query).sort("created_at", ASCENDING)]

    def revoke(self, store_id: str, key_id: str, actor: str) -> dict:
        """Revoke a live key. Its `api_key.revoked` event rides in the same write (outbox), so
        every gateway instance hears of it even if this process dies right after."""
        now = self.now()
        event = build_event("api_key.revoked", store_id=store_id,
                            data={"key_id": key_id, "revoked_at": now.isoformat()},
                            event_id=str(uuid.uuid5(_EVENT_NAMESPACE, f"api_key.revoked:{key_id}")),
                            occurred_at=now)
        doc = self.collection.find_one_and_update(
            {"_id": key_id, "store_id": store_id, "revoked_at": None},
            {"$set": {"revoked_at": now, "revoked_by": actor}, "$push": push_events([event])},
            return_document=True)
        if doc is None:
            raise NotFound(f"no active API key {key_id} in store {store_id}")
        return key_view(doc)

    def live(self, key_id: str) -> dict | None:
        """The key's view when it exists and is not revoked, read now (never cached)."""
        doc = self.collection.find_one({"_id": key_id, "revoked_at": None})
        return key_view(doc) if doc is not None else None

    def authenticate(self, presented: str) -> dict:
        """The key's view when `presented` is a live key; NotFound otherwise (one message for
        every failure, so a caller learns nothing about which part was wrong)."""
        match = _KEY_PATTERN.match(presented or "")
        doc = self.collection.find_one({"_id": match.group(1)}) if match else None
        if doc is None or doc.get("revoked_at") is not None or not hmac.compare_digest(
                doc["secret_sha256"], _hash(match.group(2))):
            raise NotFound("unknown or revoked API key")
        now = self.now()
        last = doc.get("last_used_at")
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=timezone.utc)
        if last is None or now - last >= _LAST_USED_GRANULARITY:
            self.collection.update_one({"_id": doc["_id"]}, {"$set": {"last_used_at": now}})
            doc["last_used_at"] = now
        return key_view(doc)
