"""The bounce and complaint report door, attacked over HTTP on the running notifications
service: a report that would suppress someone's email must be signed with the shared secret,
bounded in size and well formed, and whatever it refuses leaves the database as it was.

A forged report is the attack that matters: anyone who could post one would silence a
store's mail to any address (a competitor's customers, an order confirmation)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import requests

from services.notifications.email_reports import (MAX_BODY_BYTES, REPORT_PATH,
                                                  SIGNATURE_HEADER, signature_of)
from shared import mongo
from tests.integration.test_notifications import STORE, customer, known, rpc, start  # noqa: F401
from tests.support import publish

SECRET = "security-report-secret-0123456789"


def _database(services):
    return mongo.connect(services.mongo_uri)["companion_notifications"]


def _counts(services) -> dict[str, int]:
    db = _database(services)
    return {name: db[name].count_documents({}) for name in db.list_collection_names()}


def _post(base: str, raw: bytes, signature: str | None, **headers) -> requests.Response:
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return requests.post(base + REPORT_PATH, data=raw, timeout=10,
                         headers={"Content-Type": "application/json", **headers})


def _signed(base: str, body, secret: str = SECRET) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _post(base, raw, signature_of(secret, raw))


def _bounce(**fields) -> dict:
    at = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    return {"store_id": STORE, "email": "ada@example.com", "kind": "bounce", "time": at,
            **fields}


def test_forged_oversized_and_malformed_reports_are_refused_and_store_nothing(
        services, smtp, twilio, rpc):
    _, base = start(services, smtp, twilio, EMAIL_REPORT_SECRET=SECRET)
    publish(services.amqp_uri, customer("x1", "ada@example.com"))
    known(rpc, "x1", None)
    before = _counts(services)
    raw = json.dumps(_bounce()).encode()

    forged = {
        "no signature": _post(base, raw, None),
        "empty signature": _post(base, raw, ""),
        "zeros": _post(base, raw, "sha256=" + "0" * 64),
        "another secret": _post(base, raw, signature_of("guessed-secret", raw)),
        "another body's": _post(base, raw, signature_of(SECRET, raw + b" ")),
        "the digest without its prefix": _post(base, raw, signature_of(SECRET, raw)[7:]),
        "signed with an empty secret": _post(base, raw, signature_of("", raw)),
    }
    assert {name: r.status_code for name, r in forged.items()} == {n: 401 for n in forged}

    big = json.dumps(_bounce(detail="x" * MAX_BODY_BYTES)).encode()
    assert _signed(base, big).status_code == 413

    def chunks():  # no Content-Length: the door still reads at most its bound
        for _ in range(MAX_BODY_BYTES // 1024 + 4):
            yield b" " * 1024
    chunked = requests.post(base + REPORT_PATH, data=chunks(), timeout=10,
                            headers={SIGNATURE_HEADER: "sha256=" + "0" * 64})
    assert chunked.status_code in (401, 413)

    malformed = {
        "not JSON": (b"{nope", "body"), "a list": (b"[]", "body"),
        "nested past the recursion limit": (b"[" * 5000 + b"]" * 5000, "body"),
        "two addresses": (_bounce(email="ada@example.com,eve@evil.example"), "email"),
        "a header injection": (_bounce(email="ada@example.com\r\nBcc: eve@evil.example"),
                               "email"),
        "a kind of its own": (_bounce(kind="unsubscribe-everyone"), "kind"),
        "NaN time": (json.dumps(_bounce(time="@@")).replace('"@@"', "NaN").encode(), "time"),
        "a far future": (_bounce(time="9999-12-31T23:59:59+00:00"), "time"),
        "a naive time": (_bounce(time="2026-01-01T00:00:00"), "time"),
        "an unknown store": (_bounce(store_id="someone-else"), "store_id"),
        "a store id with a path": (_bounce(store_id="../nt"), "store_id"),
        "an extra field": (_bounce(customer_id="x1"), "customer_id"),
        "a detail over its bound": (_bounce(detail="x" * 600), "detail"),
    }
    for name, (body, field) in malformed.items():
        answer = _signed(base, body)
        assert answer.status_code == 400, (name, answer.status_code, answer.text[:200])
        assert field in answer.json().get("errors", {}), (name, answer.text[:200])

    assert _counts(services) == before, "a refused report stored something"
    assert _database(services)["suppressions"].count_documents({}) == 0


def test_a_door_without_a_secret_refuses_every_report(services, smtp, twilio, rpc):
    _, base = start(services, smtp, twilio)  # EMAIL_REPORT_SECRET left empty
    publish(services.amqp_uri, customer("x2", "ada@example.com"))
    known(rpc, "x2", None)
    raw = json.dumps(_bounce()).encode()
    for signature in (signature_of("", raw), None, "sha256="):
        answer = _post(base, raw, signature)
        assert answer.status_code == 401 and "EMAIL_REPORT_SECRET" in answer.text
    assert _database(services)["suppressions"].count_documents({}) == 0


def test_a_replayed_report_changes_nothing_and_reaches_only_its_store(
        services, smtp, twilio, rpc):
    _, base = start(services, smtp, twilio, EMAIL_REPORT_SECRET=SECRET)
    publish(services.amqp_uri, customer("x3", "ada@example.com"))
    known(rpc, "x3", None)
    report = _bounce()
    assert _signed(base, report).json()["changed"] is True
    for _ in range(3):
        assert _signed(base, report).json()["changed"] is False
    [doc] = _database(services)["suppressions"].find()
    assert doc["store_id"] == STORE and len(doc["history"]) == 1
    assert rpc.notifications.list_suppressions("another-store")["items"] == []
