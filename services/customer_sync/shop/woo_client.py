"""WooCommerce REST API v3 client for the backfill and the reconciliation (plain code, no nameko).

Why it looks the way it does (see docs/woocommerce.md):

- Shops sit behind rate-limiting, flaky hosting: 429, 5xx, timeouts and dropped connections
  are retried with back-off, honouring Retry-After, so a long backfill survives them; only
  when the retries are exhausted does it raise `WooUnavailable`, and the caller resumes later
  from the page it had reached.
- Some servers strip the Authorization header: a 401 on header auth is retried once with the
  keys as query parameters, and the client stays on query auth once that worked.
- The consumer secret never appears in an exception or a log line: messages carry the path
  without its query string, and anything the shop or the HTTP stack says is scrubbed.
- urllib3 logs every request's URL, query string included, at DEBUG: this module installs a
  filter on the `urllib3.connectionpool` logger that redacts `consumer_key`/`consumer_secret`
  query parameters (query auth would otherwise put the secret in the logs).
- Lists are read in `orderby=id, order=asc` unless the caller says otherwise: WooCommerce's
  defaults (orders by date desc, customers by name) shift rows between pages when the shop
  changes during a scan, and a resumed page N must mean the same rows as before.
- Coupons (docs/woocommerce-coupons.md): a code is looked up before it is created, because a
  POST whose answer was lost may have created it; `ensure_coupon` does both and recognises its
  own coupon by the meta it wrote, so a retried request never makes a second coupon.
"""
from __future__ import annotations

import base64
import email.utils
import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Mapping

import requests

from shared.money import exponent
from services.customer_sync.core.normalise import (
    NormalisationError,
    email_key,
    parse_gmt,
    resource_id,
)

try:  # a connection that was never established is safe to retry, even for a POST
    from urllib3.exceptions import NewConnectionError
except ImportError:  # pragma: no cover - urllib3 ships with requests
    NewConnectionError = ()  # type: ignore[assignment,misc]

logger = logging.getLogger("services.customer_sync.shop.woo_client")

API_PATH = "wp-json/wc/v3/"
MAX_PER_PAGE = 100
USER_AGENT = "WooCompanion/1.0 (+https://github.com/woo-companion) python-requests"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_QUERY_SECRET = re.compile(r"(consumer_(?:key|secret)=)[^&\s'\"#>]*", re.IGNORECASE)
_REDACTED = "[redacted]"


class _RedactQueryKeys(logging.Filter):
    """Rewrites records of urllib3's request log so that query-string credentials vanish."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        if "consumer_" in text:
            record.msg, record.args = _QUERY_SECRET.sub(r"\1" + _REDACTED, text), ()
        return True


def _install_urllib3_redaction() -> None:
    target = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactQueryKeys) for f in target.filters):
        target.addFilter(_RedactQueryKeys())


_install_urllib3_redaction()


class WooApiError(Exception):
    """The shop refused a request: `status` (0 when no answer came), WooCommerce's `code`, `message`."""

    def __init__(self, status: int, code: str, message: str, *, method: str | None = None,
                 path: str | None = None) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.path = path

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method and self.path else ""
        return f"WooCommerce API HTTP {self.status} {self.code}: {self.message}{where}"


class WooUnavailable(WooApiError):
    """The shop did not answer usefully after every retry (or a POST's outcome is unknown)."""


class CouponCodeTaken(WooApiError):
    """The shop already has a coupon with this code (in any case) that is not the one asked for."""


COUPON_CODE_TAKEN = "woocommerce_rest_coupon_code_already_exists"
COUPON_TYPES = ("percent", "fixed_cart", "fixed_product")
# What a code may hold: WooCommerce rewrites HTML, entities, whitespace and case, and a code it
# rewrote could no longer be found by the code we sent.
_COUPON_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MAX_META = 20
_MAX_META_TEXT = 200
_MAX_AMOUNT = Decimal("1000000")


@dataclass(frozen=True)
class CouponRequest:
    """A coupon to create: checked here, before anything is sent, so a bad one never half-exists.

    `code` must be lower-case (WooCommerce lower-cases it; sending it as stored keeps the
    look-up exact). `amount` is in the currency's major unit for fixed discounts (no more
    decimals than `currency` has) or a percentage up to 100. `expires_at` must be aware.
    `meta` names whose coupon it is: `ensure_coupon` compares it to recognise its own coupon.
    """

    code: str
    amount: Decimal
    currency: str
    discount_type: str = "fixed_cart"
    usage_limit: int | None = 1
    usage_limit_per_user: int | None = 1
    email_restrictions: tuple[str, ...] = ()
    expires_at: datetime | None = None
    individual_use: bool = False
    minimum_spend: Decimal | None = None
    description: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.currency, str) or not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ValueError("currency must be an ISO-4217 code like EUR")
        if not isinstance(self.code, str) or not _COUPON_CODE.fullmatch(self.code):
            raise ValueError("code must be 1-64 lower-case letters, digits, '-' or '_'")
        if self.discount_type not in COUPON_TYPES:
            raise ValueError(f"discount_type must be one of {', '.join(COUPON_TYPES)}")
        _check_amount("amount", self.amount, self.currency, self.discount_type == "percent")
        if self.amount <= 0:
            raise ValueError("amount must be more than zero")
        if self.minimum_spend is not None:
            _check_amount("minimum_spend", self.minimum_spend, self.currency, False)
        for name in ("usage_limit", "usage_limit_per_user"):
            limit = getattr(self, name)
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                      or not 0 < limit <= 1_000_000):
                raise ValueError(f"{name} must be a whole number from 1 to 1000000, or None")
        if not isinstance(self.email_restrictions, tuple) or len(self.email_restrictions) > 20:
            raise ValueError("email_restrictions must be a tuple of at most 20 emails")
        for address in self.email_restrictions:
            key = email_key(address)
            if key is None or key != address or len(key) > 254 or not re.fullmatch(r"[^@\s*]+@[^@\s*]+\.[^@\s*]+", key):
                raise ValueError("email_restrictions must be lower-cased, trimmed emails without wildcards")
        if self.expires_at is not None and (not isinstance(self.expires_at, datetime)
                                            or self.expires_at.tzinfo is None):
            raise ValueError("expires_at must be an aware datetime")
        if not isinstance(self.description, str) or len(self.description) > 500:
            raise ValueError("description must be text of at most 500 characters")
        if len(self.meta) > _MAX_META or any(
                not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > _MAX_META_TEXT
                or len(v) > _MAX_META_TEXT for k, v in self.meta.items()):
            raise ValueError(f"meta must be at most {_MAX_META} non-empty text keys and text values "
                             f"of at most {_MAX_META_TEXT} characters")

    def payload(self) -> dict[str, Any]:
        """The JSON body of POST /coupons."""
        places = 2 if self.discount_type == "percent" else exponent(self.currency)
        body: dict[str, Any] = {
            "code": self.code,
            "discount_type": self.discount_type,
            "amount": _decimal_text(self.amount, places),
            "usage_limit": self.usage_limit,
            "usage_limit_per_user": self.usage_limit_per_user,
            "email_restrictions": list(self.email_restrictions),
            "individual_use": self.individual_use,
            "description": self.description,
            "meta_data": [{"key": k, "value": v} for k, v in self.meta.items()],
        }
        if self.expires_at is not None:
            body["date_expires_gmt"] = self.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        if self.minimum_spend is not None:
            body["minimum_amount"] = _decimal_text(self.minimum_spend, exponent(self.currency))
        return body


@dataclass(frozen=True)
class ShopCoupon:
    """A coupon as the shop answered it, read defensively (the answer is outside input)."""

    id: int
    code: str
    amount: Decimal
    discount_type: str
    status: str
    usage_count: int
    usage_limit: int | None
    expires_at: datetime | None
    email_restrictions: tuple[str, ...]
    meta: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> "ShopCoupon":
        """Raises NormalisationError naming the field the shop got wrong."""
        coupon_id = resource_id(data)
        code = data.get("code")
        if not isinstance(code, str) or not code:
            raise NormalisationError("coupon code is missing")
        try:
            amount = Decimal(str(data.get("amount") or "0"))
        except InvalidOperation:
            raise NormalisationError("coupon amount is not a decimal amount") from None
        if not amount.is_finite():
            raise NormalisationError("coupon amount is not a finite amount")
        usage_count = data.get("usage_count") or 0
        usage_limit = data.get("usage_limit")
        for name, value in (("usage_count", usage_count), ("usage_limit", usage_limit)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise NormalisationError(f"coupon {name} is not a whole number")
        emails = data.get("email_restrictions") or []
        if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
            raise NormalisationError("coupon email_restrictions is not a list of emails")
        meta_list = data.get("meta_data") or []
        if not isinstance(meta_list, list):
            raise NormalisationError("coupon meta_data is not a list")
        meta = {m["key"]: m.get("value") for m in meta_list
                if isinstance(m, dict) and isinstance(m.get("key"), str)}
        return cls(id=coupon_id, code=code, amount=amount,
                   discount_type=str(data.get("discount_type") or ""),
                   status=str(data.get("status") or ""), usage_count=usage_count,
                   usage_limit=usage_limit or None,
                   expires_at=parse_gmt(data.get("date_expires_gmt"), "date_expires_gmt"),
                   email_restrictions=tuple(emails), meta=meta)

    def carries(self, meta: Mapping[str, str]) -> bool:
        """True when every key of `meta` is on this coupon with the same value."""
        return all(self.meta.get(key) == value for key, value in meta.items())


@dataclass(frozen=True)
class Page:
    """One page of a list.

    `total_pages` and `total` come from X-WP-TotalPages and X-WP-Total. When a proxy stripped
    them, `total` is None and `total_pages` is a guess that keeps iteration going exactly as
    long as needed: `page + 1` when the page is full (there may be more), `page` when it is
    short (this is the last one), `page - 1` when it is empty (nothing here or beyond).
    """

    items: list[dict]
    page: int
    total_pages: int
    total: int | None

    @property
    def is_last(self) -> bool:
        return self.page >= self.total_pages


class WooClient:
    """Reads (and, for GDPR rectification and webhook registration, writes) one shop's REST API."""

    def __init__(
        self,
        shop_url: str,
        consumer_key: str,
        consumer_secret: str,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        auth_in_query: bool = False,
    ) -> None:
        if not shop_url.endswith("/"):
            shop_url += "/"
        self.shop_url = shop_url
        self.api_url = shop_url + API_PATH
        self._key = consumer_key
        self._secret = consumer_secret
        self._basic = "Basic " + base64.b64encode(
            f"{consumer_key}:{consumer_secret}".encode("utf-8")).decode("ascii")
        self._owns_session = session is None
        self._session = session or requests.Session()
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self.auth_in_query = auth_in_query

    def __repr__(self) -> str:  # never the keys
        return f"WooClient({self.shop_url!r}, auth_in_query={self.auth_in_query})"

    # ------------------------------------------------------------------ public API

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a resource (e.g. "orders/42") and return its JSON."""
        return self._request("GET", path, params=params)[1]

    def put(self, path: str, json: Any) -> Any:
        """PUT (update) a resource, e.g. a GDPR rectification; idempotent, so fully retried."""
        return self._request("PUT", path, json=json)[1]

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """DELETE a resource (e.g. "customers/7" with force=true); idempotent, so fully
        retried (a 404 after a retry means the first try did it)."""
        return self._request("DELETE", path, params=params)[1]

    def post(self, path: str, json: Any) -> Any:
        """POST (create) a resource, e.g. a webhook.

        Retried only when the shop cannot have acted on it (429, 503, no connection); after
        a 500/502/504 or a broken connection the outcome is unknown and `WooUnavailable` is
        raised at once, so look before posting again (a duplicate webhook doubles deliveries).
        """
        return self._request("POST", path, json=json)[1]

    def get_page(self, resource: str, page: int, params: Mapping[str, Any] | None = None,
                 per_page: int = MAX_PER_PAGE) -> Page:
        """One page of a list (`resource` like "customers" or "orders"); see `Page`."""
        query = {"orderby": "id", "order": "asc", **dict(params or {}),
                 "page": page, "per_page": per_page}
        response, data = self._request("GET", resource, params=query)
        if not isinstance(data, list):
            raise WooApiError(response.status_code, "unexpected_response",
                              f"expected a JSON list, got {type(data).__name__}",
                              method="GET", path=self._path(resource))
        total = _header_int(response.headers, "X-WP-Total")
        total_pages = _header_int(response.headers, "X-WP-TotalPages")
        if total_pages is None:
            if not data:
                total_pages = page - 1
            elif len(data) < per_page:
                total_pages = page
            else:
                total_pages = page + 1
        return Page(items=data, page=page, total_pages=total_pages, total=total)

    def iter_pages(self, resource: str, params: Mapping[str, Any] | None = None,
                   start_page: int = 1, per_page: int = MAX_PER_PAGE) -> Iterator[Page]:
        """Yield the non-empty pages from `start_page` on.

        Stops after the last page by X-WP-TotalPages, re-read on every page because the
        shop changes while we read, or at the first empty page. An empty list yields nothing.
        """
        page = start_page
        while True:
            current = self.get_page(resource, page, params, per_page)
            if not current.items:
                return
            yield current
            if current.is_last:
                return
            page += 1

    def list_webhooks(self) -> list[dict]:
        """Every webhook the shop has (all pages)."""
        return [hook for page in self.iter_pages("webhooks") for hook in page.items]

    # ------------------------------------------------------------------ coupons

    def find_coupon(self, code: str) -> ShopCoupon | None:
        """The shop's published coupon with this code (any case), or None.

        A shop that ignores `code=` (a plugin, an old version) answers other coupons: that
        proves nothing about this code, so it raises rather than answering None.
        """
        wanted = code.strip().lower()
        if not wanted:
            raise ValueError("code must not be empty")
        data = self.get("coupons", {"code": wanted})
        path = self._path("coupons")
        if not isinstance(data, list):
            raise WooApiError(200, "unexpected_response", f"expected a JSON list, got {type(data).__name__}",
                              method="GET", path=path)
        coupons = [self._coupon(item, "GET", path) for item in data]
        mine = [c for c in coupons if c.code.strip().lower() == wanted]
        if len(mine) != len(coupons):
            raise WooApiError(200, "unexpected_response",
                              "the shop answered coupons with other codes: it ignores the code filter",
                              method="GET", path=path)
        return max(mine, key=lambda c: c.id) if mine else None

    def create_coupon(self, request: CouponRequest) -> ShopCoupon:
        """POST the coupon; `CouponCodeTaken` when its code exists.

        Not retried once the shop may have acted (`WooUnavailable` "outcome_unknown", see
        `post`): look the code up before trying again, or use `ensure_coupon`.
        """
        try:
            data = self.post("coupons", request.payload())
        except WooApiError as exc:
            if exc.code == COUPON_CODE_TAKEN:
                raise CouponCodeTaken(exc.status, exc.code, exc.message, method=exc.method,
                                      path=exc.path) from None
            raise
        return self._coupon(data, "POST", self._path("coupons"))

    def ensure_coupon(self, request: CouponRequest) -> ShopCoupon:
        """The coupon for `request`, created unless an earlier try already made it.

        Looks the code up first; a coupon with the code and all of `request.meta` is ours and is
        returned as it is. A coupon with the code but other meta raises `CouponCodeTaken` (pick
        another code). Retrying after any failure is safe: it never makes a second coupon.
        """
        if not request.meta:
            raise ValueError("ensure_coupon needs request.meta to recognise its own coupon")
        for attempt in range(2):
            existing = self.find_coupon(request.code)
            if existing is not None:
                if existing.carries(request.meta):
                    return existing
                raise CouponCodeTaken(400, COUPON_CODE_TAKEN,
                                      f"coupon {existing.id} already has this code and is not this request's",
                                      method="GET", path=self._path("coupons"))
            try:
                return self.create_coupon(request)
            except CouponCodeTaken:
                if attempt:  # made between our look-up and our POST, twice: give up
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def delete_coupon(self, coupon_id: int) -> bool:
        """Delete the coupon for good (not to the trash, where its code would linger).

        True when this call deleted it, False when the shop has no such coupon (already
        deleted, e.g. by a retried call whose first answer was lost).
        """
        if isinstance(coupon_id, bool) or not isinstance(coupon_id, int) or coupon_id <= 0:
            raise ValueError("coupon_id must be a positive whole number")
        try:
            self.delete(f"coupons/{coupon_id}", {"force": True})
        except WooApiError as exc:
            if exc.status == 404 and exc.code == "woocommerce_rest_shop_coupon_invalid_id":
                return False
            raise
        return True

    def _coupon(self, data: Any, method: str, path: str) -> ShopCoupon:
        try:
            return ShopCoupon.from_json(data)
        except NormalisationError as exc:
            raise WooApiError(200, "unexpected_response", self._redact(str(exc))[:300],
                              method=method, path=path) from None

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> "WooClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ machinery

    def _path(self, path: str) -> str:
        return "/" + (self.api_url + path.lstrip("/")).split("://", 1)[-1].split("/", 1)[-1]

    def _redact(self, text: str) -> str:
        text = _QUERY_SECRET.sub(r"\1" + _REDACTED, text)
        for secret in (self._secret, self._key, self._basic):
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def _send(self, method: str, url: str, params: dict[str, Any], json: Any,
              query_auth: bool) -> requests.Response:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if query_auth:
            params = {**params, "consumer_key": self._key, "consumer_secret": self._secret}
        else:
            headers["Authorization"] = self._basic
        return self._session.request(method, url, params=params, json=json, headers=headers,
                                     timeout=self.timeout)

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 json: Any = None) -> tuple[requests.Response, Any]:
        url = self.api_url + path.lstrip("/")
        log_path = self._path(path)
        query = _encode_params(params or {})
        idempotent = method in _IDEMPOTENT
        retries = 0
        tried_query_fallback = False
        while True:
            query_auth = self.auth_in_query or tried_query_fallback
            wait: float | None = None
            fatal: WooApiError | None = None
            try:
                response = self._send(method, url, query, json, query_auth)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                # A connection broken mid-answer is retried like one never made. Raised below, outside this block: requests' exception names the URL with its
                # query string (the secret, with query auth) and must not ride along as context.
                description = self._redact(f"{type(exc).__name__}: {exc}")[:300]
                if not idempotent and not _never_sent(exc):
                    fatal = WooUnavailable(0, "outcome_unknown",
                                           f"no answer, the request may have been applied: {description}",
                                           method=method, path=log_path)
                failure = WooUnavailable(0, "connection_error", description, method=method, path=log_path)
                reason = type(exc).__name__
            else:
                status = response.status_code
                if status == 401 and not query_auth:
                    # Some servers drop the Authorization header: try the keys in the query.
                    tried_query_fallback = True
                    logger.warning("WooCommerce %s %s answered 401 to header auth; retrying with "
                                   "query-parameter auth", method, log_path,
                                   extra={"status": status, "path": log_path})
                    continue
                if 200 <= status < 300:
                    try:
                        data = response.json() if response.content else None
                    except ValueError:
                        if not idempotent:
                            raise WooApiError(status, "invalid_json", "the shop's answer is not JSON",
                                              method=method, path=log_path) from None
                        failure = WooUnavailable(status, "invalid_json", "the shop's answer is not JSON",
                                                 method=method, path=log_path)
                        reason = f"HTTP {status} (not JSON)"
                    else:
                        if tried_query_fallback and not self.auth_in_query:
                            self.auth_in_query = True  # it worked: keep using it
                            logger.warning("WooCommerce %s: the Authorization header seems to be "
                                           "dropped; using query-parameter auth from now on",
                                           self.shop_url, extra={"path": log_path})
                        return response, data
                else:
                    code, message = self._error_details(response)
                    retryable = status == 429 or status >= 500
                    if retryable and not idempotent and status not in (429, 503):
                        raise WooUnavailable(status, code, f"{message} (not retried: the request "
                                             "may have been applied)", method=method, path=log_path)
                    if not retryable:
                        raise WooApiError(status, code, message, method=method, path=log_path)
                    failure = WooUnavailable(status, code, message, method=method, path=log_path)
                    reason = f"HTTP {status}"
                    wait = _retry_after_seconds(response.headers.get("Retry-After"), time.time())
            if fatal is not None:
                raise fatal
            if retries >= self.max_retries:
                raise failure
            if wait is None:
                wait = self._backoff(retries)
            wait = min(wait, self.backoff_max)
            retries += 1
            logger.warning("WooCommerce %s %s failed (%s); retry %d/%d in %.2fs", method, log_path,
                           reason, retries, self.max_retries, wait,
                           extra={"status": failure.status, "wait_seconds": wait,
                                  "retry": retries, "path": log_path})
            self._sleep(wait)

    def _backoff(self, retries: int) -> float:
        """Exponential back-off with jitter: between half and all of base * 2**retries."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** retries))
        return ceiling * (0.5 + random.random() / 2)

    def _error_details(self, response: requests.Response) -> tuple[str, str]:
        code, message = f"http_{response.status_code}", response.reason or ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = str(body.get("code") or code)
            message = str(body.get("message") or message)
        return self._redact(code)[:100], self._redact(message)[:500]


def _check_amount(name: str, value: Any, currency: str, percent: bool) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{name} must be a finite Decimal")
    if value < 0 or value > (Decimal(100) if percent else _MAX_AMOUNT):
        raise ValueError(f"{name} must be from 0 to {100 if percent else _MAX_AMOUNT}")
    places = 2 if percent else exponent(currency)
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(f"{name} has more than {places} decimals")


def _decimal_text(value: Decimal, places: int) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def _encode_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """WordPress wants booleans as true/false, dates as ISO-8601 and lists comma-separated."""
    encoded: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, datetime):
            value = value.isoformat(timespec="seconds")
        elif isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, (list, tuple, set)):
            value = ",".join(str(v) for v in value)
        encoded[key] = value
    return encoded


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        value = int(str(headers.get(name, "")).strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP-date; None when unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _never_sent(exc: BaseException) -> bool:
    """True when the connection was never made, so the shop cannot have acted on the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if NewConnectionError and isinstance(current, NewConnectionError):
            return True
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__])
        pending.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return False
