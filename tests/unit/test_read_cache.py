"""The short read cache services keep of a store's settings and programme."""
from __future__ import annotations

import gc

from shared import read_cache
from shared.read_cache import ReadCache


class Storage:
    """Any object a service reads through."""


def test_each_storage_has_its_own_entries_and_a_write_forgets_its_own():
    cache = ReadCache(seconds=60)
    first, second = Storage(), Storage()
    assert cache.get(first, "s1", lambda: "first's") == "first's"
    assert cache.get(second, "s1", lambda: "second's") == "second's"
    assert cache.get(first, "s1", lambda: "read again") == "first's"
    cache.forget(first, "s1")
    assert cache.get(first, "s1", lambda: "read again") == "read again"
    assert cache.get(second, "s1", lambda: "read again") == "second's"


def test_an_entry_is_read_again_after_its_seconds(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(read_cache.time, "monotonic", lambda: now[0])
    cache = ReadCache(seconds=5)
    storage = Storage()
    assert cache.get(storage, "k", lambda: 1) == 1
    now[0] += 4.9
    assert cache.get(storage, "k", lambda: 2) == 1
    now[0] += 0.2
    assert cache.get(storage, "k", lambda: 3) == 3


def test_entries_go_with_their_storage():
    cache = ReadCache(seconds=60)
    storage = Storage()
    cache.get(storage, "k", lambda: "value")
    assert cache.storages() == 1
    del storage
    gc.collect()
    assert cache.storages() == 0
