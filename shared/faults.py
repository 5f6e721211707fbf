"""Fault injection for the fault tests: make chosen event handlers fail for a while, in a real
service process, so retries, parking and `companion dlq replay` are exercised end to end.

`FAULT_FAILING_HANDLERS_FILE` names a file (default empty: off, nothing is ever read). While
that file exists, every handler whose key (`<service>.<method>`, as `companion dlq list` shows
it) is on one of its lines fails each delivery with `InjectedFault` before doing any work, and
the message takes the ordinary path of a failure: retried with back-off, then parked. Deleting
the file (or the handler's line) clears the fault. Never set it in production.
"""
from __future__ import annotations

import os


class InjectedFault(RuntimeError):
    """Raised in place of a handler's work while its fault is injected."""


class HandlerFaults:
    """Reads the fault file named by FAULT_FAILING_HANDLERS_FILE (see the module doc)."""

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
            raise InjectedFault(f"fault injected into {handler_key} (file {os.path.basename(self.path)})")
