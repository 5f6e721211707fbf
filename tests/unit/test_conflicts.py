"""The one retry loop of compare-and-set writes."""
from __future__ import annotations

import pytest

from shared.conflicts import CONFLICT_RETRIES, ConcurrentChange, attempts


def test_a_loop_that_lands_its_write_ends_without_an_error():
    tries = []
    for attempt in attempts("profile c1"):
        tries.append(attempt)
        if attempt == 2:
            break
    assert tries == [0, 1, 2]


def test_a_loop_that_keeps_losing_gives_up_after_the_limit_naming_what_changed():
    tries = []
    with pytest.raises(ConcurrentChange, match="^account c1 kept changing$"):
        for attempt in attempts("account c1", limit=3):
            tries.append(attempt)
    assert tries == [0, 1, 2]
    with pytest.raises(ConcurrentChange):
        for _ in attempts("order 7"):
            pass
    assert CONFLICT_RETRIES == 20
