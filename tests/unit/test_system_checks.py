"""The system tests' oracle (tests/system/scenario.py), its one excuse: a message missing
because its sender was killed while handing it to the provider ("outcome unknown", at most once
by design). The excuse holds only in a run that killed a sender; anywhere else such a send is a
fault the checks must report, not pass over."""
from __future__ import annotations

from tests.system.scenario import outcome_unknown_sends

LOG = [
    {"_id": "s1", "channel": "email", "status": "failed",
     "reason": "outcome unknown: the sender stopped while the provider had the message"},
    {"_id": "s2", "channel": "sms", "status": "failed",
     "reason": "outcome unknown: the sender stopped while the provider had the message"},
    {"_id": "s3", "channel": "email", "status": "failed", "reason": "mailbox unavailable"},
    {"_id": "s4", "channel": "email", "status": "sent", "reason": None},
]


def test_a_run_that_killed_a_sender_may_excuse_an_outcome_unknown_send():
    assert outcome_unknown_sends(LOG, "email", senders_killed=True) == ["s1"]
    assert outcome_unknown_sends(LOG, "sms", senders_killed=True) == ["s2"]


def test_without_a_killed_sender_nothing_is_excused():
    assert outcome_unknown_sends(LOG, "email", senders_killed=False) == []
    assert outcome_unknown_sends(LOG, "sms", senders_killed=False) == []
