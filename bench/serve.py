"""Running a baseline nameko service until SIGINT or SIGTERM (a second one kills it): what
bench.bare_service and bench.empty_handler share. Import it after eventlet's monkey patch."""
from __future__ import annotations

import signal
from typing import Callable

import eventlet
from nameko.runners import ServiceRunner


def _tick() -> None:
    """A Python signal handler runs while the hub sits in epoll, and epoll is resumed with its
    old timeout (PEP 475): with nothing else scheduled the green thread spawned by the handler
    would wait for the hub's next wake-up (up to a minute). This ticker bounds that."""
    while True:
        eventlet.sleep(0.2)


def serve_until_signalled(runner: ServiceRunner, started: Callable[[], None]) -> int:
    """Start `runner`, call `started()` (a log line), and wait until a signal stops it."""
    signals = {"count": 0, "started": False}

    def on_signal(signum, frame):  # noqa: ARG001
        signals["count"] += 1
        if signals["started"]:  # before that, the runner is stopped once it has started
            eventlet.spawn_n(runner.stop if signals["count"] == 1 else runner.kill)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    eventlet.spawn_n(_tick)
    runner.start()
    signals["started"] = True
    if signals["count"]:
        runner.stop()
        return 0
    started()
    runner.wait()
    return 0
