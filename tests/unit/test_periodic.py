"""The periodic-task provider's loop: a failed run is logged and the loop goes on, a truthy
result runs again at once where asked, a wake cuts the wait short, and `run_now` runs a task
in the caller's thread."""
from __future__ import annotations

from types import SimpleNamespace

import eventlet
import pytest

from services import registry
from shared.config import Config
from shared.periodic import MINUTES, PeriodicTasks, Task


class _Container:
    def __init__(self, dependencies) -> None:
        # As the runner builds it: the values with the settings they are declared by.
        self.config = Config({"NOTIFY_POLL_SECONDS": "0.05", "LOYALTY_DAILY_MINUTES": "60"},
                             registry.settings()).values()
        self.service_name = "loyalty"
        self.dependencies = dependencies
        self.threads = []

    def spawn_managed_thread(self, run, identifier=None):
        thread = eventlet.spawn(run)
        self.threads.append(thread)
        return thread


def _started(*tasks: Task) -> PeriodicTasks:
    store = SimpleNamespace(attr_name="store", get_dependency=lambda ctx: {"runs": []})
    provider = PeriodicTasks(*tasks, uses=("store",))
    provider.container = _Container([store])
    provider.setup()
    provider.start()
    return provider


def test_a_failing_task_keeps_its_loop():
    calls = []

    def flaky(uses):
        calls.append(1)
        raise RuntimeError("boom")

    provider = _started(Task("flaky", flaky, setting="NOTIFY_POLL_SECONDS"))
    eventlet.sleep(0.2)
    provider.stop()
    assert len(calls) >= 2


def test_work_left_runs_again_at_once_and_a_wake_cuts_the_wait():
    results = iter([3, 2, 0])
    calls = []

    def drain(uses):
        calls.append(1)
        return next(results, 0)

    provider = _started(Task("drain", drain, setting="LOYALTY_DAILY_MINUTES", unit=MINUTES, wait_first=False,
                             again_at_once=True))
    eventlet.sleep(0.05)
    assert len(calls) == 3  # three at once, then it waits the hour
    provider.wake("drain")
    eventlet.sleep(0.05)
    assert len(calls) == 4
    provider.stop()


def test_run_now_answers_and_raises_in_the_caller():
    def count(uses):
        uses.store["runs"].append(1)
        return len(uses.store["runs"])

    provider = _started(Task("count", count, setting="LOYALTY_DAILY_MINUTES",
                             at_stop=lambda uses: uses.store["runs"].clear()))
    assert provider.run_now("count") == 1
    provider.stop()
    assert provider.uses.store["runs"] == []
    with pytest.raises(KeyError):
        provider.run_now("missing")


def test_tasks_need_the_dependencies_they_name():
    provider = PeriodicTasks(Task("t", lambda uses: None, setting="LOYALTY_DAILY_MINUTES"), uses=("db",))
    provider.container = _Container([])
    provider.setup()
    with pytest.raises(RuntimeError, match="loyalty: PeriodicTasks needs dependency providers as "
                                           "attribute 'db', which the service lacks"):
        provider.start()
