"""A few seconds' memory of what a service read from its database (a store's settings,
templates, loyalty programme), so a burst of events does not read them once each.

Entries belong to the storage they were read from and go with it. Keyed by the storage's
address instead, an entry outlived its storage and a later storage (another database) that
was given the same address read it."""
from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Hashable


class ReadCache:
    """`cache.get(storage, key, load)`: what `load()` answered for this storage and key in the
    last `seconds`, else `load()` now; `forget` after a write, so the writer reads its own."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: weakref.WeakKeyDictionary[Any, dict[Hashable, tuple[float, Any]]] = \
            weakref.WeakKeyDictionary()

    def get(self, storage: Any, key: Hashable, load: Callable[[], Any]) -> Any:
        entries = self._entries.setdefault(storage, {})
        hit = entries.get(key)
        if hit and time.monotonic() - hit[0] < self.seconds:
            return hit[1]
        value = load()
        entries[key] = (time.monotonic(), value)
        return value

    def forget(self, storage: Any, key: Hashable) -> None:
        self._entries.get(storage, {}).pop(key, None)

    def storages(self) -> int:
        """How many storages have entries (those still alive)."""
        return len(self._entries)
