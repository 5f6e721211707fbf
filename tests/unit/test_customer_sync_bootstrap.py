"""customer_sync's composition root: one write path and one clock behind every use case, and
the settings read once, so a test can run the whole service on a clock it moves."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devdoubles import mongomock_adapter
from services import registry
from services.customer_sync.bootstrap import build
from shared.config import Config
from tests.support import Clock


def app_on(clock: Clock, **settings: str):
    config = Config({}, registry.settings(["customer_sync"]), **settings)
    return build(mongomock_adapter.client()["customer_sync"], config, clock=clock)


def test_every_use_case_writes_through_the_one_customer_sync() -> None:
    app = app_on(Clock(datetime(2026, 3, 1, tzinfo=timezone.utc)))
    for use_case in (app.rectifier, app.staff_edits, app.account_status, app.deletion,
                     app.importer, app.inbox):
        assert use_case.sync is app.sync
    assert app.capture_settings is app.sync.capture_settings


def test_the_clock_given_dates_the_write_path_and_crm_to_the_millisecond() -> None:
    clock = Clock(datetime(2026, 3, 1, 9, 30, 0, 123456, tzinfo=timezone.utc))
    app = app_on(clock)
    assert app.sync.clock() == clock.now
    assert app.importer.clock() == clock.now
    for dated in (app.rectifier, app.staff_edits, app.deletion, app.storage.inbox):
        assert dated.clock is clock
    assert app.notes.clock() == datetime(2026, 3, 1, 9, 30, 0, 123000, tzinfo=timezone.utc)
    assert app.reminders.clock() == datetime(2026, 3, 1, 9, 30, 0, 123000, tzinfo=timezone.utc)
    clock.now += timedelta(days=1)
    assert app.sync.clock() == clock.now


def test_settings_are_read_into_the_app_once() -> None:
    app = app_on(Clock(datetime(2026, 3, 1, tzinfo=timezone.utc)),
                 WEBHOOK_MAX_BODY_BYTES="4096", RECONCILE_FULL_CUSTOMER_SCAN_HOURS="12",
                 INBOX_RETENTION_DAYS="3", RECONCILE_INTERVAL_MINUTES="25")
    assert app.receiver.max_body_bytes == 4096
    assert app.full_scan_every == timedelta(hours=12)
    assert app.storage.inbox.retention_days == 3
    registered = app.stores.register({
        "store_id": "s1", "shop_url": "https://shop.example", "webhook_secret": "whsec-12345678",
        "consumer_key": "ck_1", "consumer_secret": "cs_1"})
    assert registered["reconcile_interval_minutes"] == 25
