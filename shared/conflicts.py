"""Compare-and-set writes that lost a race: read again, decide again, try again.

Every data service writes a document only if its version is still the one it read; a writer
that loses re-reads and retries, and after `limit` losses gives up with `ConcurrentChange`,
which the reliable handler treats like any failure (the delivery is retried later).
"""
from __future__ import annotations

from typing import Iterator

# Enough for a burst of deliveries about one customer; past it something is wrong, and the
# message is better retried later than spun on.
CONFLICT_RETRIES = 20


class ConcurrentChange(RuntimeError):
    """The same document kept changing underneath; the delivery will be retried."""


def attempts(what: str, limit: int = CONFLICT_RETRIES) -> Iterator[int]:
    """Attempt numbers for a compare-and-set loop that returns once its write lands; when
    they run out, ConcurrentChange("<what> kept changing") ends the loop."""
    yield from range(limit)
    raise ConcurrentChange(f"{what} kept changing")
