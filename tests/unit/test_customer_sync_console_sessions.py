"""The console's sessions as customer_sync keeps them: opened only with a live key, ended by
sign-out, by revoking the key, by the idle timeout and by the maximum age (a pinned clock)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.customer_sync.api_keys import ApiKeys
from services.customer_sync.console_sessions import ConsoleSessions
from shared.errors import NotFound, ValidationError

# In the future: mongomock applies the records' TTL index against the real clock, and would
# drop records whose pinned times lie in the past.
START = datetime(2090, 3, 1, 9, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def world(database):
    clock = Clock()
    keys = ApiKeys(database["api_keys"], now=clock)
    sessions = ConsoleSessions(database["console_sessions"], keys, now=clock)
    keys.ensure_indexes()
    sessions.ensure_indexes()
    return clock, keys, sessions


def test_a_session_opens_only_with_a_live_key(world):
    _, keys, sessions = world
    key = keys.create("shop", "desk", ["read"], "test")
    for bad in ("", "wcc_nope", key["api_key"] + "x"):
        with pytest.raises(NotFound):
            sessions.open(bad, 60, 3600)
    opened = sessions.open(key["api_key"], 60, 3600)
    assert opened["key"]["key_id"] == key["key_id"] and opened["session"].startswith("wcs_")
    keys.revoke("shop", key["key_id"], "test")
    with pytest.raises(NotFound):
        sessions.open(key["api_key"], 60, 3600)


@pytest.mark.parametrize("idle, max_age", [(0, 3600), (60, 0), (True, 3600), ("60", 3600),
                                           (86401, 3600), (60, 30 * 86400 + 1), (None, 60)])
def test_limits_out_of_bounds_are_refused_with_the_field_named(world, idle, max_age):
    _, keys, sessions = world
    key = keys.create("shop", "desk", ["read"], "test")
    with pytest.raises(ValidationError) as refused:
        sessions.open(key["api_key"], idle, max_age)
    assert set(refused.value.details["fields"]) <= {"idle_seconds", "max_age_seconds"}
    assert sessions.collection.count_documents({}) == 0


def test_signing_out_ends_it_and_twice_is_no_error(world):
    _, keys, sessions = world
    opened = sessions.open(keys.create("shop", "desk", ["read"], "test")["api_key"], 60, 3600)
    assert sessions.check(opened["session"])["session_id"] == opened["session_id"]
    assert sessions.end(opened["session"]) is True
    assert sessions.end(opened["session"]) is False
    with pytest.raises(NotFound):
        sessions.check(opened["session"])


def test_revoking_the_key_ends_its_sessions_and_no_other(world):
    _, keys, sessions = world
    key, other = (keys.create("shop", name, ["read"], "test") for name in ("a", "b"))
    first, second = (sessions.open(key["api_key"], 60, 3600) for _ in range(2))
    kept = sessions.open(other["api_key"], 60, 3600)
    keys.revoke("shop", key["key_id"], "test")
    for opened in (first, second):  # refused at once, before end_for_key has run
        with pytest.raises(NotFound):
            sessions.check(opened["session"])
    assert sessions.end_for_key(key["key_id"]) == 2
    assert sessions.collection.count_documents({"ended_because": "key_revoked"}) == 2
    assert sessions.check(kept["session"])["key"]["key_id"] == other["key_id"]


def test_a_session_ends_when_idle_and_requests_keep_it_open(world):
    clock, keys, sessions = world
    opened = sessions.open(keys.create("shop", "desk", ["read"], "test")["api_key"], 60, 3600)
    for _ in range(5):  # a request every 50 s for over four minutes
        clock.advance(seconds=50)
        sessions.check(opened["session"])
    clock.advance(seconds=61)
    with pytest.raises(NotFound):
        sessions.check(opened["session"])


def test_a_session_ends_at_its_maximum_age_however_busy(world):
    clock, keys, sessions = world
    opened = sessions.open(keys.create("shop", "desk", ["read"], "test")["api_key"], 600, 1800)
    for _ in range(5):
        clock.advance(seconds=350)  # 1750 s after sign-in
        sessions.check(opened["session"])
    clock.advance(seconds=50)
    with pytest.raises(NotFound):
        sessions.check(opened["session"])
    assert opened["expires_at"] == (START + timedelta(seconds=1800)).isoformat()
