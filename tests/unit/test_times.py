"""shared/times.py: what callers' times and stored documents become."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.errors import ValidationError
from shared.times import iso_everywhere, parse_aware


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


def test_iso_everywhere_writes_times_at_any_depth_and_drops_the_named_keys():
    at = datetime(2026, 3, 1, 10, 0)  # naive: read as UTC
    doc = {"sent_at": at, "outbox": [1], "attempts": [{"at": at + timedelta(seconds=1),
                                                       "outbox": 2, "n": 3}]}
    assert iso_everywhere(doc, drop=("outbox",)) == {
        "sent_at": "2026-03-01T10:00:00+00:00",
        "attempts": [{"at": "2026-03-01T10:00:01+00:00", "n": 3}]}
    assert iso_everywhere(doc)["outbox"] == [1]
