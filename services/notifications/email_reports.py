"""The door for bounces and complaints reported after a message left: a signed JSON report
from whatever relays them (a mail provider's webhook, a bounce-mailbox parser), one address
at a time.

    POST /email/reports
    X-Companion-Signature: sha256=<hex HMAC-SHA256 of the raw body, key EMAIL_REPORT_SECRET>
    {"store_id": "shop-1", "email": "ada@example.com", "kind": "bounce" | "complaint",
     "time": "2026-12-06T14:00:00Z", "detail": "optional, the provider's words"}

It answers 401 before reading anything when the signature is missing or wrong (or no secret is
set), 413 past MAX_BODY_BYTES, 400 naming the field for anything malformed, and stores nothing
when it refuses. The same report sent again changes nothing (its key is store, address, kind
and time), so a relay may retry until it gets a 2xx.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from services.notifications.suppression import Change, Suppressions
from shared.email_addresses import single_address
from shared.web import PROBLEM_TYPE_BASE

REPORT_PATH = "/email/reports"
SIGNATURE_HEADER = "X-Companion-Signature"
MAX_BODY_BYTES = 16 * 1024
DETAIL_MAX_CHARS = 500
CLOCK_SKEW = timedelta(minutes=5)  # a report dated later than now plus this is refused
KINDS = ("bounce", "complaint")
FIELDS = ("store_id", "email", "kind", "time", "detail")
_STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Refused(Exception):
    """A report not taken, with the HTTP status and the fields at fault."""

    def __init__(self, status: int, detail: str, fields: dict[str, list[str]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.fields = fields or {}


@dataclass(frozen=True)
class Report:
    store_id: str
    email: str
    kind: str
    at: datetime
    detail: str = ""

    @property
    def key(self) -> str:
        """The report's identity, so a repeat is recognised whatever its detail says."""
        text = f"{self.store_id}|{self.email.lower()}|{self.kind}|{self.at.isoformat()}"
        return "report:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def signature_of(secret: str, body: bytes) -> str:
    """What the signature header must say for `body` (senders compute the same)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> None:
    """Refused (401) unless the header is the body's HMAC with the secret, compared in constant
    time. Without a secret nothing can be verified, so everything is refused."""
    if not secret:
        raise Refused(401, "email reports are not accepted: EMAIL_REPORT_SECRET is not set")
    if not header or not hmac.compare_digest(header.strip().encode(),
                                             signature_of(secret, body).encode()):
        raise Refused(401, f"{SIGNATURE_HEADER} is missing or does not match the body")


def parse(body: bytes, now: datetime) -> Report:
    """The report in `body`, or Refused (400) naming every field at fault."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting
        raise Refused(400, "the body is not JSON", {"body": ["must be a JSON object"]}) from None
    if not isinstance(data, dict):
        raise Refused(400, "the body is not a JSON object", {"body": ["must be a JSON object"]})
    errors: dict[str, list[str]] = {}
    for name in sorted(set(data) - set(FIELDS)):
        errors[name[:64]] = ["unknown field"]
    store_id = data.get("store_id")
    if not isinstance(store_id, str) or not _STORE_ID.match(store_id):
        errors["store_id"] = ["required: the store that sent the message"]
    email = single_address(data.get("email"))
    if email is None:
        errors["email"] = ["required: exactly one email address"]
    kind = data.get("kind")
    if kind not in KINDS:
        errors["kind"] = ["must be bounce or complaint"]
    at = _time(data.get("time"))
    if at is None:
        errors["time"] = ["required: an ISO-8601 time with its UTC offset"]
    elif at > now + CLOCK_SKEW:
        errors["time"] = ["is in the future"]
    detail = data.get("detail", "")
    if not isinstance(detail, str) or len(detail) > DETAIL_MAX_CHARS \
            or _CONTROL.search(detail):
        errors["detail"] = [f"a string of at most {DETAIL_MAX_CHARS} characters, one line"]
    if errors:
        summary = "; ".join(f"{k}: {v[0]}" for k, v in sorted(errors.items()))
        raise Refused(400, f"the report was not taken: {summary}", errors)
    return Report(store_id, email, kind, at, detail)


def _time(value) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        return None


def receive(suppressions: Suppressions, store_known: Callable[[str], bool], secret: str,
            body: bytes, signature: str | None, now: datetime) -> dict:
    """Verify, parse and apply one report; Refused for anything not taken (nothing stored).
    Answers whether it changed anything and whether the address is now suppressed."""
    verify(secret, body, signature)
    report = parse(body, now)
    if not store_known(report.store_id):
        raise Refused(400, f"the report was not taken: no store {report.store_id}",
                      {"store_id": ["no such store"]})
    changed = suppressions.suppress(report.store_id, report.kind, report.email, Change(
        "suppressed", report.at, report.kind, "report", report.detail, report.key))
    record = suppressions.repository.get(report.store_id, "email", report.email) or {}
    return {"changed": changed, "suppressed": bool(record.get("active")),
            "kinds": sorted(record.get("kinds") or [])}


def bounded_body(request) -> bytes:
    """The raw body, read no further than MAX_BODY_BYTES (with or without a Content-Length);
    Refused (413) past it."""
    too_big = Refused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_big
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise too_big
    return body


def answer(suppressions: Suppressions, store_known: Callable[[str], bool], secret: str,
           request, now: datetime) -> tuple[int, dict]:
    """The HTTP answer to one posted report: 200 with what it did, or the refusal as problem
    details naming the fields at fault."""
    try:
        return 200, receive(suppressions, store_known, secret, bounded_body(request),
                            request.headers.get(SIGNATURE_HEADER), now)
    except Refused as refused:
        return refused.status, {
            "type": f"{PROBLEM_TYPE_BASE}email-report-refused", "title": "Report not taken",
            "status": refused.status, "detail": refused.detail,
            **({"errors": refused.fields} if refused.fields else {})}
