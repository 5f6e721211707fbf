"""notifications' background work: sending what is due, and the date rules (birthdays, lapses)
that no event announces. Each instance claims sends one at a time, so several instances share
the work and never send the same message."""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender

log = logging.getLogger(__name__)


def send_due(sender: Sender, notify: Callable[[Iterable[tuple[str, object]]], None]) -> dict:
    """One round of due sends: what came of them (empty when nothing was due). The sends
    that owe events are told to `notify`, exactly those."""
    counts = sender.run_once()
    if counts:
        notify(sender.take_touched())
        log.info("sends processed", extra={"outcomes": counts})
    return counts


def run_date_rules(storage: NotificationsStorage, wake_sender: Callable[[], None]) -> int:
    """Every store with a date rule checked; a store that fails is left to the next round.
    The sender is woken when anything was scheduled."""
    notifier, scheduled = Notifier(storage), 0
    for store_id in storage.workflows.stores_with_date_rules():
        try:
            scheduled += notifier.run_date_rules(store_id)
        except Exception:
            log.exception("date rules failed for a store", extra={"store_id": store_id})
    if scheduled:
        wake_sender()
    return scheduled
