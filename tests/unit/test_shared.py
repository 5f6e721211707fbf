"""The shared package: the event catalogue, the envelope, config and logs."""
from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import datetime, timezone

import pytest

from shared.config import SETTINGS, Config, Setting, from_nameko
from shared.events import CATALOGUE, InvalidEvent, build_event, contract, contracts_from, parse_event
from shared.logs import JsonFormatter, log_context
from shared.messaging.handlers import retry_delay_ms


@pytest.mark.parametrize("key", sorted(CATALOGUE), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_every_catalogue_entry_accepts_its_sample(key):
    entry = CATALOGUE[key]
    event = build_event(entry.event_type, store_id="s1", data=entry.sample,
                        schema_version=entry.schema_version)
    message = event.to_message()
    assert message["event_type"] == entry.event_type
    assert message["schema_version"] == entry.schema_version
    uuid.UUID(message["event_id"])
    assert parse_event(json.loads(json.dumps(message))).data == event.data


@pytest.mark.parametrize("key", sorted(CATALOGUE), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_every_catalogue_entry_refuses_an_empty_payload(key):
    entry = CATALOGUE[key]
    with pytest.raises(InvalidEvent):
        build_event(entry.event_type, store_id="s1", data={}, schema_version=entry.schema_version)


def test_consumers_ignore_fields_they_do_not_know():
    message = build_event("customer.deleted", store_id="s1",
                          data={"customer_id": "c1", "woo_customer_id": 3}).to_message()
    message["data"]["added_later"] = "x"
    message["also_new"] = 1
    event = parse_event(message)
    assert "added_later" not in event.data


def test_envelope_rules():
    good = build_event("customer.deleted", store_id="s1", data={"customer_id": "c1"}).to_message()
    with pytest.raises(InvalidEvent, match="occurred_at"):
        parse_event({**good, "occurred_at": "2026-01-01T00:00:00"})  # naive time
    with pytest.raises(InvalidEvent):
        parse_event({**good, "event_id": "not-a-uuid"})
    with pytest.raises(InvalidEvent, match="no contract"):
        parse_event({**good, "event_type": "nobody.knows"})
    with pytest.raises(InvalidEvent, match="expected order.placed"):
        parse_event(good, expected_type="order.placed")
    with pytest.raises(InvalidEvent):
        build_event("customer.deleted", store_id="s1", data={"customer_id": "c1"},
                    occurred_at=datetime(2026, 1, 1))


def test_money_is_never_a_float():
    sample = dict(contract("order.placed").sample)
    sample["total"] = {"amount": 49.9, "currency": "EUR"}
    with pytest.raises(InvalidEvent, match="total"):
        build_event("order.placed", store_id="s1", data=sample)


def test_customer_sync_publishes_what_design_md_lists():
    assert {c.event_type for c in contracts_from("customer_sync")} >= {
        "customer.created", "customer.updated", "customer.deleted", "order.placed",
        "order.updated", "order.refunded", "order.cancelled"}


def test_config_defaults_overrides_and_errors():
    config = Config({})
    assert config.get("AMQP_URI") == "amqp://guest:guest@127.0.0.1:5672/"
    assert Config({"MAX_WORKERS": "3"}).int("MAX_WORKERS") == 3
    with pytest.raises(ValueError, match="MAX_WORKERS"):
        Config({"MAX_WORKERS": "many"}).int("MAX_WORKERS")
    with pytest.raises(KeyError):
        config.get("NOT_A_SETTING")
    assert Config({"EVENT_RETRY_DELAYS_MS": "10, 20"}).int_list("EVENT_RETRY_DELAYS_MS") == [10, 20]
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


def test_a_config_knows_the_settings_it_is_given_and_carries_them_into_containers():
    declared = (*SETTINGS, Setting("EXTRA_SECONDS", "3", "a setting of one service"))
    config = Config({"EXTRA_SECONDS": "4"}, settings=declared)
    assert config.int("EXTRA_SECONDS") == 4
    with pytest.raises(KeyError, match="EXTRA_SECONDS"):
        Config({"EXTRA_SECONDS": "4"}).get("EXTRA_SECONDS")
    # What a container holds: the values, a test's emptied override, nameko's own keys.
    inside = from_nameko({**config.values(), "EXTRA_SECONDS": "", "SERVICE_CONTAINER_CLS": "x"})
    assert inside.settings == declared and inside.get("EXTRA_SECONDS") == "3"
    with pytest.raises(KeyError):
        inside.get("SERVICE_CONTAINER_CLS")
    assert from_nameko({"MAX_WORKERS": "2"}).settings == SETTINGS


def test_retry_delays_repeat_the_last_value():
    assert [retry_delay_ms([100, 500], n) for n in (1, 2, 3, 4)] == [100, 500, 500, 500]


def test_json_logs_carry_context_and_never_secrets():
    stream = io.StringIO()
    logger = logging.getLogger("test.jsonlogs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(store_id="s1", correlation_id="c-9"):
            logger.warning("stored %s", "thing", extra={"event_id": "e-1",
                                                         "webhook_secret": "hunter22",
                                                         "nested": {"consumer_secret": "cs_x"}})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    entry = json.loads(line)
    assert entry["message"] == "stored thing"
    assert (entry["store_id"], entry["correlation_id"], entry["event_id"]) == ("s1", "c-9", "e-1")
    assert "hunter22" not in line and "cs_x" not in line
    assert datetime.fromisoformat(entry["ts"]).tzinfo == timezone.utc


def test_log_lines_carry_neither_secrets_nor_personal_data():
    import io
    import json as _json
    import logging

    from shared.logs import JsonFormatter, log_context

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(store_id="s1", customer_id="c-1"):
            logger.warning("applied", extra={
                "webhook_secret": "whsec-1", "email": "ada@example.com",
                "billing": {"phone": "+44 7700 900123"}, "first_name": "Ada", "status": "ok",
                "order": {"email": "ada@example.com", "total": 4990}})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    entry = _json.loads(line)
    assert "whsec-1" not in line and "ada@example.com" not in line and "Ada" not in line
    assert "7700" not in line
    assert entry["webhook_secret"] == "[redacted]" and entry["email"] == "[personal]"
    assert entry["order"] == {"email": "[personal]", "total": 4990}
    assert entry["status"] == "ok" and entry["customer_id"] == "c-1"


def test_utc_times_load_as_utc_and_refuse_what_overflows_it():
    from marshmallow import Schema
    from marshmallow import ValidationError as FieldError

    from shared.events.fields import UtcTime

    class Window(Schema):
        until = UtcTime()

    loaded = Window().load({"until": "2026-01-01T10:00:00+02:00"})["until"]
    assert loaded == datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc) and loaded.utcoffset().seconds == 0
    for bad in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00", "2026-01-01T10:00:00"):
        with pytest.raises(FieldError) as refused:
            Window().load({"until": bad})
        assert "until" in refused.value.messages


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_read_as_lines_at_a_terminal_and_stay_json_elsewhere():
    """LOG_FORMAT=auto: a person at a terminal reads one plain line a record, redacted as the
    JSON is; a pipe or a file (log collectors, docker) still gets JSON lines."""
    from shared.logs import configure_logging

    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    try:
        for stream, expect_json in ((_Terminal(), False), (io.StringIO(), True)):
            configure_logging("INFO", stream=stream, log_format="auto")
            with log_context(store_id="s1"):
                logging.getLogger("services.runner").warning(
                    "broker unavailable: %s", "vhost 'x' not found",
                    extra={"webhook_secret": "hunter22", "email": "ada@example.com"})
            [line] = stream.getvalue().splitlines()
            assert "hunter22" not in line and "ada@example.com" not in line
            if expect_json:
                assert json.loads(line)["message"] == "broker unavailable: vhost 'x' not found"
            else:
                stamp, rest = line.split(" ", 1)
                assert datetime.strptime(stamp, "%H:%M:%S")
                assert rest.startswith("W services.runner: broker unavailable: vhost 'x' not "
                                       "found  [")
                assert "store_id=s1" in rest and "webhook_secret=[redacted]" in rest
        stream = _Terminal()
        configure_logging("INFO", stream=stream, log_format="json")
        logging.getLogger("x").warning("plain")
        assert json.loads(stream.getvalue())["message"] == "plain"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in kept[0]:
            root.addHandler(handler)
        root.setLevel(kept[1])
