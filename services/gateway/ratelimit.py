"""Per-key rate limiting: a token bucket per API key, in this gateway process.

Each key may make `limit` requests a minute, refilled continuously, with bursts up to the
whole minute's allowance. With several gateway instances behind a balancer each one counts on
its own, so a key's effective limit is the per-instance limit times the instances (docs/api.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until one request is allowed again (0 when allowed)


def _refused(limit: int, tokens: float) -> Decision:
    """A refusal, with the whole seconds until one token has refilled."""
    return Decision(False, limit, 0, max(1, math.ceil((1.0 - tokens) / (limit / 60.0))))


class RateLimiter:
    def __init__(self, default_per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.default_per_minute = default_per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: str, per_minute: int | None = None) -> Decision:
        limit, tokens, now = self._refilled(key, per_minute)
        if tokens >= 1.0:
            tokens -= 1.0
            self._store(key, tokens, now)
            return Decision(True, limit, int(tokens), 0)
        self._store(key, tokens, now)
        return _refused(limit, tokens)

    def peek(self, key: str, per_minute: int | None = None) -> Decision:
        """Whether `check` would allow now, without spending anything."""
        limit, tokens, _ = self._refilled(key, per_minute)
        if tokens >= 1.0:
            return Decision(True, limit, int(tokens), 0)
        return _refused(limit, tokens)

    def _refilled(self, key: str, per_minute: int | None) -> tuple[int, float, float]:
        """The key's limit, its tokens refilled up to now, and now."""
        limit = per_minute or self.default_per_minute
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(limit), now))
        return limit, min(float(limit), tokens + (now - at) * (limit / 60.0)), now

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            # Forget the fullest buckets' owners first would cost a sort; forgetting the
            # oldest entry is enough to bound memory (a forgotten key starts full again).
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (tokens, now)


class FailureThrottle:
    """Failed authentications per client address. Each failure cost a key lookup (an RPC to
    customer_sync), so distinct bad keys ran as fast as a client could send them: an address
    whose failures spent its bucket is refused before its next lookup until it refills.
    `per_minute` 0 turns it off."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 100_000) -> None:
        self.per_minute = per_minute
        self._buckets = RateLimiter(max(1, per_minute), clock, max_addresses)

    def wait_seconds(self, address: str) -> int:
        """0 when the address may try a key now; otherwise how long it must wait."""
        if self.per_minute <= 0:
            return 0
        return self._buckets.peek(address).retry_after

    def failed(self, address: str) -> None:
        if self.per_minute > 0:
            self._buckets.check(address)
