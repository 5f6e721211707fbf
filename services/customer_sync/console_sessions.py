"""The admin console's sessions, kept with the API keys they are opened with.

A console cookie alone cannot be taken back: every copy of it stays valid until it expires.
So each sign-in opens a record here, and every console request, on any gateway instance,
asks whether it is still open. Sign-out, revoking the key, the idle timeout and the maximum
age each close it, for every copy of the cookie at once.

The browser holds `wcs_<session_id>_<secret>` (inside the gateway's sealed cookie); only a
SHA-256 of the secret is stored, as with API keys: 256 random bits need no slow hash.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Callable

from pymongo import ASCENDING
from pymongo.collection import Collection

from services.customer_sync.api_keys import ApiKeys
from shared.config import CONSOLE_SESSION_IDLE_MINUTES_MAX, CONSOLE_SESSION_MAX_HOURS_MAX
from shared.errors import NotFound, ValidationError
from shared.times import utcnow

SESSION_PREFIX = "wcs"
_TOKEN_PATTERN = re.compile(rf"^{SESSION_PREFIX}_([0-9a-f]{{32}})_([A-Za-z0-9_-]{{43}})$")
# Bounds on what a gateway may ask for: the gateway's own settings stop at the same ones.
MAX_IDLE_SECONDS = CONSOLE_SESSION_IDLE_MINUTES_MAX * 60
MAX_AGE_SECONDS = CONSOLE_SESSION_MAX_HOURS_MAX * 3600
# Remembering the last request costs a write; the idle timeout need not be finer than this.
_TOUCH_GRANULARITY = timedelta(seconds=15)
# Closed and expired records are kept this long (for an operator's questions), then dropped.
_RETENTION = timedelta(days=7)
ENDED_SIGNED_OUT = "signed_out"
ENDED_KEY_REVOKED = "key_revoked"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _seconds(value: object, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= maximum:
        raise ValidationError(f"{name} must be a number of seconds from 1 to {maximum}",
                              {"fields": {name: [f"1 to {maximum}"]}})
    return int(value)


class ConsoleSessions:
    def __init__(self, collection: Collection, api_keys: ApiKeys,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.collection = collection
        self.api_keys = api_keys
        self.now = now

    def ensure_indexes(self) -> None:
        self.collection.create_index([("key_id", ASCENDING)])
        # MongoDB's TTL monitor removes a record this long after it could last have been used.
        self.collection.create_index([("purge_after", ASCENDING)], expireAfterSeconds=0)

    def open(self, api_key: str, idle_seconds: int, max_age_seconds: int) -> dict:
        """Sign in: check the key with no cache in between, and open a session for it. The
        answer's `session` is the only time its secret is shown."""
        idle = _seconds(idle_seconds, "idle_seconds", MAX_IDLE_SECONDS)
        max_age = _seconds(max_age_seconds, "max_age_seconds", MAX_AGE_SECONDS)
        key = self.api_keys.authenticate(api_key)  # NotFound for anything but a live key
        session_id, secret = secrets.token_hex(16), secrets.token_urlsafe(32)
        now = self.now()
        expires_at = now + timedelta(seconds=max_age)
        self.collection.insert_one({
            "_id": session_id, "store_id": key["store_id"], "key_id": key["key_id"],
            "secret_sha256": _hash(secret), "created_at": now, "last_seen_at": now,
            "idle_seconds": idle, "expires_at": expires_at, "ended_at": None,
            "ended_because": None, "purge_after": expires_at + _RETENTION})
        return {"session": f"{SESSION_PREFIX}_{session_id}_{secret}", "session_id": session_id,
                "expires_at": expires_at.isoformat(), "key": key}

    def check(self, token: str) -> dict:
        """The open session's key, read now; NotFound (one message for every reason) when the
        session is unknown, forged, signed out, idle too long, too old or its key revoked."""
        doc = self._find(token)
        now = self.now()
        if doc is None or doc.get("ended_at") is not None or now >= doc["expires_at"] \
                or now - doc["last_seen_at"] > timedelta(seconds=doc["idle_seconds"]):
            raise NotFound("no open console session")
        key = self.api_keys.live(doc["key_id"])
        if key is None:
            raise NotFound("no open console session")
        if now - doc["last_seen_at"] >= _TOUCH_GRANULARITY:
            self.collection.update_one({"_id": doc["_id"], "ended_at": None},
                                       {"$set": {"last_seen_at": now}})
        return {"session_id": doc["_id"], "expires_at": doc["expires_at"].isoformat(),
                "key": key}

    def end(self, token: str) -> bool:
        """Sign out: the session ends for every copy of its cookie. False when there was no
        open session to end (signing out twice is no error)."""
        doc = self._find(token)
        if doc is None:
            return False
        result = self.collection.update_one(
            {"_id": doc["_id"], "ended_at": None},
            {"$set": {"ended_at": self.now(), "ended_because": ENDED_SIGNED_OUT}})
        return result.modified_count == 1

    def end_for_key(self, key_id: str) -> int:
        """Every open session of a revoked key ends with it. (check() refuses them anyway,
        since it reads the key; this records why they ended.)"""
        result = self.collection.update_many(
            {"key_id": key_id, "ended_at": None},
            {"$set": {"ended_at": self.now(), "ended_because": ENDED_KEY_REVOKED}})
        return result.modified_count

    def _find(self, token: object) -> dict | None:
        match = _TOKEN_PATTERN.match(token) if isinstance(token, str) else None
        doc = self.collection.find_one({"_id": match.group(1)}) if match else None
        if doc is None or not hmac.compare_digest(doc["secret_sha256"], _hash(match.group(2))):
            return None
        return doc
