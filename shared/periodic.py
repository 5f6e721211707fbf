"""A service's background work: named tasks run on an interval from a setting, each in its own
managed thread, so one provider replaces a hand-written loop per service.

A task is not a worker: it holds no RPC proxy and takes no worker slot, so it keeps running
while every worker is busy. It sees the service's dependencies it names in `uses`, as a worker
would (`uses.storage`, `uses.outbox`). A failed run is logged and the loop goes on; tests and
operators run a task now with `run_now`, and writers that made work due call `wake`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import eventlet
import eventlet.event
from nameko.extensions import DependencyProvider

from shared.config import from_nameko
from shared.container import named_dependencies

log = logging.getLogger(__name__)

SECONDS = 1.0
MINUTES = 60.0


@dataclass(frozen=True)
class Task:
    """`run(uses)` every `setting` (times `unit` seconds). `at_start(uses)` runs once before the
    first wait; with `wait_first=False` the first run is at once. With `again_at_once`, a
    truthy result (work may remain) runs the task again without waiting. `at_stop(uses)` runs
    when the service stops."""

    name: str
    run: Callable[[SimpleNamespace], object]
    setting: str
    unit: float = SECONDS
    wait_first: bool = True
    again_at_once: bool = False
    at_start: Callable[[SimpleNamespace], object] | None = None
    at_stop: Callable[[SimpleNamespace], object] | None = None


class PeriodicTasks(DependencyProvider):
    """`PeriodicTasks(Task(...), ..., uses=("storage", "outbox"))` as a service attribute; its
    workers get the provider itself, for `run_now` and `wake`."""

    def __init__(self, *tasks: Task, uses: tuple[str, ...] = ()) -> None:
        names = [task.name for task in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must differ: {names}")
        self.tasks = {task.name: task for task in tasks}
        self.uses_names = uses

    def setup(self) -> None:
        config = from_nameko(self.container.config)
        self.intervals = {name: config.float(task.setting) * task.unit
                          for name, task in self.tasks.items()}
        self._wakes = {name: eventlet.event.Event() for name in self.tasks}
        self._threads: list = []
        self.uses: SimpleNamespace | None = None

    def start(self) -> None:
        found = named_dependencies(self.container, self.uses_names, type(self).__name__)
        # What each provider gives a worker; the providers named here ignore the worker.
        self.uses = SimpleNamespace(**{name: d.get_dependency(None) for name, d in found.items()})
        self._threads = [self.container.spawn_managed_thread(lambda t=task: self._loop(t),
                                                             identifier=name)
                         for name, task in self.tasks.items()]

    def run_now(self, name: str) -> object:
        """Run a task in the caller's thread and return its result; errors propagate."""
        return self.tasks[name].run(self.uses)

    def wake(self, name: str) -> None:
        """Cut the task's current wait short: work is due now."""
        wake = self._wakes[name]
        if not wake.ready():
            wake.send()

    def _loop(self, task: Task) -> None:
        if task.at_start is not None:
            try:
                task.at_start(self.uses)
            except Exception:
                log.exception("periodic task %s failed at start; its runs go on", task.name)
        wait = task.wait_first
        while True:
            if wait:
                self._wait(task.name)
            try:
                result = task.run(self.uses)
            except Exception:
                log.exception("periodic task %s failed; it runs again", task.name)
                result = None
            wait = not (task.again_at_once and result)

    def _wait(self, name: str) -> None:
        wake = self._wakes[name]
        with eventlet.Timeout(self.intervals[name], False):
            wake.wait()
        if wake.ready():
            wake.reset()

    def stop(self) -> None:
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.kill()
        for task in self.tasks.values():
            if threads and task.at_stop is not None:
                task.at_stop(self.uses)

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> "PeriodicTasks":
        return self
