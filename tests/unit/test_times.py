"""shared/times.py: what callers' times and stored documents become."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.errors import ValidationError
from shared.times import RefusedTime, check_aware, iso, iso_everywhere, iso_ms, parse_aware, utc_ms


def test_parse_aware_answers_utc_whatever_offset_the_caller_gave():
    assert parse_aware("when", "2026-03-01T12:00:00+02:00") == \
        datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def test_parse_aware_refuses_a_naive_time_naming_the_field():
    with pytest.raises(ValidationError) as refused:
        parse_aware("expires_at", "2026-03-01T12:00:00")
    assert str(refused.value) == "expires_at must include its UTC offset"
    assert refused.value.details == {"fields": {"expires_at": ["naive"]}}


def test_parse_aware_says_what_was_expected_of_text_that_is_no_time():
    with pytest.raises(ValidationError) as refused:
        parse_aware("when", "tomorrow", "'now' or an ISO-8601 time with its offset")
    assert str(refused.value) == "when must be 'now' or an ISO-8601 time with its offset"
    assert refused.value.details == {"fields": {"when": ["invalid"]}}


def test_parse_aware_refuses_a_time_outside_the_calendar_once_in_utc():
    with pytest.raises(ValidationError) as refused:
        parse_aware("when", "0001-01-01T00:30:00+01:00")
    assert refused.value.details == {"fields": {"when": ["invalid"]}}


def test_check_aware_keeps_the_offset_the_time_was_written_with():
    checked = check_aware("2026-03-01T12:00:00+02:00")
    assert checked.isoformat() == "2026-03-01T12:00:00+02:00"
    assert check_aware("2026-03-01T12:00:00Z").isoformat() == "2026-03-01T12:00:00+00:00"
    aware = datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert check_aware(aware) is aware


@pytest.mark.parametrize("value, reason", [
    ("2026-03-01T12:00:00", "naive"), (datetime(2026, 3, 1, 12), "naive"),
    ("yesterday", "invalid"), ("", "invalid"),
    ("0001-01-01T00:00:00+14:00", "out_of_range"), ("9999-12-31T23:30:00-01:00", "out_of_range"),
])
def test_check_aware_says_why_it_refuses_a_time(value, reason):
    with pytest.raises(RefusedTime) as refused:
        check_aware(value)
    assert refused.value.reason == reason
    assert isinstance(refused.value, ValueError)


def test_parse_aware_words_a_time_out_of_range_and_answers_utc():
    with pytest.raises(ValidationError, match="^when is out of range in UTC$"):
        parse_aware("when", "9999-12-31T23:30:00-01:00")
    assert parse_aware("when", "2026-03-01T12:00:00Z").tzinfo is timezone.utc


def test_iso_everywhere_writes_times_at_any_depth_and_drops_the_named_keys():
    at = datetime(2026, 3, 1, 10, 0)  # naive: read as UTC
    doc = {"sent_at": at, "outbox": [1], "attempts": [{"at": at + timedelta(seconds=1),
                                                       "outbox": 2, "n": 3}]}
    assert iso_everywhere(doc, drop=("outbox",)) == {
        "sent_at": "2026-03-01T10:00:00+00:00",
        "attempts": [{"at": "2026-03-01T10:00:01+00:00", "n": 3}]}
    assert iso_everywhere(doc)["outbox"] == [1]


PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize("value, text", [
    (None, None), ("not a time", "not a time"),
    (datetime(2026, 3, 1, 10, 0, 0, 123456), "2026-03-01T10:00:00.123456+00:00"),  # naive: UTC
    (datetime(2026, 3, 1, 12, 0, tzinfo=PLUS_TWO), "2026-03-01T12:00:00+02:00"),
])
def test_iso_writes_times_with_their_offset_and_leaves_anything_else(value, text):
    assert iso(value) == text


@pytest.mark.parametrize("value, text", [
    (None, None), ("not a time", "not a time"),
    (datetime(2026, 3, 1, 10, 0, 0, 123456), "2026-03-01T10:00:00.123000+00:00"),
    (datetime(2026, 3, 1, 12, 0, 0, 999999, tzinfo=PLUS_TWO), "2026-03-01T10:00:00.999000+00:00"),
])
def test_iso_ms_writes_times_in_utc_cut_to_the_millisecond(value, text):
    assert iso_ms(value) == text


def test_utc_ms_reads_datetimes_only_as_mongodb_keeps_them():
    naive = datetime(2026, 1, 2, 3, 4, 5, 678901)
    assert utc_ms(naive) == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    plus_two = datetime(2026, 1, 2, 5, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert utc_ms(plus_two) == datetime(2026, 1, 2, 3, 4, 5, 999000, tzinfo=timezone.utc)
    assert utc_ms("2026-01-02T03:04:05Z") is None and utc_ms(None) is None


def test_utc_ms_answers_none_for_a_time_outside_the_calendar_in_utc():
    """Year 1 at +14:00 is before year 1 in UTC: no time, not a crash (a cursor can carry one)."""
    assert utc_ms(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))) is None
