"""`python -m tests.system.fault_launcher NAME ...`: the services as `python -m services` runs
them, with event handlers that fail on demand, so the fault tests exercise retries, parking and
`companion dlq replay` end to end in real service processes.

`FAULT_FAILING_HANDLERS_FILE` (in the launcher's environment; no product setting) names a
file. While it exists, every handler whose key (`<service>.<method>`, as `companion dlq list`
shows it) is on one of its lines fails each delivery with `InjectedFault` before doing any
work, and the message takes the ordinary path of a failure: retried with back-off, then parked.
Deleting the file (or the handler's line) clears the fault.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import os  # noqa: E402
import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from functools import partial  # noqa: E402
from typing import Iterator  # noqa: E402

from services.runner import main as run_services  # noqa: E402
from shared.messaging.batches import BatchEventHandler  # noqa: E402
from shared.messaging.handlers import ReliableEventHandler  # noqa: E402

FAULT_FILE_VARIABLE = "FAULT_FAILING_HANDLERS_FILE"


class InjectedFault(RuntimeError):
    """Raised in place of a handler's work while its fault is injected."""


class HandlerFaults:
    """The fault file (see the module doc); no path means no fault, and nothing is read."""

    def __init__(self, path: str | None) -> None:
        self.path = path or None

    def check(self, handler_key: str) -> None:
        """Raise InjectedFault when `handler_key` is listed in the fault file now."""
        if self.path is None:
            return
        try:
            with open(self.path, encoding="utf-8") as listing:
                failing = {line.strip() for line in listing}
        except FileNotFoundError:
            return
        if handler_key in failing:
            raise InjectedFault(f"fault injected into {handler_key} "
                                f"(file {os.path.basename(self.path)})")


@contextmanager
def failing_handlers(faults: HandlerFaults) -> Iterator[None]:
    """Every reliable event handler consults `faults` before its worker starts, and every
    batch handler before each run; an injected fault is settled as the handler's own failure
    would be (retry, then park)."""
    spawn = ReliableEventHandler._spawn

    def spawn_unless_failing(handler: ReliableEventHandler, message, body, headers, event,
                             attempts: int, token: str | None) -> None:
        try:
            faults.check(handler.handler_key())
        except InjectedFault:
            handle_result = partial(handler._on_result, message, body, headers, event, attempts,
                                    token)
            handle_result(None, exc_info=sys.exc_info())
            return
        spawn(handler, message, body, headers, event, attempts, token)

    run = BatchEventHandler._run

    def run_unless_failing(handler: BatchEventHandler, part: list):
        # A batch handler's failing run answers its error: the batch is split down to single
        # events, each settled as its own failure (retry, then park), as in production.
        try:
            faults.check(handler.handler_key())
        except InjectedFault as fault:
            return fault
        return run(handler, part)

    ReliableEventHandler._spawn = spawn_unless_failing
    BatchEventHandler._run = run_unless_failing
    try:
        yield
    finally:
        ReliableEventHandler._spawn = spawn
        BatchEventHandler._run = run


def main(argv: list[str] | None = None) -> int:
    """Run the services named in `argv` (all by default) with the fault file of the env."""
    with failing_handlers(HandlerFaults(os.environ.get(FAULT_FILE_VARIABLE))):
        return run_services(argv)


if __name__ == "__main__":
    raise SystemExit(main())
