"""The gateway's plain parts: rate limits, key checks and their cache, query parsing."""
from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from services.gateway.auth import Authenticator, Caller
from services.gateway.problems import Problem
from services.gateway.ratelimit import RateLimiter
from services.gateway.routing import Param


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_the_minutes_allowance_then_refills_steadily():
    clock = Clock()
    limiter = RateLimiter(60, clock)
    assert all(limiter.check("k").allowed for _ in range(60))
    refused = limiter.check("k")
    assert not refused.allowed and refused.retry_after == 1
    clock.now += 1.0  # 60 a minute: one more a second
    assert limiter.check("k").allowed
    assert not limiter.check("k").allowed
    assert limiter.check("other").allowed  # each key has its own bucket


def test_a_keys_own_limit_overrides_the_default():
    limiter = RateLimiter(600, Clock())
    assert [limiter.check("k", 2).allowed for _ in range(3)] == [True, True, False]


def test_peeking_at_a_bucket_spends_nothing():
    clock = Clock()
    limiter = RateLimiter(2, clock)
    assert limiter.peek("k").allowed and limiter.peek("k").allowed
    assert [limiter.check("k").allowed for _ in range(3)] == [True, True, False]
    assert not limiter.peek("k").allowed and limiter.peek("k").retry_after == 30
    clock.now += 30
    assert limiter.peek("k").allowed


def test_the_bucket_table_is_bounded():
    limiter = RateLimiter(10, Clock(), max_keys=3)
    for key in "abcdef":
        limiter.check(key)
    assert len(limiter._buckets) == 3


VIEW = {"key_id": "0123456789abcdef", "store_id": "s", "name": "n", "scopes": ["read"],
        "rate_limit_per_minute": None}


def test_key_checks_are_cached_for_their_ttl_and_bad_keys_too():
    clock, calls = Clock(), []

    def lookup(key):
        calls.append(key)
        return VIEW if key == "good" else None

    auth = Authenticator(30, clock)
    assert auth.caller({"Authorization": "Bearer good"}, lookup).store_id == "s"
    auth.caller({"X-API-Key": "good"}, lookup)
    with pytest.raises(Problem) as bad:
        auth.caller({"Authorization": "Bearer bad"}, lookup)
    with pytest.raises(Problem):
        auth.caller({"Authorization": "Bearer bad"}, lookup)
    assert bad.value.status == 401 and calls == ["good", "bad"]
    clock.now += 31
    auth.caller({"Authorization": "Bearer good"}, lookup)
    assert calls == ["good", "bad", "good"]


def test_no_key_is_a_401_asking_for_one():
    with pytest.raises(Problem) as missing:
        Authenticator(30).caller({}, lambda key: VIEW)
    assert missing.value.status == 401 and "WWW-Authenticate" in missing.value.headers


def test_a_lookup_that_cannot_answer_caches_nothing():
    auth, answers = Authenticator(30, Clock()), [Problem(503, "down"), VIEW]

    def lookup(key):
        answer = answers.pop(0)
        if isinstance(answer, Problem):
            raise answer
        return answer

    with pytest.raises(Problem):
        auth.caller({"Authorization": "Bearer k"}, lookup)
    assert auth.caller({"Authorization": "Bearer k"}, lookup).key_id == VIEW["key_id"]


class KeyStore:
    """customer_sync's answer for each key, and how many times it was asked."""

    def __init__(self) -> None:
        self.views = {"k": VIEW}
        self.asked = 0

    def __call__(self, key: str) -> dict | None:
        self.asked += 1
        return self.views.get(key)


GOOD = {"Authorization": "Bearer k"}


def test_while_revocations_may_go_unheard_every_check_asks_customer_sync():
    auth, keys = Authenticator(30, Clock()), KeyStore()
    auth.caller(GOOD, keys)  # cached
    auth.broadcast_lost()
    keys.views.clear()  # revoked while the broadcast is not heard
    with pytest.raises(Problem) as refused:
        auth.caller(GOOD, keys)
    assert refused.value.status == 401
    keys.views["k"] = VIEW
    auth.caller(GOOD, keys)
    auth.caller(GOOD, keys)
    assert keys.asked == 4  # nothing cached meanwhile either


def test_when_revocations_are_heard_again_nothing_cached_before_counts():
    auth, keys = Authenticator(30, Clock()), KeyStore()
    auth.caller(GOOD, keys)
    auth.broadcast_lost()
    auth.broadcast_ready()
    keys.views.clear()  # revoked before the broadcast was heard again
    for _ in range(2):
        with pytest.raises(Problem) as refused:
            auth.caller(GOOD, keys)
        assert refused.value.status == 401
    assert keys.asked == 2  # and cached again, now that the broadcast is heard


@pytest.mark.parametrize("meanwhile", ["revoked", "lost", "lost and regained"])
def test_an_answer_fetched_across_a_revocation_or_a_lost_broadcast_is_not_cached(meanwhile):
    auth, keys = Authenticator(30, Clock()), KeyStore()
    events = {"revoked": [lambda: auth.forget_key(VIEW["key_id"])],
              "lost": [auth.broadcast_lost],
              "lost and regained": [auth.broadcast_lost, auth.broadcast_ready]}[meanwhile]

    def slow_lookup(key):  # the broadcast side moves while customer_sync answers
        view = keys(key)
        for event in events:
            event()
        return view

    assert auth.caller(GOOD, slow_lookup).key_id == VIEW["key_id"]
    if meanwhile == "lost":
        auth.broadcast_ready()
    auth.caller(GOOD, keys)
    assert keys.asked == 2


@pytest.mark.parametrize("scopes,scope,allowed", [
    ({"read"}, "read", True), ({"read"}, "write", False), ({"write"}, "read", True),
    ({"write"}, "gdpr", False), ({"gdpr"}, "read", False), ({"admin"}, "gdpr", True),
    ({"read", "gdpr"}, "gdpr", True), ({"write"}, "admin", False),
])
def test_scopes(scopes, scope, allowed):
    assert Caller("k", "s", "n", frozenset(scopes), None).may(scope) is allowed


def test_query_parameters_are_typed_and_checked():
    limit = Param("limit", "", "integer", default=50, minimum=1, maximum=500)
    assert limit.parse(MultiDict()) == 50
    assert limit.parse(MultiDict({"limit": "20"})) == 20
    for bad in ("0", "501", "ten"):
        with pytest.raises(Problem) as problem:
            limit.parse(MultiDict({"limit": bad}))
        assert problem.value.status == 400 and "limit" in problem.value.extra["errors"]
    tags = Param("tag", "", kind="list")
    assert tags.parse(MultiDict([("tag", "a,b"), ("tag", "c")])) == ["a", "b", "c"]
    assert tags.parse(MultiDict()) is None
    when = Param("after", "", "date-time")
    assert when.parse(MultiDict({"after": "2026-01-01T00:00:00Z"})) == "2026-01-01T00:00:00+00:00"
    # The last: before year 1 once in UTC (the API fuzzing found it overflowing into a 502).
    for bad in ("2026-01-01T00:00:00", "yesterday", "0001-01-01T00:00:00+14:00"):
        with pytest.raises(Problem) as problem:
            when.parse(MultiDict({"after": bad}))
        assert problem.value.status == 400 and "after" in problem.value.extra["errors"]
    status = Param("status", "", enum=("active", "inactive"))
    with pytest.raises(Problem):
        status.parse(MultiDict({"status": "gone"}))


@pytest.mark.parametrize("raw, message", [
    ("2026-01-01T00:00:00", "must carry a time zone (Z or +hh:mm)"),
    ("yesterday", "must be an ISO-8601 time, e.g. 2026-01-31T00:00:00Z"),
    ("0001-01-01T00:00:00+14:00", "is out of range in UTC (years 1 to 9999)"),
])
def test_a_date_time_parameter_refusal_names_the_parameter_and_says_why(raw, message):
    with pytest.raises(Problem) as problem:
        Param("registered_after", "", "date-time").parse(MultiDict({"registered_after": raw}))
    assert problem.value.status == 400
    assert problem.value.detail == f"query parameter registered_after {message}"
    assert problem.value.extra["errors"] == {"registered_after": [message]}


def test_a_date_time_parameter_is_passed_on_with_the_offset_it_was_sent_with():
    when = Param("due_before", "", "date-time")
    assert when.parse(MultiDict({"due_before": "2026-01-01T09:30:00+02:00"})) == \
        "2026-01-01T09:30:00+02:00"


def test_an_export_that_fails_mid_stream_breaks_the_download_rather_than_ending_it():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.gateway.handlers import transfer
    from services.gateway.routing import Context

    class Backends:
        timeout = 5

        def __init__(self):
            self.pages = [{"items": [{"customer_id": "1"}], "next_cursor": "c2"},
                          Problem(503, "the segmentation service is not running")]

        def call(self, service, method, *args, **kwargs):
            if method == "list_custom_fields":  # the CSV's custom.<key> columns: none
                return []
            page = self.pages.pop(0)
            if isinstance(page, Problem):
                raise page
            return page

    route = next(r for r in transfer.ROUTES if r.path == "/exports/customers")
    request = Request(EnvironBuilder(path="/api/v1/exports/customers").get_environ())
    query = {p.name: p.parse(request.args) for p in route.query}
    ctx = Context(request=request, request_id="r1", caller=Caller("k", "s", "n",
                                                                   frozenset({"read"}), None),
                  backends=Backends(), path={}, query=query, body=None)
    response = transfer.export_customers(ctx)
    assert response.status_code == 200  # the first page was read before answering
    with pytest.raises(Problem):  # raised through the server, which drops the connection
        list(response.response)


# Found by tests/integration/test_fuzz_api.py: these bodies answered 500 instead of 400.
@pytest.mark.parametrize("raw", [b"[" * 5000 + b"]" * 5000, b'{"a": ' + b"9" * 5000 + b"}",
                                 b"\xff\xfe{}"], ids=["deep", "long-number", "not-utf8"])
def test_bodies_json_cannot_read_are_400_problems(raw):
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.gateway.routing import Route, parse_json_body

    route = Route("POST", "/x", lambda ctx: None, "x", "t", body={"type": "object"})
    request = Request(EnvironBuilder(path="/api/v1/x", method="POST", data=raw,
                                     content_type="application/json").get_environ())
    with pytest.raises(Problem) as raised:
        parse_json_body(route, request, 1 << 20)
    assert (raised.value.status, raised.value.kind) == (400, "invalid-body")


@pytest.mark.parametrize("path", ["/api/v1/customers//loyalty", "/api/v1//customers",
                                  "/api/v1/customers/a//notes"])
def test_empty_path_segments_are_404_problems_not_redirects(path):
    """Found by tests/integration/test_fuzz_api.py: werkzeug's RequestRedirect for "//"
    escaped the router and answered 500."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.gateway.routes import build_routes
    from services.gateway.routing import Router

    request = Request(EnvironBuilder(path=path, method="GET").get_environ())
    with pytest.raises(Problem) as raised:
        Router(build_routes()).match(request)
    assert raised.value.status == 404


def test_a_bad_field_inside_a_nullable_object_is_named_not_the_object():
    """`coupon` may be an object or null: an object with a bad amount names `coupon/amount`
    (the console maps it to its field), not "coupon is not valid under any schema"."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from services.gateway.handlers.notifications import WORKFLOW_BODY
    from services.gateway.routing import Route, parse_json_body

    route = Route("POST", "/x", lambda ctx: None, "x", "t", body=WORKFLOW_BODY)
    good = {"name": "W", "trigger": {"event": "customer.created"}, "channel": "email",
            "template": "t", "purpose": "marketing",
            "coupon": {"type": "percent", "amount": 10, "currency": "EUR", "validity_days": 30}}

    def errors(body):
        request = Request(EnvironBuilder(path="/api/v1/x", method="POST", json=body
                                         ).get_environ())
        with pytest.raises(Problem) as raised:
            parse_json_body(route, request, 1 << 20)
        return raised.value.extra["errors"]

    assert set(errors({**good, "coupon": {**good["coupon"], "amount": 0}})) == {"coupon/amount"}
    assert set(errors({**good, "coupon": {**good["coupon"], "currency": "eur",
                                          "validity_days": 999}})) == {
        "coupon/currency", "coupon/validity_days"}
    assert set(errors({**good, "coupon": "ten percent"})) == {"coupon"}
    assert parse_json_body(route, Request(EnvironBuilder(
        path="/api/v1/x", method="POST", json={**good, "coupon": None}).get_environ()),
        1 << 20)["coupon"] is None
