"""A fake Twilio: the REST Messages API over real HTTP, and Twilio's signed webhooks.

The notifications service sends SMS with the real `twilio` client (9.13) and receives delivery
status callbacks and inbound SMS on its own HTTP endpoints. Its tests point the client at this
server and let this server post the webhooks, so auth, form encoding, error JSON and
X-Twilio-Signature are the real ones.

Pointing the twilio client here: twilio 9.13 has no base-URL setting. Every API domain carries a
fixed `https://<product>.twilio.com` (`region`/`edge`, and the TWILIO_REGION/TWILIO_EDGE
variables, only change the host *within* twilio.com), and every request goes through the
`http_client` the Client was given, which is a public constructor argument. So a three-line
`TwilioHttpClient` subclass moves the scheme and host (after any region/edge rewrite) to the
local base URL and leaves path, query, body, headers and auth alone:

    from urllib.parse import urlsplit
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    class LocalTwilioHttpClient(TwilioHttpClient):
        def __init__(self, base_url: str, **kwargs):
            super().__init__(**kwargs)
            self.base_url = base_url.rstrip("/")

        def request(self, method, url, *args, **kwargs):
            parts = urlsplit(url)
            if parts.hostname and parts.hostname.endswith(".twilio.com"):
                url = self.base_url + url[len(f"{parts.scheme}://{parts.netloc}"):]
            return super().request(method, url, *args, **kwargs)

    client = Client(twilio.account_sid, twilio.auth_token,
                    http_client=LocalTwilioHttpClient(twilio.base_url))

(That class is `LocalTwilioHttpClient` below. Setting `client.api.base_url` also works but is an
attribute of the generated Domain object, not a documented setting, and breaks as soon as a
region or edge is configured: the client then splits "127.0.0.1:port" as if it were a
twilio.com host name.)

    with FakeTwilio() as twilio:
        client = twilio.client()           # the real twilio.rest.Client, pointed here
        sent = client.messages.create(to="+4915112345678", from_=twilio.phone_number,
                                      body="Your order shipped", status_callback=callback_url)
        twilio.messages[0].body            # what was posted
        answer = twilio.send_status_callback(sent.sid, "delivered")   # to StatusCallback
        answer.status, answer.body         # the service's reply
        twilio.send_inbound(inbound_url, "+4915112345678", twilio.phone_number, "STOP")

Behaviours (Twilio's unless marked "fake"):

- Routes: POST .../Accounts/{AccountSid}/Messages.json (create, 201) and GET
  .../Messages/{Sid}.json (fetch); anything else is 404 code 20404 (fake: Twilio serves more).
- Auth: HTTP Basic with the account SID and auth token (or an API key SID and secret given in
  `api_keys`); anything else is 401 code 20003 "Authenticate". A URL naming another account is
  also 401 20003 (fake).
- Create: To is required (21604), From or MessagingServiceSid (21603), Body or MediaUrl (21602);
  a To that is not +E.164 once spaces, dashes, dots and parentheses are removed is 21211 "The
  'To' number ... is not a valid phone number."; Body over 1600 characters is 21617. With
  `own_numbers`, a From not among them is 21606. The answer is the message resource: sid "SM" +
  32 hex (seeded, so repeatable), status "queued" ("accepted" when sent through a Messaging
  Service, whose `from` is then null), RFC 2822 dates, num_segments from GSM-7/UCS-2 length.
- Faults (switchable while running, consumed one per request, any route, before auth):
  `fail_next(n, 429|500|503)` (codes 20429/20500/20503), `drop_next(n)` (connection closed
  without an answer: the twilio client raises requests' ConnectionError, not a Twilio error).
  Per recipient: `reject_to(number, code)` answers 400 with that code (21211, 21610, 21614,
  21408, 21612 have Twilio's texts), `unsubscribe(number)` is `reject_to(number, 21610)` "Attempt
  to send to unsubscribed recipient" (fake: per recipient, where Twilio keeps it per sender and
  recipient pair).
- Webhooks towards the service: form-encoded POSTs signed with X-Twilio-Signature, i.e.
  `RequestValidator(auth_token).compute_signature(url, params)` over exactly the URL posted to
  (query included), or over `signed_url` when given (the public URL, when the test posts to
  the service directly). `signature="bad"` (any string) sends that instead, `signature=""` sends
  no header. An inbound STOP/STOPALL/UNSUBSCRIBE/CANCEL/END/QUIT (whole body, any case) also
  unsubscribes the sender and START/YES/UNSTOP resubscribes it, as Twilio's default opt-out
  handling does; Twilio still forwards those messages to the webhook.
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Callable, Iterable, Mapping, NamedTuple
from urllib.parse import parse_qs, urlsplit

import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from demo.http_stand_in import ServedStandIn

API_VERSION = "2010-04-01"
DEFAULT_PHONE_NUMBER = "+15005550006"
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
# MessageStatus values an outbound message can have (and a status callback can carry)
MESSAGE_STATUSES = ("accepted", "scheduled", "queued", "sending", "sent", "delivered",
                    "undelivered", "failed", "read", "canceled")
DEFAULT_ERROR_CODES = {"undelivered": 30003, "failed": 30008}  # Unreachable handset, Unknown
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")  # two septets each
_TO_ERRORS = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
           "'To' number: {to}.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
           "number: {from_} via SMS.",
    21614: "'To' number is not a valid mobile number",
}
_FAULT_ERRORS = {429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error"),
                 503: (20503, "Service Unavailable")}


# --------------------------------------------------------------------------------------------
# Module-level helpers (a receiver's tests need them without a running fake)
# --------------------------------------------------------------------------------------------

class LocalTwilioHttpClient(TwilioHttpClient):
    """The twilio HTTP client, sending what it would send to *.twilio.com to `base_url` instead.

    Only scheme and host change, after the Client applied any region/edge to the host.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith(".twilio.com"):
            url = self.base_url + url[len(f"{parts.scheme}://{parts.netloc}"):]
        return super().request(method, url, *args, **kwargs)


def sign(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """X-Twilio-Signature of a form POST to `url`: the twilio library's own computation."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))


def num_segments(body: str) -> int:
    """SMS segments Twilio bills for `body`: GSM-7 160/153 septets, else UCS-2 70/67 units."""
    if all(c in _GSM7 or c in _GSM7_EXTENDED for c in body):
        length = sum(2 if c in _GSM7_EXTENDED else 1 for c in body)
        single, multi = 160, 153
    else:
        length = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if length <= single else -(-length // multi)


class WebhookAnswer(NamedTuple):
    """What the service answered to a webhook, and what was sent (for assertions)."""

    status: int
    body: str
    params: dict[str, str]
    signature: str | None  # the header value sent, None when omitted


@dataclass
class SentMessage:
    """An outbound message the fake accepted; `status` follows the callbacks sent for it."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    status: str
    date_created: datetime
    form: dict[str, list[str]]  # every posted field, as posted
    media_urls: list[str] = field(default_factory=list)
    error_code: int | None = None
    auth_username: str = ""  # account SID or API key SID the request authenticated with


@dataclass
class InboundMessage:
    """An inbound SMS the fake posted to the service with send_inbound()."""

    sid: str
    from_: str
    to: str
    body: str
    answer: WebhookAnswer


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status}


class _Fault(NamedTuple):
    kind: str  # "fail" | "drop"
    status: int = 0
    retry_after: str | None = None


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------

class FakeTwilio(ServedStandIn):
    """Twilio's Messages API on 127.0.0.1 plus its webhooks (see the module doc)."""

    thread_name, software, title = "fake-twilio", "nginx", "the fake Twilio"

    def __init__(
        self,
        seed: int = 1,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_keys: Mapping[str, str] | None = None,
        phone_number: str = DEFAULT_PHONE_NUMBER,
        own_numbers: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.seed = seed
        self.account_sid = account_sid or "AC" + hashlib.md5(f"account-{seed}".encode()).hexdigest()
        self.auth_token = auth_token or hashlib.md5(f"auth-token-{seed}".encode()).hexdigest()
        self.api_keys = dict(api_keys or {})
        self.phone_number = phone_number
        self.own_numbers = None if own_numbers is None else set(own_numbers)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

        self.messages: list[SentMessage] = []
        self.inbound: list[InboundMessage] = []
        self.requests_log: list[tuple[str, str, int]] = []  # method, path, status (0: dropped)

        self._by_sid: dict[str, SentMessage] = {}
        self._rejected: dict[str, int] = {}
        self._faults: deque[_Fault] = deque()
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._serving_state()

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """Where https://api.twilio.com is served (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def http_client(self, **kwargs: Any) -> LocalTwilioHttpClient:
        return LocalTwilioHttpClient(self.base_url, **kwargs)

    def client(self, username: str | None = None, password: str | None = None) -> Client:
        """A real twilio Client pointed here, with the account's credentials by default."""
        return Client(username or self.account_sid, password or self.auth_token,
                      account_sid=self.account_sid, http_client=self.http_client())

    # ---------------------------------------------------------------- faults

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None) -> None:
        """The next `count` requests answer `status` (429, 500 or 503) with Twilio's error JSON."""
        if status not in _FAULT_ERRORS:
            raise ValueError(f"status must be one of {sorted(_FAULT_ERRORS)}")
        with self._lock:
            self._faults.extend(_Fault("fail", status, retry_after) for _ in range(count))

    def drop_next(self, count: int) -> None:
        """The next `count` requests get their connection closed without an answer."""
        with self._lock:
            self._faults.extend(_Fault("drop") for _ in range(count))

    def reject_to(self, number: str, code: int = 21211) -> None:
        """Sending to `number` answers 400 with Twilio error `code` until accept_to(number)."""
        with self._lock:
            self._rejected[_normalise(number)] = code

    def accept_to(self, number: str) -> None:
        with self._lock:
            self._rejected.pop(_normalise(number), None)

    def unsubscribe(self, number: str) -> None:
        """`number` replied STOP: sending to it answers 21610."""
        self.reject_to(number, 21610)

    def resubscribe(self, number: str) -> None:
        with self._lock:
            if self._rejected.get(_normalise(number)) == 21610:
                del self._rejected[_normalise(number)]

    def is_unsubscribed(self, number: str) -> bool:
        with self._lock:
            return self._rejected.get(_normalise(number)) == 21610

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._rejected.clear()

    # ---------------------------------------------------------------- webhooks to the service

    def send_status_callback(
        self,
        message_sid: str,
        status: str,
        url: str | None = None,
        auth_token: str | None = None,
        extra: Mapping[str, str] | None = None,
        *,
        error_code: int | None = None,
        signature: str | None = None,
        signed_url: str | None = None,
        timeout: float = 10.0,
    ) -> WebhookAnswer:
        """POST a delivery status callback for `message_sid` as Twilio does, signed.

        `url` defaults to the message's StatusCallback and `auth_token` to this account's.
        "failed" and "undelivered" carry an ErrorCode (30008 / 30003 unless `error_code`).
        `extra` adds or overrides form fields (e.g. To/From for a SID this fake never sent).
        The message's recorded status (and what GET returns) follows. `signed_url` signs for
        another URL than the one posted to: the public URL Twilio was given, when the test posts
        straight to the service behind it.
        """
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(MESSAGE_STATUSES)}")
        with self._lock:
            message = self._by_sid.get(message_sid)
        if url is None:
            if message is None or not message.status_callback:
                raise ValueError(f"no url given and no StatusCallback known for {message_sid}")
            url = message.status_callback
        params = {"MessageSid": message_sid, "SmsSid": message_sid, "MessageStatus": status,
                  "SmsStatus": status, "AccountSid": self.account_sid, "ApiVersion": API_VERSION}
        if message is not None:
            params["To"] = message.to
            if message.from_:
                params["From"] = message.from_
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
        if status in DEFAULT_ERROR_CODES:
            error_code = error_code or DEFAULT_ERROR_CODES[status]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        params.update(extra or {})
        if message is not None:
            with self._lock:
                message.status = status
                message.error_code = error_code
        return self._post_webhook(url, params, auth_token, signature, signed_url, timeout)

    def send_inbound(
        self,
        url: str,
        from_: str,
        to: str,
        body: str,
        auth_token: str | None = None,
        *,
        extra: Mapping[str, str] | None = None,
        signature: str | None = None,
        signed_url: str | None = None,
        timeout: float = 10.0,
    ) -> WebhookAnswer:
        """POST an incoming SMS webhook as Twilio does, signed; STOP/START change subscriptions.

        `signature` and `signed_url` as for send_status_callback.
        """
        keyword = body.strip().upper()
        if keyword in OPT_OUT_KEYWORDS:
            self.unsubscribe(from_)
        elif keyword in OPT_IN_KEYWORDS:
            self.resubscribe(from_)
        sid = self._new_sid("SM")
        params = {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid,
                  "AccountSid": self.account_sid, "From": from_, "To": to, "Body": body,
                  "NumMedia": "0", "NumSegments": str(num_segments(body)),
                  "SmsStatus": "received", "ApiVersion": API_VERSION}
        params.update(extra or {})
        answer = self._post_webhook(url, params, auth_token, signature, signed_url, timeout)
        with self._lock:
            self.inbound.append(InboundMessage(sid, from_, to, body, answer))
        return answer

    def _post_webhook(self, url: str, params: dict[str, str], auth_token: str | None,
                      signature: str | None, signed_url: str | None, timeout: float
                      ) -> WebhookAnswer:
        if signature is None:
            signature = sign(signed_url or url, params, auth_token or self.auth_token)
        headers = {"User-Agent": WEBHOOK_USER_AGENT,
                   "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                   "I-Twilio-Idempotency-Token": self._new_uuid(), "X-Home-Region": "us1"}
        if signature:
            headers["X-Twilio-Signature"] = signature
        response = requests.post(url, data=params, headers=headers, timeout=timeout,
                                 allow_redirects=False)
        return WebhookAnswer(response.status_code, response.text, params, signature or None)

    # ---------------------------------------------------------------- the API

    def message(self, sid: str) -> SentMessage:
        with self._lock:
            return self._by_sid[sid]

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes
               ) -> tuple[int, dict[str, str], bytes] | None:
        """One request: (status, headers, body), or None to drop the connection."""
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        route = urlsplit(path).path
        try:
            if fault is not None:
                if fault.kind == "drop":
                    self._log(method, route, 0)
                    return None
                code, text = _FAULT_ERRORS[fault.status]
                raise _ApiError(fault.status, code, text,
                                {"Retry-After": fault.retry_after} if fault.retry_after else {})
            match = re.fullmatch(rf"/{API_VERSION}/Accounts/(AC[0-9a-f]{{32}})/Messages"
                                 r"(?:/(SM[0-9a-f]{32}))?\.json", route)
            if match is None or (method, bool(match.group(2))) not in (("POST", False),
                                                                      ("GET", True)):
                raise _ApiError(404, 20404, f"The requested resource {route} was not found")
            username = self._authenticate(headers.get("authorization", ""))
            if match.group(1) != self.account_sid:
                raise _ApiError(401, 20003, "Authenticate")  # fake: Twilio's answer may differ
            if method == "GET":
                with self._lock:
                    found = self._by_sid.get(match.group(2) or "")
                if found is None:
                    raise _ApiError(404, 20404, f"The requested resource {route} was not found")
                status, payload = 200, self._resource(found)
            else:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
                status, payload = 201, self._resource(self._create(form, username))
        except _ApiError as error:
            extra = dict(error.headers)
            if error.status == 401:
                extra["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            self._log(method, route, error.status)
            return error.status, self._json_headers(extra), json.dumps(error.body()).encode()
        self._log(method, route, status)
        return status, self._json_headers({}), json.dumps(payload).encode()

    def _authenticate(self, header: str) -> str:
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except ValueError:
            user = password = ""
        if scheme.lower() == "basic" and (
                (user == self.account_sid and password == self.auth_token)
                or (user in self.api_keys and self.api_keys[user] == password)):
            return user
        raise _ApiError(401, 20003, "Authenticate")

    def _create(self, form: dict[str, list[str]], username: str) -> SentMessage:
        def one(name: str) -> str:
            return form.get(name, [""])[-1]

        raw_to, from_, service, body = one("To"), one("From"), one("MessagingServiceSid"), one("Body")
        media = form.get("MediaUrl", [])
        if not raw_to:
            raise _ApiError(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            raise _ApiError(400, 21603, "A 'From' phone number is required.")
        if not body and not media and not one("ContentSid"):
            raise _ApiError(400, 21602, "Message body is required.")
        to = _normalise(raw_to)
        if not _E164.match(to):
            raise _ApiError(400, 21211, _TO_ERRORS[21211].format(to=raw_to, from_=from_))
        if len(body) > 1600:
            raise _ApiError(400, 21617, "The concatenated message body exceeds the 1600 "
                                        "character limit.")
        if from_ and self.own_numbers is not None and _normalise(from_) not in self.own_numbers:
            raise _ApiError(400, 21606, f"The From phone number {from_} is not a valid, "
                                        "SMS-capable inbound phone number or short code for "
                                        "your account.")
        with self._lock:
            code = self._rejected.get(to)
            if code is not None:
                text = _TO_ERRORS.get(code, "Twilio error {code} for 'To' number {to}")
                raise _ApiError(400, code, text.format(to=to, from_=from_, code=code))
            message = SentMessage(
                sid=self._new_sid("SM"), account_sid=self.account_sid, to=to,
                from_=(_normalise(from_) if from_ else None),
                messaging_service_sid=service or None, body=body,
                status_callback=one("StatusCallback") or None,
                status="queued" if from_ else "accepted", date_created=self.clock(),
                form={k: list(v) for k, v in form.items()}, media_urls=list(media),
                auth_username=username)
            self.messages.append(message)
            self._by_sid[message.sid] = message
        return message

    def _resource(self, message: SentMessage) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{message.account_sid}/Messages/{message.sid}"
        created = format_datetime(message.date_created.astimezone(timezone.utc))
        return {
            "account_sid": message.account_sid, "api_version": API_VERSION,
            "body": message.body, "date_created": created, "date_sent": None,
            "date_updated": created, "direction": "outbound-api",
            "error_code": message.error_code, "error_message": None,
            "from": message.from_, "messaging_service_sid": message.messaging_service_sid,
            "num_media": str(len(message.media_urls)),
            "num_segments": str(num_segments(message.body)), "price": None, "price_unit": "USD",
            "sid": message.sid, "status": message.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": message.to, "uri": f"{uri}.json",
        }

    def _json_headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=utf-8",
                "Twilio-Request-Id": self._new_sid("RQ"), **extra}

    def _new_sid(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{self._rng.getrandbits(128):032x}"

    def _new_uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests_log.append((method, path, status))


def _normalise(number: str) -> str:
    """A phone number as Twilio stores it: formatting characters removed."""
    return _PHONE_PUNCTUATION.sub("", number)


