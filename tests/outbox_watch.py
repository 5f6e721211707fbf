"""Finds any entrypoint (RPC, event handler, HTTP, timer) that writes an outbox without telling
its relay.

Every outbox write goes through `shared.outbox.outbox_entry` (via `push_events`), and every
worker of a service with an outbox runs the `OutboxRelayProvider` worker hooks in its own green
thread. The watch notes the events a worker builds for an outbox, marks the worker when it
calls the relay's `notify` or `request_sweep`, and when a worker ends without telling, checks
whether what it built was written: still in an outbox, or already taken by a sweep (an entry is
recorded by the sweep before it leaves the document, so it is always in one place or the
other). Events built for a write that did not happen (a compare-and-set that lost) owe
nothing. Background loops (send loop, daily run, recompute) are not workers and are not
watched here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import greenlet

import shared.outbox
from shared.dependencies import OutboxRelayProvider
from shared.outbox import OUTBOX_FIELD, OutboxRelay


@dataclass
class _Worker:
    entrypoint: str
    owes: dict[str, str] = field(default_factory=dict)  # event id: type, built for an outbox
    told: bool = False


class OutboxWatch:
    """Installed around running services (`install`/`uninstall`); `silent_writers` lists
    "service.method: event types" for each worker that owed events and did not tell."""

    def __init__(self) -> None:
        self.silent_writers: list[str] = []
        self.announced: list[str] = []  # entrypoints that owed events and told: the watch saw work
        self._workers: dict[object, _Worker] = {}
        self._swept: set[str] = set()  # event ids a sweep (not a told relay) published
        self._saved: dict[tuple[object, str], object] = {}

    def install(self) -> "OutboxWatch":
        watch = self
        entry, notify, sweep = (shared.outbox.outbox_entry, OutboxRelayProvider.notify,
                                OutboxRelayProvider.request_sweep)
        publish_pending, publish = OutboxRelay.publish_pending, OutboxRelay._publish

        def outbox_entry(event):
            worker = watch._workers.get(greenlet.getcurrent())
            if worker is not None:
                worker.owes[event.event_id] = event.event_type
            return entry(event)

        def sweeping(relay, *args, **kwargs):
            relay.watch_sweeping = True
            try:
                return publish_pending(relay, *args, **kwargs)
            finally:
                relay.watch_sweeping = False

        def publishing(relay, owed):
            if getattr(relay, "watch_sweeping", False):
                watch._swept.update(e["event_id"] for _, docs in owed for d in docs
                                    for e in d.get(OUTBOX_FIELD, []))
            return publish(relay, owed)

        def told(original):
            def call(provider, *args, **kwargs):
                worker = watch._workers.get(greenlet.getcurrent())
                if worker is not None:
                    worker.told = True
                return original(provider, *args, **kwargs)
            return call

        def worker_setup(provider, worker_ctx) -> None:
            watch._workers[greenlet.getcurrent()] = _Worker(
                f"{worker_ctx.service_name}.{worker_ctx.entrypoint.method_name}")

        def worker_result(provider, worker_ctx, result=None, exc_info=None) -> None:
            worker = watch._workers.pop(greenlet.getcurrent(), None)
            if worker is None or not worker.owes:
                return
            if worker.told:
                watch.announced.append(f"{worker.entrypoint}: {_types(worker.owes.values())}")
                return
            ids = list(worker.owes)
            written = {e["event_id"] for c in provider.relay.collections
                       for d in c.find({f"{OUTBOX_FIELD}.event_id": {"$in": ids}}, {OUTBOX_FIELD: 1})
                       for e in d[OUTBOX_FIELD]} | watch._swept
            silent = [worker.owes[i] for i in ids if i in written]
            if silent:
                watch.silent_writers.append(f"{worker.entrypoint}: {_types(silent)}")

        self._patch(shared.outbox, "outbox_entry", outbox_entry)
        self._patch(OutboxRelayProvider, "notify", told(notify))
        self._patch(OutboxRelayProvider, "request_sweep", told(sweep))
        self._patch(OutboxRelayProvider, "worker_setup", worker_setup)
        self._patch(OutboxRelayProvider, "worker_result", worker_result)
        self._patch(OutboxRelay, "publish_pending", sweeping)
        self._patch(OutboxRelay, "_publish", publishing)
        return self

    def _patch(self, owner: object, name: str, value: object) -> None:
        self._saved[(owner, name)] = owner.__dict__.get(name)
        setattr(owner, name, value)

    def uninstall(self) -> None:
        for (owner, name), original in self._saved.items():
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._saved.clear()


def _types(event_types) -> str:
    return ", ".join(sorted(set(event_types)))
