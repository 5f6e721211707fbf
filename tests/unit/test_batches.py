"""Batch assembly and the split of a failing batch, without a broker."""
from __future__ import annotations

import eventlet
import pytest

from shared.messaging.batches import STOP, BatchCollector, Delivery, Unparsable, apply_in_halves


def delivery(name: str) -> Delivery:
    return Delivery(message=name, body={}, headers={}, event=None, attempts=0)  # type: ignore


def names(items: list[Delivery]) -> list[str]:
    return [item.message for item in items]


def collector(size: int, wait_seconds: float, *items: object) -> BatchCollector:
    gathering = BatchCollector(size, wait_seconds)
    for item in items:
        gathering.put(item)
    return gathering


def test_a_batch_closes_when_full_and_keeps_delivery_order():
    gathering = collector(3, 60.0, *(delivery(str(n)) for n in range(7)))
    first, second = gathering.next_batch(), gathering.next_batch()
    assert (names(first.items), first.reason) == (["0", "1", "2"], "size")
    assert (names(second.items), second.reason) == (["3", "4", "5"], "size")


def test_a_batch_that_does_not_fill_closes_after_its_wait():
    gathering = collector(5, 0.01, delivery("a"), delivery("b"))
    gathered = gathering.next_batch()
    assert (names(gathered.items), gathered.reason) == (["a", "b"], "wait")
    assert gathered.waited_seconds >= 0.01


def test_a_late_arrival_joins_the_batch_still_waiting():
    gathering = collector(3, 60.0, delivery("a"))
    eventlet.spawn_after(0.01, gathering.put, delivery("b"))
    eventlet.spawn_after(0.02, gathering.put, delivery("c"))
    assert names(gathering.next_batch().items) == ["a", "b", "c"]


def test_stopping_hands_over_the_partial_batch_then_ends():
    gathering = collector(10, 60.0, delivery("a"), delivery("b"), STOP)
    gathered = gathering.next_batch()
    assert (names(gathered.items), gathered.reason) == (["a", "b"], "stop")
    assert gathering.next_batch() is None


def test_an_unparsable_message_goes_aside_at_once_and_never_into_a_batch():
    bad = Unparsable(message="bad", body=[1], headers={}, error=ValueError("no"))  # type: ignore
    aside: list[object] = []
    gathering = collector(2, 60.0, delivery("a"), bad, delivery("b"))
    assert names(gathering.next_batch(aside.append).items) == ["a", "b"]
    assert aside == [bad]


def test_a_batch_holds_at_least_one():
    with pytest.raises(ValueError):
        BatchCollector(0, 1.0)


class Recorder:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.runs: list[list[str]] = []
        self.applied: list[list[str]] = []
        self.failed: list[str] = []
        self.splits = 0

    def run(self, part: list[str]) -> BaseException | None:
        self.runs.append(part)
        bad = self.failing & set(part)
        return RuntimeError(sorted(bad)[0]) if bad else None

    def split(self, part: list[str]) -> None:
        self.splits += 1

    def apply(self, items: list[str]) -> "Recorder":
        apply_in_halves(items, self.run, self.applied.append,
                        lambda item, error: self.failed.append(item), self.split)
        return self


def test_a_batch_that_succeeds_runs_once():
    recorder = Recorder(set()).apply(list("abcd"))
    assert recorder.runs == [list("abcd")] and recorder.applied == [list("abcd")]
    assert recorder.splits == 0


def test_a_failing_event_is_split_out_alone_and_the_rest_applied_in_order():
    recorder = Recorder({"f"}).apply(list("abcdefgh"))
    assert recorder.failed == ["f"]
    assert [item for part in recorder.applied for item in part] == list("abcdegh")
    assert recorder.runs == [list("abcdefgh"), list("abcd"), list("efgh"), list("ef"),
                             ["e"], ["f"], list("gh")]
    assert recorder.splits == 3


def test_every_failing_event_ends_alone():
    recorder = Recorder({"a", "c"}).apply(list("abc"))
    assert recorder.failed == ["a", "c"]
    assert recorder.applied == [["b"]]
