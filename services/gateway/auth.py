"""Who is calling: the API key in `Authorization: Bearer ...` (or `X-API-Key`), its store and
scopes. Keys live in customer_sync; answers are cached briefly so a request does not cost an
extra RPC. A revocation still takes effect at once: the revoking gateway drops the key from
its cache, every other instance drops it on the `api_key.revoked` broadcast, and the routes
that create or revoke keys always ask customer_sync (no cache), so a revoked admin key cannot
make itself a successor while the broadcast is on its way. The cache is only as good as the
broadcasts heard: while an instance's broadcast connection is down it asks customer_sync every
time, and when it is back the instance forgets everything it cached (a revocation may have
gone out in between)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable

from services.gateway.problems import Problem

SCOPES = ("read", "write", "gdpr", "admin")


@dataclass(frozen=True)
class Caller:
    key_id: str
    store_id: str
    name: str
    scopes: frozenset
    rate_limit_per_minute: int | None

    @property
    def actor(self) -> str:
        return f"api-key:{self.key_id}"

    def may(self, scope: str) -> bool:
        """admin may do everything; write includes read; gdpr is its own (personal data
        exports, erasure and consent are not for every integration that can write)."""
        if "admin" in self.scopes or scope in self.scopes:
            return True
        return scope == "read" and "write" in self.scopes


def presented_key(headers) -> str | None:
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return (headers.get("X-API-Key") or "").strip() or None


def caller_from_view(view: dict) -> Caller:
    """A Caller from customer_sync's view of a key."""
    return Caller(key_id=view["key_id"], store_id=view["store_id"], name=view["name"],
                  scopes=frozenset(view["scopes"]),
                  rate_limit_per_minute=view.get("rate_limit_per_minute"))


class Authenticator:
    """Key checks, cached for `ttl_seconds` while the revocation broadcasts are heard (see
    `broadcast_lost` / `broadcast_ready`; without a broker, as in tests, they are)."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.clock = clock
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._hearing_revocations = True
        # Moves on everything that may make an answer being fetched stale (a revocation, a
        # lost or regained broadcast connection): such an answer is used, never cached.
        self._epoch = 0

    def caller(self, headers, lookup: Callable[[str], dict | None],
               uncached: bool = False) -> Caller:
        """`lookup(key)` returns the key's view from customer_sync, or None for a bad key (and
        raises when it cannot tell, so that nothing is cached). `uncached`: ask customer_sync
        whatever the cache holds (for the routes that manage keys)."""
        key = presented_key(headers)
        if key is None:
            raise Problem(401, "send an API key as 'Authorization: Bearer <key>'",
                          headers={"WWW-Authenticate": 'Bearer realm="woo-companion"'})
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = self.clock()
        cached = self._cache.get(digest) if self._hearing_revocations else None
        if uncached or cached is None or cached[0] <= now:
            epoch = self._epoch
            view = lookup(key)
            caller = None if view is None else caller_from_view(view)
            cached = (now + self.ttl, caller)
            if epoch == self._epoch and self._hearing_revocations:
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
                self._cache[digest] = cached
        if cached[1] is None:
            raise Problem(401, "the API key is unknown or revoked",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return cached[1]

    def forget(self) -> None:
        self._cache.clear()
        self._epoch += 1

    def forget_key(self, key_id: str) -> int:
        """Drop the cached answer for a revoked key; how many entries went. A scan: the cache
        is bounded by `max_entries`, and revocations are rare."""
        self._epoch += 1
        stale = [digest for digest, (_, caller) in self._cache.items()
                 if caller is not None and caller.key_id == key_id]
        for digest in stale:
            self._cache.pop(digest, None)
        return len(stale)

    def broadcast_lost(self) -> None:
        """Revocations may go unheard from now on: every check asks customer_sync until
        `broadcast_ready`."""
        self._hearing_revocations = False
        self.forget()

    def broadcast_ready(self) -> None:
        """Revocations are heard again, but some may have been missed: nothing cached before
        counts (the cache starts empty)."""
        self.forget()
        self._hearing_revocations = True
