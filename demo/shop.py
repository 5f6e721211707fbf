"""A fake WooCommerce shop: REST API v3 over real HTTP, deterministic from a seed.

Backfill, reconciliation and whole-system tests talk to it exactly as they would talk to a
shop (see docs/woocommerce.md): HTTP Basic or query-parameter auth, `page`/`per_page`
paging with `X-WP-Total`, `X-WP-TotalPages` and `Link` headers, `modified_after` on orders
only, WooCommerce-style JSON errors, and injectable 429/5xx faults, slow answers and dropped
connections.

Behaviours callers should know (all imitate WooCommerce unless marked "fake"):

- Times: `date_*` fields are shop-local time (UTC + `utc_offset_minutes`, default +60), the
  `*_gmt` fields UTC; both "YYYY-MM-DDTHH:MM:SS" without an offset. The shop's `clock` (fake)
  starts at 2026-01-01T00:00:00 UTC and only moves when advanced, or when a mutation's
  `date_modified` had to go past it (a mutation always moves `date_modified_gmt` at least one
  second past its previous value, so nothing is ever modified "in the future").
- `modified_after`/`modified_before`/`after`/`before` are strict (`>`/`<`), compare local
  times unless `dates_are_gmt=true`, and an offset in the value ("Z", "+02:00") is converted.
- Default ordering: orders `date desc`, customers `name asc` (username), webhooks `date desc`.
  Ties break on id. A page past the end is `[]`; an empty list has `X-WP-TotalPages: 0`.
- Customers ignore `modified_after` (unknown parameters are ignored); the `role` filter
  defaults to `customer`.
- Auth: a wrong consumer key/secret answers 401 `woocommerce_rest_authentication_error`
  ("Consumer key is invalid." / "Consumer secret is invalid."), as WooCommerce does; missing
  credentials answer 401 `woocommerce_rest_cannot_view` (`..._cannot_edit`/`_create` for
  writes). A present Authorization header wins over query parameters.
- The `Link` header repeats the request's query string, consumer secret included, as
  WordPress does: never log it.
- JSON is encoded like PHP's `json_encode` (compact, `\\/` and `\\uXXXX` escapes), so a body
  re-serialised by Python will not match a webhook signature.
- Line items' `price` is a number (WooCommerce), every other amount a 2-decimal string.
- `delete_customer` sets `customer_id` to 0 on that customer's orders and bumps their
  `date_modified` (WooCommerce with HPOS tables, its default since 8.2).
- `DELETE customers/<id>` needs `force=true` (501 `woocommerce_rest_trash_not_supported`
  otherwise); `DELETE orders/<id>` trashes the order, or with `force=true` deletes it for
  good (410 `woocommerce_rest_already_trashed` for trashing twice). Both answer the resource
  as it was before.
- Direct edits of `shop.customers`/`shop.orders` are served as they are; use the mutation
  methods to get WooCommerce's side effects (date_modified, refunds, statuses).
- Coupons (docs/woocommerce-coupons.md has the sources): `GET/POST coupons`,
  `GET/PUT/DELETE coupons/<id>`. Codes are stored lower-cased and unique among published
  coupons whatever their case (400 `woocommerce_rest_coupon_code_already_exists`); `code=`
  lists the one published coupon with that code; DELETE trashes, `force=true` deletes.
  `add_order(coupon_code=...)` applies a code as checkout does (`CouponRejected` with
  WooCommerce's error number and message: expiry, usage limits in total and per customer (id,
  account email or billing email), minimum spend, email restrictions); an order counts one use while pending,
  on-hold, processing or completed and gives it back when cancelled, failed or trashed.
  `POST orders` (fake: reads only customer_id, billing, status and coupon_lines) refuses a
  code the same checks refuse with 400 `woocommerce_rest_invalid_coupon` and their message.
  `coupons_down()`, `coupons_unreachable()` and `refuse_coupon_writes()` (fake) break the
  coupon endpoints only, until `reset_faults()`; `hold_coupon_creation()` (fake) keeps every
  coupon POST waiting unanswered until `release_coupon_creation()`, so a caller can be killed
  inside the creation step. One code per order, percent and fixed_cart
  only, and no held ("tentative") usages: the fake's simplifications.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import html
import json
import random
import re
import threading
import time
import unicodedata
from bisect import bisect_right
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from demo.http_stand_in import ServedStandIn

API_PREFIX = "/wp-json/wc/v3/"
CLOCK_START = datetime(2026, 1, 1, 0, 0, 0)  # UTC, naive like WooCommerce's *_gmt fields
WC_VERSION = "9.4.0"
_HISTORY = timedelta(days=730)

ORDER_STATUSES = (
    "pending", "processing", "on-hold", "completed", "cancelled", "refunded", "failed",
    "trash", "checkout-draft",
)
_PAID_STATUSES = {"processing", "completed", "refunded"}
WEBHOOK_RESOURCES = ("coupon", "customer", "order", "product")
COUPON_TYPES = ("percent", "fixed_cart", "fixed_product")
# wc_update_coupon_usage_counts: an order in one of these counts its coupons once...
_COUPON_USAGE_STATUSES = ("pending", "processing", "completed", "on-hold")
# ...and moving to one of these gives the usage back.
_COUPON_RETURN_STATUSES = ("cancelled", "failed", "trash")
_BILLING_FIELDS = ("first_name", "last_name", "company", "address_1", "address_2", "city",
                   "state", "postcode", "country", "email", "phone")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WEBHOOK_EVENTS = ("created", "updated", "deleted", "restored")
_USER_AGENT = f"WooCommerce/{WC_VERSION} Hookshot (WordPress/6.7.1)"
_WP_SALT = b"fake-wp-salt-for-woo-companion-tests"


# --------------------------------------------------------------------------------------------
# Webhook helpers (module level: a receiver's tests need them without a running shop)
# --------------------------------------------------------------------------------------------

def _decode_secret(secret: str) -> str:
    """WooCommerce keys the HMAC with wp_specialchars_decode(secret, ENT_QUOTES)."""
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#039;", "'"),
                         ("&#39;", "'"), ("&#x27;", "'"), ("&amp;", "&")):
        secret = secret.replace(entity, char)
    return secret


def sign(body: bytes, secret: str) -> str:
    """X-WC-Webhook-Signature: base64 of HMAC-SHA256 of the raw body, keyed by the secret."""
    digest = hmac.new(_decode_secret(secret).encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def delivery_id(webhook_id: int, now: float | None = None) -> str:
    """WooCommerce's wp_hash(webhook id . current second): equal for one webhook within a second."""
    second = int(time.time() if now is None else now)
    return hmac.new(_WP_SALT, f"{webhook_id}{second}".encode(), hashlib.md5).hexdigest()


def webhook_headers(
    topic: str,
    body: bytes,
    secret: str,
    source_url: str,
    webhook_id: int = 1,
    delivery_id: str | None = None,
    *,
    now: float | None = None,
) -> dict[str, str]:
    """The headers of a WooCommerce webhook delivery of `body` (already encoded) for `topic`.

    The Delivery-ID defaults to WooCommerce's hash of webhook id and current second (`now`, a
    Unix time, defaults to the real clock): it is NOT unique per delivery.
    """
    resource, _, event = topic.partition(".")
    return {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "X-WC-Webhook-Source": source_url,
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-Signature": sign(body, secret),
        "X-WC-Webhook-ID": str(webhook_id),
        "X-WC-Webhook-Delivery-ID": delivery_id or _delivery_id(webhook_id, now),
    }


_delivery_id = delivery_id  # webhook_headers' parameter shadows the function's name


def ping_body(webhook_id: int) -> bytes:
    """The body of the unsigned ping WooCommerce sends when a webhook is saved as active."""
    return urlencode({"webhook_id": webhook_id}).encode("ascii")


def php_json(value: Any) -> bytes:
    """JSON as PHP's json_encode writes it: compact, ASCII-only, slashes escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

class FakeClock:
    """The shop's notion of now (UTC, naive); moves only when told to, so data is repeatable."""

    def __init__(self, start: datetime = CLOCK_START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when

    def catch_up(self, when: datetime) -> None:
        with self._lock:
            if when > self._now:
                self._now = when


class LoggedRequest(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0: connection dropped without an answer


class _Fault(NamedTuple):
    kind: str  # "fail" | "delay" | "drop"
    status: int = 0
    retry_after: str | None = None
    seconds: float = 0.0
    code: str | None = None  # a refusal's WooCommerce error code and message
    message: str | None = None


class CouponRejected(ValueError):
    """An order could not apply a coupon code: WooCommerce's WC_Coupon error number and message
    (105 does not exist, 106 usage limit reached, 107 expired, 108 minimum spend, 102 not yours)."""

    def __init__(self, error_number: int, message: str) -> None:
        super().__init__(message)
        self.error_number = error_number
        self.message = message


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, extra: dict | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict:
        return {"code": self.code, "message": self.message,
                "data": {"status": self.status, **self.extra}}


def _money(cents: int) -> str:
    sign_ = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign_}{cents // 100}.{cents % 100:02d}"


def _cents(amount: str | int | float) -> int:
    text = str(amount).strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    value = int(whole or 0) * 100 + int((frac + "00")[:2] or 0)
    return -value if negative else value


def _tax(cents: int, rate_percent: int) -> int:
    return (cents * rate_percent + 50) // 100


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat(timespec="seconds")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _ascii(text: str) -> str:
    text = text.replace("ø", "o").replace("ß", "ss").replace("ł", "l").replace("æ", "ae")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _invalid_param(name: str, reason: str) -> _ApiError:
    return _ApiError(400, "rest_invalid_param", f"Invalid parameter(s): {name}",
                     {"params": {name: reason},
                      "details": {name: {"code": "rest_invalid_type", "message": reason,
                                         "data": None}}})


def format_coupon_code(code: str) -> str:
    """wc_format_coupon_code with WooCommerce's default filters: HTML entities decoded, tags
    and surrounding whitespace stripped, lower-cased (so codes are case-insensitive)."""
    text = re.sub(r"<[^>]*>", "", html.unescape(code))
    return " ".join(text.split()).lower()


def _email_allowed(email: str, restrictions: list[str]) -> bool:
    """DiscountsUtil::is_coupon_emails_allowed: an exact match, or `*` as a wildcard (the fake
    escapes the rest; WooCommerce's regex would let a `.` match any character)."""
    for restriction in restrictions:
        if email == restriction:
            return True
        pattern = "(.+)?".join(re.escape(part) for part in restriction.split("*"))
        if re.fullmatch(pattern, email):
            return True
    return False


def _decimal_text(value: Any, name: str) -> str | None:
    """A money field as WooCommerce reads it: a number or numeric string, else None (zero)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = repr(value)
    if not isinstance(value, str):
        raise _invalid_param(name, f"{name} is not of type string.")
    text = value.strip()
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text) or len(text) > 30:
        return None
    return text


# --------------------------------------------------------------------------------------------
# Generated data's vocabulary
# --------------------------------------------------------------------------------------------

_FIRST = ("Anna", "Lukas", "Marie", "Jonas", "Sophie", "Leon", "Emma", "Felix", "Mia", "Paul",
          "Léa", "Jürgen", "Zoë", "José", "Chloé", "Noah", "Olivia", "Liam", "Ava", "Elias",
          "Sofia", "Mateo", "Lucía", "Hugo", "Inès", "Lars", "Ingrid", "Søren", "Agnieszka",
          "Tomasz", "Giulia", "Marco", "Femke", "Daan", "Oliver", "Amelia", "Jack", "Isla",
          "Ethan", "Grace", "Hannah", "Maximilian", "Clara", "Finn", "Lena", "Ben")
_LAST = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Hoffmann", "Schäfer", "Martin", "Bernard", "Dubois", "Lefèvre", "García", "López",
         "Rossi", "Bianchi", "de Vries", "Jansen", "Smith", "Jones", "Taylor", "Brown",
         "Nowak", "Kowalski", "Andersen", "Nielsen", "O'Brien", "Murphy", "Johnson", "Wilson",
         "Keller", "Wolf", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hartmann")
_DOMAINS = ("example.com", "example.net", "example.org", "mailbox.example", "web.example",
            "post.example")
# country, weight, VAT %, cities, postcode maker, phone prefix, states
_COUNTRIES = (
    ("DE", 45, 19, ("Berlin", "Hamburg", "München", "Köln", "Leipzig", "Dresden"), 5, "+49 15", ()),
    ("AT", 10, 20, ("Wien", "Graz", "Linz", "Salzburg"), 4, "+43 66", ()),
    ("FR", 10, 20, ("Paris", "Lyon", "Marseille", "Nantes"), 5, "+33 6", ()),
    ("NL", 8, 21, ("Amsterdam", "Utrecht", "Rotterdam"), 4, "+31 6", ()),
    ("ES", 6, 21, ("Madrid", "Barcelona", "Sevilla"), 5, "+34 6", ()),
    ("IT", 6, 22, ("Roma", "Milano", "Torino"), 5, "+39 3", ()),
    ("GB", 7, 20, ("London", "Leeds", "Bristol"), 0, "+44 7", ()),
    ("US", 8, 0, ("Austin", "Portland", "Boston"), 5, "+1 512", ("TX", "OR", "MA")),
)
_COUNTRY_WEIGHTS = [c[1] for c in _COUNTRIES]
_STREETS = ("Hauptstraße", "Bahnhofstraße", "Rue de la Paix", "Kerkstraat", "Calle Mayor",
            "Via Roma", "High Street", "Main Street", "Gartenweg", "Lindenallee")
# product id, name, sku, price in cents, variations [(variation id, attribute value)]
_PRODUCTS = (
    (101, "Organic Cotton T-Shirt", "TS-ORG", 1990, ((1011, "S"), (1012, "M"), (1013, "L"))),
    (102, "Merino Beanie", "BEANIE-MER", 2490, ()),
    (103, "Ceramic Mug", "MUG-CER", 1250, ()),
    (104, "Canvas Tote Bag", "TOTE-CNV", 1500, ()),
    (105, "Hoodie Classic", "HOOD-CLS", 5490, ((1051, "M"), (1052, "L"), (1053, "XL"))),
    (106, "Notebook A5 Dotted", "NB-A5-DOT", 899, ()),
    (107, "Stainless Bottle 750 ml", "BTL-750", 2900, ()),
    (108, "Gift Card", "GIFT-25", 2500, ()),
    (109, "Socks (3 pairs)", "SOCKS-3", 1495, ()),
    (110, "Wool Scarf", "SCARF-WL", 3990, ()),
)
# code, discount type, amount (percent: hundredths of a percent; fixed_cart: cents)
_COUPONS = (("welcome10", "percent", 1000), ("summer15", "percent", 1500), ("fiveoff", "fixed_cart", 500))
_PAYMENT = (("stripe", "Credit Card (Stripe)"), ("paypal", "PayPal"), ("bacs", "Direct bank transfer"),
            ("cod", "Cash on delivery"))
_REFUND_REASONS = ("", "Damaged item", "Customer changed mind", "Wrong size", "Late delivery")


# --------------------------------------------------------------------------------------------
# The shop
# --------------------------------------------------------------------------------------------

class FakeWooShop(ServedStandIn):
    """A WooCommerce shop on 127.0.0.1 with generated customers and orders (see module doc)."""

    thread_name, software, title = "fake-woo-shop", "Apache", "the fake shop"

    def __init__(
        self,
        customers: int = 0,
        orders: int = 0,
        seed: int = 1,
        currency: str = "EUR",
        consumer_key: str = "ck_test",
        consumer_secret: str = "cs_test",
        guest_ratio: float = 0.2,
        *,
        drop_authorization_header: bool = False,
        paging_headers: bool = True,
        utc_offset_minutes: int = 60,
        ping_webhooks: bool = False,
    ) -> None:
        self.seed = seed
        self.currency = currency
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.guest_ratio = guest_ratio
        self.drop_authorization_header = drop_authorization_header
        # Fake: some proxies and caching plugins strip WordPress's paging headers.
        self.paging_headers = paging_headers
        self.utc_offset = timedelta(minutes=utc_offset_minutes)
        # Fake toggle: POST /webhooks pings delivery_url like WP admin's save does.
        self.ping_webhooks = ping_webhooks

        self.clock = FakeClock()
        self.customers: dict[int, dict] = {}
        self.orders: dict[int, dict] = {}
        self.refunds: dict[int, list[dict]] = {}  # order id -> full refund objects, newest first
        self.webhooks: dict[int, dict] = {}
        self.coupons: dict[int, dict] = {}  # shop_coupon posts, trashed ones included
        self.requests_log: list[LoggedRequest] = []
        self.webhook_deliveries: list[dict] = []  # fake: what deliver_webhooks() sent
        self.pings: list[dict] = []  # fake: the pings sent on saving a webhook as active

        self._lock = threading.RLock()
        self._faults: deque[_Fault] = deque()
        self._page_faults: dict[tuple[str, int], int] = {}  # (path, page) -> status
        self._coupon_fault: tuple[frozenset[str], _Fault] | None = None  # (methods, fault)
        self._coupon_usage_recorded: set[int] = set()  # orders whose coupon usage is counted
        self._creation_gate: threading.Event | None = None  # set: held coupon POSTs go on
        self._creation_held = threading.Condition(self._lock)
        self.coupon_posts_held = 0  # fake: coupon creations that waited at the gate
        self._fault_rate = 0.0
        self._fault_statuses: tuple[int, ...] = ()
        self._fault_retry_after: str | None = None
        self._fault_turn = 0
        self._fault_rng = random.Random(seed)
        self._live_rng = random.Random(seed * 7919 + 17)  # for add_* after generation
        self._next_user_id = 2  # 1 is the shop admin
        self._next_post_id = 1000  # orders and refunds share WordPress's post ids
        self._next_item_id = 1
        self._next_meta_id = 1
        self._next_webhook_id = 1
        self._used_emails: set[str] = set()
        self._used_usernames: set[str] = set()
        self._guest_pool: list[dict] = []
        self._serving_state()

        self._generate(customers, orders)

    # ---------------------------------------------------------------- lifecycle

    def _before_stop(self) -> None:
        self.release_coupon_creation()  # no handler thread left waiting at the gate

    @property
    def base_url(self) -> str:
        """The shop's URL, with a trailing slash; the API is under wp-json/wc/v3/."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX.lstrip("/")

    # ---------------------------------------------------------------- faults and observability

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None) -> None:
        """The next `count` API requests fail with `status` (and Retry-After when given)."""
        with self._lock:
            self._faults.extend(_Fault("fail", status, retry_after) for _ in range(count))

    def delay_next(self, count: int, seconds: float) -> None:
        """The next `count` API requests are answered normally, but only after `seconds`."""
        with self._lock:
            self._faults.extend(_Fault("delay", seconds=seconds) for _ in range(count))

    def drop_next(self, count: int) -> None:
        """The next `count` API requests get their connection closed without an answer."""
        with self._lock:
            self._faults.extend(_Fault("drop") for _ in range(count))

    def fault_rate(self, rate: float, statuses: Iterable[int] = (429, 500),
                   retry_after: str | None = None) -> None:
        """A seeded-random fraction `rate` of API requests fails, with `statuses` in turn.

        `retry_after` goes on the 429 and 503 answers.
        """
        with self._lock:
            self._fault_rate = rate
            self._fault_turn = 0
            self._fault_statuses = tuple(statuses)
            self._fault_retry_after = retry_after
            self._fault_rng = random.Random(self.seed * 31 + 5)

    def fail_page(self, resource: str, page: int, status: int = 500) -> None:
        """Fake: every request for page `page` of the `resource` list ("orders", "customers")
        fails with `status` until `reset_faults()` (a shop that breaks on one page's data, as
        a plugin's fatal error on one order does)."""
        with self._lock:
            self._page_faults[(API_PREFIX + resource, page)] = status

    def coupons_down(self, status: int = 503, retry_after: str | None = None) -> None:
        """Fake: every coupons API request answers `status` until `reset_faults()` (a shop
        whose coupon plugin or database table is broken while the rest of it works)."""
        with self._lock:
            self._coupon_fault = (frozenset({"GET", "POST", "PUT", "DELETE"}),
                                  _Fault("fail", status, retry_after))

    def coupons_unreachable(self) -> None:
        """Fake: every coupons API request has its connection dropped until `reset_faults()`."""
        with self._lock:
            self._coupon_fault = (frozenset({"GET", "POST", "PUT", "DELETE"}), _Fault("drop"))

    def refuse_coupon_writes(self, code: str = "woocommerce_rest_shop_coupon_not_created",
                             message: str = "Coupons are disabled on this store.",
                             status: int = 400) -> None:
        """Fake: creating, changing or deleting a coupon is refused with `status` and this
        WooCommerce error until `reset_faults()`; reads still work (a permanent refusal)."""
        with self._lock:
            self._coupon_fault = (frozenset({"POST", "PUT", "DELETE"}),
                                  _Fault("fail", status, code=code, message=message))

    def hold_coupon_creation(self) -> None:
        """Fake: every `POST /coupons` waits, unanswered and with nothing stored, until
        `release_coupon_creation()`, so a test can kill the caller while it is inside the step
        (`wait_for_held_creation` says when one is waiting) instead of guessing a moment."""
        with self._lock:
            if self._creation_gate is None:
                self._creation_gate = threading.Event()

    def release_coupon_creation(self) -> None:
        """Let held and later coupon creations go on (each is then handled as usual)."""
        with self._lock:
            gate, self._creation_gate = self._creation_gate, None
        if gate is not None:
            gate.set()

    def wait_for_held_creation(self, count: int = 1, timeout: float = 60.0) -> bool:
        """Until `count` coupon creations have waited at the gate in all; False on timeout."""
        with self._creation_held:
            return self._creation_held.wait_for(lambda: self.coupon_posts_held >= count, timeout)

    def _hold_if_gated(self, method: str, path: str) -> None:
        if method != "POST" or path.rstrip("/") != API_PREFIX + "coupons":
            return
        with self._lock:
            gate = self._creation_gate
            if gate is None:
                return
            self.coupon_posts_held += 1
            self._creation_held.notify_all()
        gate.wait()

    def reset_faults(self) -> None:
        """Clear every injected fault, and let held coupon creations go on."""
        with self._lock:
            self._faults.clear()
            self._fault_rate = 0.0
            self._page_faults.clear()
            self._coupon_fault = None
        self.release_coupon_creation()

    def page_requests(self, resource: str, status: int | None = None, since: int = 0,
                      query: dict[str, str | None] | None = None) -> dict[int, int]:
        """How often each page of the `resource` list was asked for (GETs), e.g. to see where
        a backfill resumed. Optionally only those answered `status`, only from
        `requests_log[since]` on, and only those whose query has `query`'s values (None: the
        parameter was absent)."""
        path = API_PREFIX + resource
        counts: dict[int, int] = {}
        with self._lock:
            for r in self.requests_log[since:]:
                if query and any(r.query.get(k) != v for k, v in query.items()):
                    continue
                if r.method == "GET" and r.path == path and (status is None or r.status == status):
                    page = int(r.query.get("page", "1") or 1)
                    counts[page] = counts.get(page, 0) + 1
        return counts

    def count_requests(self, path_prefix: str | None = None, status: int | None = None) -> int:
        """Requests logged under `path_prefix` ("customers" means the API's customers)."""
        if path_prefix is not None and not path_prefix.startswith("/"):
            path_prefix = API_PREFIX + path_prefix
        with self._lock:
            return sum(
                1 for r in self.requests_log
                if (path_prefix is None or r.path.startswith(path_prefix))
                and (status is None or r.status == status)
            )

    # ---------------------------------------------------------------- time helpers

    def _local(self, gmt: datetime) -> datetime:
        return gmt + self.utc_offset

    def _stamp(self, obj: dict, field: str, gmt: datetime | None) -> None:
        obj[field] = _iso(None if gmt is None else self._local(gmt))
        obj[field + "_gmt"] = _iso(gmt)

    def _bump_modified(self, obj: dict) -> None:
        previous = obj.get("date_modified_gmt") or obj.get("date_created_gmt")
        new = self.clock.now()
        if previous is not None:
            new = max(new, _parse_iso(previous) + timedelta(seconds=1))
        self.clock.catch_up(new)
        self._stamp(obj, "date_modified", new)

    # ---------------------------------------------------------------- generation

    def _generate(self, n_customers: int, n_orders: int) -> None:
        rng = random.Random(self.seed)
        start = self.clock.now()
        span = int(_HISTORY.total_seconds())

        created = sorted(start - timedelta(seconds=rng.randrange(3600, span))
                         for _ in range(n_customers))
        for when in created:
            customer = self._new_customer(rng, when)
            self.customers[customer["id"]] = customer
        by_created = list(self.customers.values())  # ascending creation, ascending id
        created_keys = [c["date_created_gmt"] for c in by_created]

        last_order: dict[int, datetime] = {}
        paying: set[int] = set()
        order_times = sorted(start - timedelta(seconds=rng.randrange(60, span))
                             for _ in range(n_orders))
        for when in order_times:
            eligible = bisect_right(created_keys, _iso(when))
            customer = None
            if eligible and rng.random() >= self.guest_ratio:
                customer = by_created[int(eligible * rng.random() ** 1.6)]
            status = self._pick_status(rng, start - when)
            order = self._new_order(rng, when, status, customer, now=start)
            self.orders[order["id"]] = order
            if order["coupon_lines"] and status in _COUPON_USAGE_STATUSES:
                self._coupon_usage_recorded.add(order["id"])
            if customer is not None:
                cid = customer["id"]
                last_order[cid] = max(last_order.get(cid, when), when)
                if order["date_paid_gmt"]:
                    paying.add(cid)

        # Checkout saves the customer, so a customer's date_modified follows their last order.
        for customer in self.customers.values():
            cid = customer["id"]
            customer["is_paying_customer"] = cid in paying
            modified = _parse_iso(customer["date_modified_gmt"])
            if cid in last_order and last_order[cid] > modified:
                self._stamp(customer, "date_modified", last_order[cid])

    def _unique_email(self, rng: random.Random, first: str, last: str) -> str:
        base_first, base_last = _ascii(first).replace(" ", ""), _ascii(last).replace(" ", "").replace("'", "")
        style = rng.randrange(4)
        local = (f"{base_first}.{base_last}", f"{base_first}{base_last}",
                 f"{base_first[:1]}.{base_last}", f"{base_first}_{base_last}")[style]
        domain = rng.choice(_DOMAINS)
        email = f"{local}@{domain}"
        n = 1
        while email.lower() in self._used_emails:
            n += 1
            email = f"{local}{n}@{domain}"
        self._used_emails.add(email.lower())
        roll = rng.random()
        if roll < 0.08:  # people type their address the way they like it
            email = f"{local.title()}@{domain.capitalize()}" if n == 1 else f"{local.title()}{n}@{domain}"
        elif roll < 0.10:
            email = email.upper()
        return email

    def _unique_username(self, email: str) -> str:
        base = email.split("@")[0].lower()
        name, n = base, 1
        while name in self._used_usernames:
            n += 1
            name = f"{base}-{n}"
        self._used_usernames.add(name)
        return name

    def _address(self, rng: random.Random, first: str, last: str) -> dict:
        country, _, _, cities, pc_len, phone_prefix, states = rng.choices(
            _COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]
        if pc_len:
            postcode = str(rng.randrange(10 ** (pc_len - 1), 10 ** pc_len))
        else:
            postcode = f"{rng.choice(('SW1A', 'LS1', 'BS1', 'EC2A'))} {rng.randrange(1, 9)}{rng.choice('ABDEFGH')}{rng.choice('JLNPQRST')}"
        phone = "" if rng.random() < 0.1 else f"{phone_prefix}{rng.randrange(1, 9)} {rng.randrange(1000000, 9999999)}"
        if phone and rng.random() < 0.3:
            phone = phone.replace(" ", "")
        return {
            "first_name": first,
            "last_name": last,
            "company": rng.choice(("Acme GmbH", "Studio Nord", "Blue Ltd")) if rng.random() < 0.07 else "",
            "address_1": f"{rng.choice(_STREETS)} {rng.randrange(1, 180)}",
            "address_2": f"Apt {rng.randrange(1, 40)}" if rng.random() < 0.12 else "",
            "city": rng.choice(cities),
            "state": rng.choice(states) if states else "",
            "postcode": postcode,
            "country": country,
            "email": "",
            "phone": phone,
        }

    def _new_customer(self, rng: random.Random, created: datetime) -> dict:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = self._unique_email(rng, first, last)
        billing = self._address(rng, first, last)
        billing["email"] = email if rng.random() > 0.05 else self._unique_email(rng, first, last)
        if rng.random() < 0.15:
            shipping = self._address(rng, first, last)
        else:
            shipping = dict(billing)
        shipping.pop("email", None)
        shipping.pop("phone", None)
        if rng.random() < 0.05:
            shipping["phone"] = billing["phone"]  # newer WooCommerce has a shipping phone
            shipping = {k: shipping[k] for k in billing if k in shipping}
        modified = created
        if rng.random() < 0.3:
            modified = min(created + timedelta(seconds=rng.randrange(60, 200 * 86400)),
                           self.clock.now())
        customer_id = self._next_user_id
        self._next_user_id += 1 if rng.random() < 0.9 else rng.randrange(2, 5)
        customer: dict[str, Any] = {"id": customer_id}
        self._stamp(customer, "date_created", created)
        self._stamp(customer, "date_modified", modified)
        customer.update({
            "email": email,
            "first_name": first,
            "last_name": last,
            "role": "customer",
            "username": self._unique_username(email),
            "billing": billing,
            "shipping": shipping,
            "is_paying_customer": False,
            "avatar_url": "https://secure.gravatar.com/avatar/"
                          f"{hashlib.md5(email.strip().lower().encode()).hexdigest()}?s=96&d=mm&r=g",
            "meta_data": [],
        })
        return customer

    @staticmethod
    def _pick_status(rng: random.Random, age: timedelta) -> str:
        if age < timedelta(days=3):
            table = (("processing", 40), ("pending", 10), ("on-hold", 10), ("completed", 25),
                     ("failed", 5), ("cancelled", 5), ("refunded", 5))
        else:
            # Many shops never mark orders completed, so old "processing" orders are common.
            table = (("completed", 62), ("processing", 14), ("pending", 3), ("on-hold", 3),
                     ("cancelled", 7), ("refunded", 5), ("failed", 6))
        return rng.choices([s for s, _ in table], weights=[w for _, w in table])[0]

    def _guest_identity(self, rng: random.Random) -> tuple[str, str, str]:
        """(first, last, email) of a guest: some are registered customers' emails, some repeat."""
        roll = rng.random()
        if roll < 0.25 and self.customers:
            customer = self.customers[rng.choice(list(self.customers))]
            email = customer["email"]
            if rng.random() < 0.3:
                email = email.lower() if email != email.lower() else email.capitalize()
            return customer["first_name"], customer["last_name"], email
        if roll < 0.75:
            if len(self._guest_pool) < 8 or rng.random() < 0.35:
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                self._guest_pool.append({"first": first, "last": last,
                                         "email": self._unique_email(rng, first, last)})
            guest = rng.choice(self._guest_pool)
            return guest["first"], guest["last"], guest["email"]
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        return first, last, self._unique_email(rng, first, last)

    def _item_id(self) -> int:
        self._next_item_id += 1
        return self._next_item_id - 1

    def _new_order(self, rng: random.Random, created: datetime, status: str,
                   customer: dict | None, now: datetime,
                   applied_coupon: tuple[str, str, int] | None = None) -> dict:
        if customer is not None:
            billing = copy.deepcopy(customer["billing"])
            shipping = copy.deepcopy(customer["shipping"])
            if rng.random() < 0.1:  # moved or new phone at checkout: the order is fresher
                fresh = self._address(rng, customer["first_name"], customer["last_name"])
                fresh["email"] = billing["email"] or customer["email"]
                billing = fresh
                shipping = {k: v for k, v in fresh.items() if k not in ("email", "phone")}
            if not billing.get("email"):
                billing["email"] = customer["email"]
            customer_id = customer["id"]
        else:
            first, last, email = self._guest_identity(rng)
            billing = self._address(rng, first, last)
            billing["email"] = email
            shipping = {k: v for k, v in billing.items() if k not in ("email", "phone")}
            customer_id = 0

        country = billing["country"]
        rate = next(c[2] for c in _COUNTRIES if c[0] == country)
        order_id = self._next_post_id
        self._next_post_id += rng.randrange(1, 4)

        # Line items, coupon, shipping and fees, all in cents.
        lines = []
        for product_id, name, sku, price, variations in rng.sample(_PRODUCTS, rng.randrange(1, 4)):
            quantity = rng.choices((1, 2, 3), weights=(75, 20, 5))[0]
            variation_id, meta = 0, []
            if variations:
                variation_id, size = rng.choice(variations)
                name = f"{name} - {size}"
                meta = [{"id": self._meta_id(), "key": "pa_size", "value": size.lower(),
                         "display_key": "Size", "display_value": size}]
            lines.append({"product_id": product_id, "variation_id": variation_id, "name": name,
                          "sku": sku if not variation_id else f"{sku}-{name.rsplit(' ', 1)[-1]}",
                          "price": price, "quantity": quantity, "subtotal": price * quantity,
                          "meta": meta})
        subtotal = sum(line["subtotal"] for line in lines)
        coupon = rng.choice(_COUPONS) if rng.random() < 0.12 else None
        if applied_coupon is not None:  # after the draw, so seeded data stays the same
            coupon = applied_coupon
        remaining_fixed = min(coupon[2], subtotal) if coupon and coupon[1] == "fixed_cart" else 0
        for i, line in enumerate(lines):
            if coupon is None:
                discount = 0
            elif coupon[1] == "percent":
                discount = (line["subtotal"] * coupon[2] + 5000) // 10000
            elif i == len(lines) - 1:
                discount = remaining_fixed
            else:
                discount = min(remaining_fixed, (line["subtotal"] * min(coupon[2], subtotal)) // subtotal)
                remaining_fixed -= discount
            line["discount"] = discount
            line["total"] = line["subtotal"] - discount
            line["subtotal_tax"] = _tax(line["subtotal"], rate)
            line["total_tax"] = _tax(line["total"], rate)
        if country == "DE":
            shipping_total = 0 if subtotal >= 5000 else 490
        elif country in ("GB", "US"):
            shipping_total = 1490
        else:
            shipping_total = 990
        shipping_tax = _tax(shipping_total, rate)
        payment = ("bacs", "Direct bank transfer") if status == "on-hold" else rng.choices(
            _PAYMENT, weights=(50, 30, 10, 10))[0]
        fees = [("Cash on delivery fee", 200)] if payment[0] == "cod" else []

        discount_total = sum(line["discount"] for line in lines)
        discount_tax = sum(line["subtotal_tax"] - line["total_tax"] for line in lines)
        fee_tax = sum(_tax(c, rate) for _, c in fees)
        cart_tax = sum(line["total_tax"] for line in lines) + fee_tax
        total_tax = cart_tax + shipping_tax
        total = (sum(line["total"] for line in lines) + sum(c for _, c in fees)
                 + shipping_total + total_tax)

        paid = completed = None
        if status in _PAID_STATUSES:
            paid = min(created + timedelta(seconds=rng.randrange(5, 900)), now)
        if status in ("completed", "refunded") and paid is not None:
            completed = min(paid + timedelta(seconds=rng.randrange(3600, 5 * 86400)), now)
            if status == "refunded" and rng.random() < 0.4:
                completed = None  # refunded before it shipped
        modified = max(d for d in (created, paid, completed) if d is not None)

        order: dict[str, Any] = {"id": order_id, "parent_id": 0, "status": status,
                                 "currency": self.currency, "version": WC_VERSION,
                                 "prices_include_tax": False}
        self._stamp(order, "date_created", created)
        self._stamp(order, "date_modified", modified)
        order.update({
            "discount_total": _money(discount_total),
            "discount_tax": _money(discount_tax),
            "shipping_total": _money(shipping_total),
            "shipping_tax": _money(shipping_tax),
            "cart_tax": _money(cart_tax),
            "total": _money(total),
            "total_tax": _money(total_tax),
            "customer_id": customer_id,
            "order_key": "wc_order_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=13)),
            "billing": billing,
            "shipping": shipping,
            "payment_method": payment[0],
            "payment_method_title": payment[1],
            "transaction_id": f"txn_{rng.getrandbits(48):012x}" if paid and payment[0] in ("stripe", "paypal") else "",
            "customer_ip_address": f"203.0.113.{rng.randrange(1, 255)}",
            "customer_user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "created_via": "checkout",
            "customer_note": "Please leave at the door." if rng.random() < 0.03 else "",
        })
        self._stamp(order, "date_completed", completed)
        self._stamp(order, "date_paid", paid)
        order["cart_hash"] = hashlib.md5(f"{order_id}".encode()).hexdigest()
        order["number"] = str(order_id)
        order["meta_data"] = []
        order["line_items"] = [{
            "id": self._item_id(),
            "name": line["name"],
            "product_id": line["product_id"],
            "variation_id": line["variation_id"],
            "quantity": line["quantity"],
            "tax_class": "",
            "subtotal": _money(line["subtotal"]),
            "subtotal_tax": _money(line["subtotal_tax"]),
            "total": _money(line["total"]),
            "total_tax": _money(line["total_tax"]),
            "taxes": [{"id": 1, "total": _money(line["total_tax"]), "subtotal": _money(line["subtotal_tax"])}] if rate else [],
            "meta_data": line["meta"],
            "sku": line["sku"],
            "price": round(line["total"] / line["quantity"] / 100, 2),
            "parent_name": None,
        } for line in lines]
        order["tax_lines"] = [{
            "id": self._item_id(), "rate_code": f"{country}-VAT-1", "rate_id": 1, "label": "VAT",
            "compound": False, "tax_total": _money(cart_tax), "shipping_tax_total": _money(shipping_tax),
            "rate_percent": rate, "meta_data": [],
        }] if rate else []
        order["shipping_lines"] = [{
            "id": self._item_id(),
            "method_title": "Free shipping" if shipping_total == 0 else "Flat rate",
            "method_id": "free_shipping" if shipping_total == 0 else "flat_rate",
            "instance_id": "1", "total": _money(shipping_total), "total_tax": _money(shipping_tax),
            "taxes": [], "meta_data": [],
        }]
        order["fee_lines"] = [{
            "id": self._item_id(), "name": name, "tax_class": "", "tax_status": "taxable",
            "total": _money(c), "total_tax": _money(_tax(c, rate)), "taxes": [], "meta_data": [],
        } for name, c in fees]
        order["coupon_lines"] = [{
            "id": self._item_id(), "code": coupon[0], "discount": _money(discount_total),
            "discount_tax": _money(discount_tax), "meta_data": [],
        }] if coupon else []
        order["refunds"] = []
        order["payment_url"] = f"https://shop.example/checkout/order-pay/{order_id}/?pay_for_order=true&key={order['order_key']}"
        order["currency_symbol"] = {"EUR": "€", "USD": "$", "GBP": "£"}.get(self.currency, self.currency)
        self._set_flags(order)

        # Refunds: refunded orders in full (one or two refunds), some completed ones in part.
        self.refunds[order_id] = []
        if status == "refunded" or (status == "completed" and rng.random() < 0.08):
            base = completed or paid or created
            amounts = [total]
            if status == "completed":
                amounts = [max(100, total * rng.randrange(5, 60) // 100)]
            elif rng.random() < 0.3 and total > 200:
                part = total * rng.randrange(20, 80) // 100
                amounts = [part, total - part]
            when = base
            for amount in amounts:
                when = min(when + timedelta(seconds=rng.randrange(600, 10 * 86400)), now)
                self._append_refund(order, amount, rng.choice(_REFUND_REASONS), when)
            if when > _parse_iso(order["date_modified_gmt"]):
                self._stamp(order, "date_modified", when)
        if rng.random() < 0.15:  # an admin edit later on (a note, an address fix)
            later = min(_parse_iso(order["date_modified_gmt"])
                        + timedelta(seconds=rng.randrange(60, 30 * 86400)), now)
            self._stamp(order, "date_modified", later)
        return order

    def _meta_id(self) -> int:
        self._next_meta_id += 1
        return self._next_meta_id - 1

    @staticmethod
    def _set_flags(order: dict) -> None:
        order["is_editable"] = order["status"] in ("pending", "on-hold", "auto-draft", "checkout-draft")
        order["needs_payment"] = order["status"] in ("pending", "failed") and _cents(order["total"]) > 0
        order["needs_processing"] = True

    def _append_refund(self, order: dict, cents: int, reason: str, when: datetime) -> dict:
        refund_id = self._next_post_id
        self._next_post_id += 1
        full: dict[str, Any] = {"id": refund_id}
        self._stamp(full, "date_created", when)
        full.update({"amount": _money(cents), "reason": reason, "refunded_by": 1,
                     "refunded_payment": order["payment_method"] in ("stripe", "paypal"),
                     "meta_data": [], "line_items": []})
        self.refunds.setdefault(order["id"], []).insert(0, full)
        order["refunds"].insert(0, {"id": refund_id, "reason": reason, "total": _money(-cents)})
        return full

    # ---------------------------------------------------------------- mutations (thread-safe)

    def update_customer(self, customer_id: int, **fields: Any) -> dict:
        """Change a customer's fields (billing/shipping merge) and bump date_modified."""
        with self._lock:
            customer = self.customers[customer_id]
            for key, value in fields.items():
                if key in ("billing", "shipping") and isinstance(value, dict):
                    customer[key].update(value)
                else:
                    customer[key] = value
            self._bump_modified(customer)
            return copy.deepcopy(customer)

    def update_order(self, order_id: int, **fields: Any) -> dict:
        """Change an order's fields (billing/shipping merge) and bump date_modified.

        A new status of processing/completed sets date_paid, completed sets date_completed,
        when not set yet, as WooCommerce does.
        """
        with self._lock:
            order = self.orders[order_id]
            for key, value in fields.items():
                if key in ("billing", "shipping") and isinstance(value, dict):
                    order[key].update(value)
                else:
                    order[key] = value
            self._bump_modified(order)
            modified = _parse_iso(order["date_modified_gmt"])
            if "status" in fields:
                if fields["status"] in ("processing", "completed") and not order["date_paid_gmt"]:
                    self._stamp(order, "date_paid", modified)
                if fields["status"] == "completed" and not order["date_completed_gmt"]:
                    self._stamp(order, "date_completed", modified)
                self._set_flags(order)
                self._count_coupon_usage(order)
            return copy.deepcopy(order)

    def add_customer(self, **overrides: Any) -> dict:
        """Register a new customer now (created = modified = clock); overrides win."""
        with self._lock:
            customer = self._new_customer(self._live_rng, self.clock.now())
            self._stamp(customer, "date_modified", self.clock.now())
            for key, value in overrides.items():
                if key in ("billing", "shipping") and isinstance(value, dict):
                    customer[key].update(value)
                else:
                    customer[key] = value
            if "email" in overrides:
                self._used_emails.add(str(overrides["email"]).lower())
            self.customers[customer["id"]] = customer
            return copy.deepcopy(customer)

    def add_order(self, *, coupon_code: str | None = None, **overrides: Any) -> dict:
        """Place an order now (default status processing); overrides win.

        `customer_id` picks the buyer (0 for a guest; billing then comes from the customer);
        without it a registered customer or a guest is chosen at random (guest_ratio).
        Overriding line_items does not recompute totals.

        `coupon_code` applies one of the shop's coupons as checkout does: the order gets its
        `coupon_lines` and discount, or `CouponRejected` is raised and nothing is stored when
        the code does not exist, has expired, reached a usage limit (in total, or for this
        customer id / guest billing email), misses the minimum spend or is restricted to other
        emails. An order in pending/processing/on-hold/completed counts one use.
        """
        with self._lock:
            rng = self._live_rng
            now = self.clock.now()
            if "customer_id" in overrides:
                cid = overrides["customer_id"]
                customer = self.customers[cid] if cid else None
            elif self.customers and rng.random() >= self.guest_ratio:
                customer = self.customers[rng.choice(list(self.customers))]
            else:
                customer = None
            coupon = applied = None
            if coupon_code is not None:
                coupon = self._coupon_to_apply(coupon_code)
                applied = (coupon["code"], coupon["discount_type"], _cents(coupon["amount"]))
            order = self._new_order(rng, now, overrides.get("status", "processing"), customer, now,
                                    applied)
            self._stamp(order, "date_modified", now)
            for key, value in overrides.items():
                if key in ("billing", "shipping") and isinstance(value, dict):
                    order[key].update(value)
                else:
                    order[key] = value
            if coupon is not None:
                self._check_coupon_for_order(coupon, order, customer)
            self._set_flags(order)
            self.orders[order["id"]] = order
            if customer is not None and order["date_paid_gmt"]:
                customer["is_paying_customer"] = True
            self._count_coupon_usage(order)
            return copy.deepcopy(order)

    def refund_order(self, order_id: int, amount: str, reason: str = "") -> dict:
        """Refund `amount` (positive decimal string); fully refunded orders become "refunded"."""
        with self._lock:
            order = self.orders[order_id]
            cents = _cents(amount)
            refunded = -sum(_cents(r["total"]) for r in order["refunds"])
            remaining = _cents(order["total"]) - refunded
            if cents <= 0 or cents > remaining:
                raise ValueError(f"invalid refund amount {amount}: {_money(remaining)} refundable")
            self._bump_modified(order)
            self._append_refund(order, cents, reason, _parse_iso(order["date_modified_gmt"]))
            if cents == remaining:
                order["status"] = "refunded"
                self._set_flags(order)
            return copy.deepcopy(order)

    def delete_customer(self, customer_id: int) -> dict:
        """Delete the user; their orders keep their data but get customer_id 0 (see module doc)."""
        with self._lock:
            customer = self.customers.pop(customer_id)
            for order in self.orders.values():
                if order["customer_id"] == customer_id:
                    order["customer_id"] = 0
                    self._bump_modified(order)
            return customer

    def erase_customer(self, customer_id: int, anonymize_orders: bool = True) -> dict:
        """WordPress's "Erase personal data" (approximated): blank the customer, anonymise orders.

        Orders get placeholder values (`deleted@site.invalid`, `[deleted]`), customer_id 0 and
        meta `_anonymized` = `yes`.
        """
        with self._lock:
            customer = self.customers[customer_id]
            email = customer["email"].lower()
            blank = {k: "" for k in customer["billing"]}
            self.update_customer(customer_id, email="", first_name="", last_name="",
                                 billing=blank, shipping={k: "" for k in customer["shipping"]})
            if anonymize_orders:
                for order in self.orders.values():
                    if order["customer_id"] == customer_id or order["billing"]["email"].lower() == email:
                        self._anonymize_order(order)
            return copy.deepcopy(self.customers[customer_id])

    def _anonymize_order(self, order: dict) -> None:
        for block in (order["billing"], order["shipping"]):
            for key in list(block):
                if key == "email":
                    block[key] = "deleted@site.invalid"
                elif key == "phone":
                    block[key] = "".join("0" if ch.isdigit() else ch for ch in block[key])
                elif key in ("state", "country"):
                    block[key] = ""
                elif block[key]:
                    block[key] = "[deleted]"
        order["customer_ip_address"] = "0.0.0.0"
        order["customer_user_agent"] = "[deleted]"
        order["customer_id"] = 0
        order["meta_data"].append({"id": self._meta_id(), "key": "_anonymized", "value": "yes"})
        self._bump_modified(order)

    def add_webhook(self, topic: str, delivery_url: str, secret: str = "whsec_test",
                    name: str | None = None, status: str = "active") -> dict:
        """Register a webhook (as WP admin would; no ping)."""
        with self._lock:
            webhook_id = self._next_webhook_id
            self._next_webhook_id += 1
            resource, _, event = topic.partition(".")
            webhook: dict[str, Any] = {
                "id": webhook_id,
                "name": name or f"Webhook created on {self._local(self.clock.now()):%b %d, %Y @ %I:%M %p}",
                "status": status, "topic": topic, "resource": resource, "event": event,
                "hooks": [f"woocommerce_{event}_{resource}"], "delivery_url": delivery_url,
                "secret": secret,
            }
            self._stamp(webhook, "date_created", self.clock.now())
            self._stamp(webhook, "date_modified", self.clock.now())
            webhook["_failure_count"] = 0
            self.webhooks[webhook_id] = webhook
            return self._public_webhook(webhook)

    def set_webhook_status(self, webhook_id: int, status: str) -> dict:
        if status not in ("active", "paused", "disabled"):
            raise ValueError(f"unknown webhook status {status!r}")
        with self._lock:
            webhook = self.webhooks[webhook_id]
            webhook["status"] = status
            if status == "active":
                webhook["_failure_count"] = 0
            self._bump_modified(webhook)
            return self._public_webhook(webhook)

    @staticmethod
    def _public_webhook(webhook: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in webhook.items() if not k.startswith("_")}

    # ---------------------------------------------------------------- coupons

    def add_coupon(self, code: str, **fields: Any) -> dict:
        """Create a coupon as POST /coupons does (same validation, `_ApiError` on refusal)."""
        with self._lock:
            return copy.deepcopy(self._create_coupon({"code": code, **fields}))

    def coupon_by_code(self, code: str) -> dict | None:
        """The published coupon with this code (any case), as wc_get_coupon_id_by_code finds it."""
        with self._lock:
            coupon = self._published_coupon(code)
            return copy.deepcopy(coupon) if coupon is not None else None

    def _published_coupon(self, code: str) -> dict | None:
        """Newest published coupon with the formatted code (trashed and drafts never match)."""
        wanted = format_coupon_code(code)
        if not wanted:  # wc_get_coupon_id_by_code answers 0 for an empty code
            return None
        matches = [c for c in self.coupons.values()
                   if c["status"] == "publish" and c["code"] == wanted]
        return max(matches, key=lambda c: (c["date_created_gmt"], c["id"])) if matches else None

    def _create_coupon(self, data: dict) -> dict:
        """POST /coupons (WC_REST_Coupons_V2_Controller::prepare_object_for_database)."""
        if "code" not in data:
            raise _ApiError(400, "rest_missing_callback_param", "Missing parameter(s): code",
                            {"params": ["code"]})
        if not isinstance(data["code"], str):
            raise _invalid_param("code", "code is not of type string.")
        if not data["code"]:
            raise _ApiError(400, "woocommerce_rest_empty_coupon_code", "The coupon code cannot be empty.")
        now = self.clock.now()
        coupon: dict[str, Any] = {
            "id": 0, "code": "", "amount": "0.00", "status": "publish",
            "discount_type": "fixed_cart", "description": "",
            "date_expires": None, "date_expires_gmt": None,
            "usage_count": 0, "individual_use": False, "product_ids": [], "excluded_product_ids": [],
            "usage_limit": None, "usage_limit_per_user": None, "limit_usage_to_x_items": None,
            "free_shipping": False, "product_categories": [], "excluded_product_categories": [],
            "exclude_sale_items": False, "minimum_amount": "0.00", "maximum_amount": "0.00",
            "email_restrictions": [], "used_by": [], "meta_data": [],
        }
        self._stamp(coupon, "date_created", now)
        self._stamp(coupon, "date_modified", now)
        self._apply_coupon_fields(coupon, data, own_id=0)
        coupon["id"] = self._next_post_id
        self._next_post_id += 1
        self.coupons[coupon["id"]] = self._order_coupon_keys(coupon)
        return self.coupons[coupon["id"]]

    def _put_coupon(self, coupon_id: int, data: dict) -> dict:
        """PUT /coupons/<id>: the same checks as creating, except that an empty code is taken
        (only creation refuses one); `usage_count` and `used_by` stay."""
        coupon = copy.deepcopy(self.coupons[coupon_id])
        self._apply_coupon_fields(coupon, data, own_id=coupon_id)
        self._bump_modified(coupon)
        self.coupons[coupon_id] = self._order_coupon_keys(coupon)
        return self.coupons[coupon_id]

    @staticmethod
    def _order_coupon_keys(coupon: dict) -> dict:
        """The keys in the order WooCommerce's coupon JSON has them."""
        order = ("id", "code", "amount", "status", "date_created", "date_created_gmt",
                 "date_modified", "date_modified_gmt", "discount_type", "description",
                 "date_expires", "date_expires_gmt", "usage_count", "individual_use",
                 "product_ids", "excluded_product_ids", "usage_limit", "usage_limit_per_user",
                 "limit_usage_to_x_items", "free_shipping", "product_categories",
                 "excluded_product_categories", "exclude_sale_items", "minimum_amount",
                 "maximum_amount", "email_restrictions", "used_by", "meta_data")
        return {key: coupon[key] for key in order}

    def _apply_coupon_fields(self, coupon: dict, data: dict, own_id: int) -> None:
        """Writable fields in the schema's order, as WooCommerce sets them (so `amount` is
        checked against the discount type the coupon had before this request). Unknown fields
        are ignored; a refusal leaves `coupon` half-changed, so callers pass a copy."""
        if "code" in data:
            if not isinstance(data["code"], str):
                raise _invalid_param("code", "code is not of type string.")
            code = format_coupon_code(data["code"])
            taken = self._published_coupon(code)
            if taken is not None and taken["id"] != own_id:
                raise _ApiError(400, "woocommerce_rest_coupon_code_already_exists",
                                "The coupon code already exists")
            coupon["code"] = code
        if "amount" in data:
            amount = _decimal_text(data["amount"], "amount")
            if amount is None:
                amount_cents = 0  # set_amount: a non-numeric amount becomes 0
            else:
                amount_cents = _cents(amount)
            if amount_cents < 0 or (coupon["discount_type"] == "percent" and amount_cents > 10000):
                raise _ApiError(400, "coupon_invalid_amount", "Invalid discount amount.")
            coupon["amount"] = _money(amount_cents)
        if "status" in data:
            if not isinstance(data["status"], str):
                raise _invalid_param("status", "status is not of type string.")
            coupon["status"] = data["status"] or "publish"
        if "discount_type" in data:
            if data["discount_type"] not in COUPON_TYPES:
                raise _invalid_param("discount_type",
                                     f"discount_type is not one of {', '.join(COUPON_TYPES)}.")
            coupon["discount_type"] = data["discount_type"]
        if "description" in data:
            coupon["description"] = str(data["description"])
        for name in ("date_expires", "date_expires_gmt"):
            if name in data:
                expires = self._coupon_date(data[name], name, gmt=name.endswith("_gmt"))
                self._stamp(coupon, "date_expires", expires)
        for name in ("individual_use", "free_shipping", "exclude_sale_items"):
            if name in data:
                if not isinstance(data[name], bool):
                    raise _invalid_param(name, f"{name} is not of type boolean.")
                coupon[name] = data[name]
        for name in ("product_ids", "excluded_product_ids", "product_categories",
                     "excluded_product_categories"):
            if name in data:
                if not isinstance(data[name], list) or not all(
                        isinstance(v, int) and not isinstance(v, bool) for v in data[name]):
                    raise _invalid_param(name, f"{name}[0] is not of type integer.")
                coupon[name] = [v for v in data[name] if v > 0]
        for name in ("usage_limit", "usage_limit_per_user", "limit_usage_to_x_items"):
            if name in data and data[name] is not None:
                if not isinstance(data[name], int) or isinstance(data[name], bool):
                    raise _invalid_param(name, f"{name} is not of type integer.")
                coupon[name] = abs(data[name]) or None  # absint; 0 means no limit: null
        for name in ("minimum_amount", "maximum_amount"):
            if name in data:
                amount = _decimal_text(data[name], name)
                coupon[name] = _money(_cents(amount)) if amount is not None else "0.00"
        if "email_restrictions" in data:
            emails = data["email_restrictions"]
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise _invalid_param("email_restrictions", "email_restrictions[0] is not of type string.")
            cleaned = [e.strip().lower() for e in emails if e.strip()]
            if any(not _EMAIL.match(e.replace("*", "x")) for e in cleaned):
                raise _ApiError(400, "coupon_invalid_email_address", "Invalid email address restriction.")
            coupon["email_restrictions"] = cleaned
        if isinstance(data.get("meta_data"), list):
            coupon["meta_data"] = _merge_meta(coupon["meta_data"], data["meta_data"], self._meta_id)

    def _coupon_date(self, value: Any, name: str, gmt: bool) -> datetime | None:
        """A coupon date as UTC: no offset means the shop's timezone (or UTC for `*_gmt`)."""
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _invalid_param(name, "Invalid date.")
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _invalid_param(name, "Invalid date.") from None
        if parsed.tzinfo is not None:
            return parsed.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
        return (parsed if gmt else parsed - self.utc_offset).replace(microsecond=0)

    def _delete_coupon(self, coupon_id: int, force: bool) -> dict:
        """DELETE coupons/<id>: to the trash, or with force=true gone; the answer is the coupon
        as it was (WC_REST_CRUD_Controller::delete_item)."""
        before = copy.deepcopy(self.coupons[coupon_id])
        if force:
            del self.coupons[coupon_id]
            return before
        if before["status"] == "trash":
            raise _ApiError(410, "woocommerce_rest_already_trashed",
                            "The shop_coupon has already been deleted.")
        self.coupons[coupon_id]["status"] = "trash"
        self._bump_modified(self.coupons[coupon_id])
        return before

    def _coupon_to_apply(self, code: str) -> dict:
        coupon = self._published_coupon(code)
        if coupon is None:
            raise CouponRejected(105, f'Coupon "{format_coupon_code(code)}" does not exist!')
        if coupon["discount_type"] not in ("percent", "fixed_cart"):
            raise ValueError(f"fake: orders cannot apply {coupon['discount_type']} coupons")
        return coupon

    def _check_coupon_for_order(self, coupon: dict, order: dict, customer: dict | None) -> None:
        """WC_Discounts::is_coupon_valid and the checkout's customer checks, for one order."""
        if coupon["usage_limit"] and coupon["usage_count"] >= coupon["usage_limit"]:
            raise CouponRejected(106, "Coupon usage limit has been reached.")
        billing_email = order["billing"]["email"].strip().lower()
        if coupon["usage_limit_per_user"]:
            # The Store API checkout counts every alias of the buyer: their id, account email
            # and billing email, and for a guest the accounts that email belongs to.
            aliases = {billing_email}
            owners = [customer] if customer is not None else [
                c for c in self.customers.values()
                if billing_email in (c["email"].strip().lower(), c["billing"]["email"].strip().lower())]
            for owner in owners:
                aliases |= {str(owner["id"]), owner["email"].strip().lower()}
            used = sum(1 for u in coupon["used_by"] if str(u).strip().lower() in aliases - {""})
            if used >= coupon["usage_limit_per_user"]:
                raise CouponRejected(106, "Coupon usage limit has been reached.")
        expires = coupon["date_expires_gmt"]
        if expires is not None and self.clock.now() > _parse_iso(expires):
            raise CouponRejected(107, "This coupon has expired.")
        subtotal = sum(_cents(line["subtotal"]) for line in order["line_items"])
        if _cents(coupon["minimum_amount"]) > 0 and _cents(coupon["minimum_amount"]) > subtotal:
            raise CouponRejected(108, f"The minimum spend for this coupon is {coupon['minimum_amount']}.")
        if coupon["email_restrictions"]:
            emails = {billing_email}
            if customer is not None and customer["email"]:
                emails.add(customer["email"].strip().lower())
            if not any(_email_allowed(e, coupon["email_restrictions"]) for e in emails if e):
                raise CouponRejected(102, f'Please enter a valid email to use coupon code "{coupon["code"]}".')

    def _count_coupon_usage(self, order: dict) -> None:
        """wc_update_coupon_usage_counts: count an active order's coupons once; give the uses
        back when it is cancelled, fails or is trashed, and count them again if it comes back."""
        recorded = order["id"] in self._coupon_usage_recorded
        if order["status"] in _COUPON_RETURN_STATUSES and recorded:
            self._coupon_usage_recorded.discard(order["id"])
            step = -1
        elif order["status"] in _COUPON_USAGE_STATUSES and not recorded:
            self._coupon_usage_recorded.add(order["id"])
            step = 1
        else:
            return
        used_by = str(order["customer_id"]) if order["customer_id"] else order["billing"]["email"]
        for line in order["coupon_lines"]:
            coupon = self._published_coupon(line["code"])
            if coupon is None:  # deleted since: WooCommerce finds nothing to count
                continue
            if step > 0:
                coupon["usage_count"] += 1
                coupon["used_by"].append(used_by)
            elif coupon["usage_count"] > 0:
                coupon["usage_count"] -= 1
                if used_by in coupon["used_by"]:
                    coupon["used_by"].remove(used_by)

    # ---------------------------------------------------------------- webhook deliveries

    def webhook_body(self, topic: str, resource_id: int) -> bytes:
        """The body WooCommerce would send for `topic` now: the REST JSON, or {"id": N}."""
        resource, _, event = topic.partition(".")
        if event == "deleted":
            return php_json({"id": resource_id})
        with self._lock:
            if resource == "customer":
                return php_json(self.customers[resource_id])
            if resource == "order":
                return php_json(self.orders[resource_id])
            if resource == "coupon":
                return php_json(self.coupons[resource_id])
        raise ValueError(f"the fake shop has no {resource!r} resources")

    def webhook_request(self, webhook_id: int, resource_id: int) -> tuple[str, dict[str, str], bytes]:
        """(delivery_url, headers, body) of a delivery of registered webhook `webhook_id` now."""
        with self._lock:
            webhook = self.webhooks[webhook_id]
            body = self.webhook_body(webhook["topic"], resource_id)
            headers = webhook_headers(webhook["topic"], body, webhook["secret"],
                                      self._source_url(), webhook_id)
            return webhook["delivery_url"], headers, body

    def _source_url(self) -> str:
        return self.base_url if self._server is not None else "https://shop.example/"

    def deliver_webhooks(self, topic: str, resource_id: int, timeout: float = 10.0) -> list[tuple[int, int | None]]:
        """POST to every active webhook of `topic` now; [(webhook id, HTTP status or None)].

        Like WooCommerce: 200-302 counts as success (redirects are not followed), nothing is
        retried, and more than 5 consecutive failures disable the webhook.
        """
        with self._lock:
            targets = [w["id"] for w in self.webhooks.values()
                       if w["topic"] == topic and w["status"] == "active"]
        results: list[tuple[int, int | None]] = []
        for webhook_id in targets:
            url, headers, body = self.webhook_request(webhook_id, resource_id)
            try:
                status: int | None = requests.post(url, data=body, headers=headers, timeout=timeout,
                                                   allow_redirects=False).status_code
            except requests.RequestException:
                status = None
            with self._lock:
                webhook = self.webhooks[webhook_id]
                if status is not None and 200 <= status <= 302:
                    webhook["_failure_count"] = 0
                else:
                    webhook["_failure_count"] += 1
                    if webhook["_failure_count"] > 5:
                        webhook["status"] = "disabled"
                self.webhook_deliveries.append({"webhook_id": webhook_id, "topic": topic,
                                                "resource_id": resource_id, "status": status,
                                                "headers": headers, "body": body})
            results.append((webhook_id, status))
        return results

    # ---------------------------------------------------------------- HTTP handling

    def _next_fault(self, path: str, query: dict[str, str] | None = None) -> _Fault | None:
        if not path.startswith(API_PREFIX):
            return None
        with self._lock:
            if self._page_faults and query is not None:
                try:
                    page = int(query.get("page", "1") or 1)
                except ValueError:
                    page = 0
                status = self._page_faults.get((path, page))
                if status is not None:
                    return _Fault("fail", status)
            if self._faults:
                return self._faults.popleft()
            if self._fault_rate and self._fault_rng.random() < self._fault_rate:
                # Statuses take turns, so every one of them shows up once a few requests failed.
                status = self._fault_statuses[self._fault_turn % len(self._fault_statuses)]
                self._fault_turn += 1
                return _Fault("fail", status, self._fault_retry_after if status in (429, 503) else None)
        return None

    def _coupon_fault_for(self, method: str, path: str) -> _Fault | None:
        if not path.startswith(API_PREFIX + "coupons"):
            return None
        with self._lock:
            if self._coupon_fault is None:
                return None
            methods, fault = self._coupon_fault
            return fault if ("PUT" if method == "PATCH" else method) in methods else None

    def _log(self, method: str, path: str, query: dict, status: int) -> None:
        with self._lock:
            self.requests_log.append(LoggedRequest(method, path, query, status))

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, str], bytes] | None:
        """Answer one request: (status, headers, body), or None to drop the connection."""
        split = urlsplit(target)
        path = split.path
        multi = parse_qs(split.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in multi.items()}
        fault = self._coupon_fault_for(method, path) or self._next_fault(
            path, query if method == "GET" else None)
        if fault is not None and fault.kind == "drop":
            self._log(method, path, query, 0)
            return None
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is None:
            self._hold_if_gated(method, path)
        try:
            if fault is not None and fault.kind == "fail":
                raise _fault_error(fault)
            status, extra_headers, payload = self._route(method, path, query, multi, headers, body)
        except _ApiError as err:
            status, extra_headers, payload = err.status, err.headers, err.body()
        out = {"Content-Type": "application/json; charset=UTF-8", **extra_headers}
        self._log(method, path, query, status)
        return status, out, php_json(payload)

    def _authenticate(self, headers: dict[str, str], query: dict[str, str], method: str,
                      single: bool) -> None:
        auth = None if self.drop_authorization_header else headers.get("authorization")
        key = secret = None
        if auth and auth.lower().startswith("basic "):
            try:
                key, _, secret = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                key = secret = None
        elif "consumer_key" in query:
            key, secret = query["consumer_key"], query.get("consumer_secret", "")
        if key is None:
            if method == "GET":
                raise _ApiError(401, "woocommerce_rest_cannot_view",
                                "Sorry, you cannot view this resource." if single
                                else "Sorry, you cannot list resources.")
            if single:
                raise _ApiError(401, "woocommerce_rest_cannot_edit",
                                "Sorry, you are not allowed to edit this resource.")
            raise _ApiError(401, "woocommerce_rest_cannot_create",
                            "Sorry, you are not allowed to create resources.")
        if not hmac.compare_digest(key.encode(), self.consumer_key.encode()):
            raise _ApiError(401, "woocommerce_rest_authentication_error", "Consumer key is invalid.")
        if not hmac.compare_digest((secret or "").encode(), self.consumer_secret.encode()):
            raise _ApiError(401, "woocommerce_rest_authentication_error", "Consumer secret is invalid.")

    def _route(self, method: str, path: str, query: dict[str, str], multi: dict[str, list[str]],
               headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        if not path.startswith(API_PREFIX):
            raise _ApiError(404, "rest_no_route", "No route was found matching the URL and request method.")
        parts = path[len(API_PREFIX):].strip("/").split("/")
        resource = parts[0]
        ident = None
        if len(parts) >= 2:
            if not parts[1].isdigit():
                raise _no_route()
            ident = int(parts[1])
        known = resource in ("customers", "orders", "webhooks", "coupons")
        if not known or len(parts) > 3 or (len(parts) == 3 and (resource, parts[2]) != ("orders", "refunds")):
            raise _no_route()
        sub = parts[2] if len(parts) == 3 else None
        if method == "PATCH":
            method = "PUT"
        allowed = {
            (False, "GET"), (True, "GET"), (True, "PUT"), (True, "POST"),
        }
        if resource in ("webhooks", "coupons", "orders"):
            allowed |= {(False, "POST"), (True, "DELETE")}
        else:
            allowed |= {(True, "DELETE")}
        if sub is not None:
            allowed = {(True, "GET")}
        if (ident is not None, method) not in allowed:
            raise _no_route()
        self._authenticate(headers, query, method, single=ident is not None)
        data = _request_data(headers, body) if method in ("POST", "PUT") else {}

        with self._lock:
            if ident is None and method == "GET":
                return self._list(resource, query, multi)
            if resource == "webhooks" and ident is None:
                return 201, {}, self._create_webhook(data)
            if resource == "coupons":
                return self._route_coupon(method, ident, query, data)
            if resource == "orders" and ident is None:
                return 201, {}, self._post_order(data)
            if sub == "refunds":
                self._get_order(ident)
                return 200, {}, self.refunds.get(ident, [])
            if resource == "customers":
                if ident not in self.customers:
                    raise _ApiError(404, "woocommerce_rest_invalid_id", "Invalid resource ID.")
                if method == "GET":
                    return 200, {}, self.customers[ident]
                if method == "DELETE":
                    # WooCommerce cannot trash users: without force=true it refuses.
                    if query.get("force") not in ("true", "1"):
                        raise _ApiError(501, "woocommerce_rest_trash_not_supported",
                                        "Customers do not support trashing.")
                    return 200, {}, self.delete_customer(ident)
                return 200, {}, self._put_customer(ident, data)
            if resource == "orders":
                self._get_order(ident)
                if method == "GET":
                    return 200, {}, self.orders[ident]
                if method == "DELETE":
                    return 200, {}, self._delete_order(ident, query.get("force") in ("true", "1"))
                return 200, {}, self._put_order(ident, data)
            if ident not in self.webhooks:
                raise _ApiError(404, "woocommerce_rest_webhook_invalid_id", "Invalid webhook ID.")
            if method == "GET":
                return 200, {}, self._public_webhook(self.webhooks[ident])
            if method == "DELETE":
                if query.get("force") not in ("true", "1"):
                    raise _ApiError(501, "woocommerce_rest_trash_not_supported",
                                    "Webhooks do not support trashing.")
                return 200, {}, self._public_webhook(self.webhooks.pop(ident))
            return 200, {}, self._put_webhook(ident, data)

    def _route_coupon(self, method: str, ident: int | None, query: dict[str, str],
                      data: dict) -> tuple[int, dict[str, str], Any]:
        if ident is None:
            if "id" in data and data["id"]:
                raise _ApiError(400, "woocommerce_rest_shop_coupon_exists",
                                "Cannot create existing shop_coupon.")
            return 201, {"Location": f"{self._source_url()}wp-json/wc/v3/coupons/{self._next_post_id}"}, \
                self._create_coupon(data)
        if ident not in self.coupons:
            # update_item answers 400 for an unknown id, get_item and delete_item 404.
            raise _ApiError(400 if method == "PUT" else 404, "woocommerce_rest_shop_coupon_invalid_id",
                            "Invalid ID.")
        if method == "GET":
            return 200, {}, self.coupons[ident]
        if method == "DELETE":
            return 200, {}, self._delete_coupon(ident, _bool_param(query, "force"))
        return 200, {}, self._put_coupon(ident, data)

    def _delete_order(self, order_id: int, force: bool) -> dict:
        """DELETE orders/<id>: to the trash (status "trash"), or with force=true gone for good
        (its refunds too); either way the answer is the order as it was."""
        if not force:
            if self.orders[order_id]["status"] == "trash":
                raise _ApiError(410, "woocommerce_rest_already_trashed",
                                "The order has already been deleted.")
            before = copy.deepcopy(self.orders[order_id])
            self.update_order(order_id, status="trash")
            return before
        self.refunds.pop(order_id, None)
        return self.orders.pop(order_id)

    def _post_order(self, data: dict) -> dict:
        """POST /orders (fake: only `customer_id`, `billing`, `status` and `coupon_lines` are
        read; line items are generated). A code the order may not apply is refused with 400
        `woocommerce_rest_invalid_coupon` and the check's message, and nothing is stored, as
        the orders controller's `calculate_coupons` does; one code per order."""
        if "id" in data and data["id"]:
            raise _ApiError(400, "woocommerce_rest_shop_order_exists", "Cannot create existing shop_order.")
        overrides: dict[str, Any] = {"created_via": "rest-api", "status": "pending"}
        customer_id = data.get("customer_id", 0)
        if isinstance(customer_id, bool) or not isinstance(customer_id, int):
            raise _invalid_param("customer_id", "customer_id is not of type integer.")
        if customer_id and customer_id not in self.customers:
            raise _ApiError(400, "woocommerce_rest_invalid_customer_id", "Customer ID is invalid.")
        overrides["customer_id"] = customer_id
        if "status" in data:
            if data["status"] not in ORDER_STATUSES:
                raise _invalid_param("status", f"status is not one of {', '.join(ORDER_STATUSES)}.")
            overrides["status"] = data["status"]
        if isinstance(data.get("billing"), dict):
            overrides["billing"] = {k: str(v) for k, v in data["billing"].items()
                                    if k in _BILLING_FIELDS}
        lines = data.get("coupon_lines") or []
        if not isinstance(lines, list) or not all(isinstance(line, dict) and isinstance(line.get("code"), str)
                                                  for line in lines):
            raise _invalid_param("coupon_lines", "coupon_lines[0][code] is not of type string.")
        if len(lines) > 1:
            raise _ApiError(400, "fake_one_coupon_per_order", "The fake shop applies one code per order.")
        try:
            return self.add_order(coupon_code=lines[0]["code"] if lines else None, **overrides)
        except CouponRejected as refused:
            raise _ApiError(400, "woocommerce_rest_invalid_coupon", refused.message) from None

    def _get_order(self, order_id: int) -> dict:
        if order_id not in self.orders:
            raise _ApiError(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        return self.orders[order_id]

    def _put_customer(self, customer_id: int, data: dict) -> dict:
        customer = self.customers[customer_id]
        if "username" in data and data["username"] != customer["username"]:
            raise _ApiError(400, "woocommerce_rest_customer_invalid_argument", "Username isn't editable.")
        fields: dict[str, Any] = {}
        if "email" in data:
            email = str(data["email"])
            if email and "@" not in email:
                raise _invalid_param("email", "Invalid email address.")
            taken = any(c["email"].lower() == email.lower() and cid != customer_id
                        for cid, c in self.customers.items()) if email else False
            if taken:
                raise _ApiError(400, "registration-error-email-exists",
                                "An account is already registered with your email address.")
            fields["email"] = email
        for key in ("first_name", "last_name"):
            if key in data:
                fields[key] = str(data[key])
        for key in ("billing", "shipping"):
            if isinstance(data.get(key), dict):
                fields[key] = {k: str(v) for k, v in data[key].items() if k in customer[key]}
        if isinstance(data.get("meta_data"), list):
            fields["meta_data"] = _merge_meta(customer["meta_data"], data["meta_data"], self._meta_id)
        return self.update_customer(customer_id, **fields)

    def _put_order(self, order_id: int, data: dict) -> dict:
        order = self.orders[order_id]
        fields: dict[str, Any] = {}
        if "status" in data:
            if data["status"] not in ORDER_STATUSES:
                raise _invalid_param("status", f"status is not one of {', '.join(ORDER_STATUSES)}.")
            fields["status"] = data["status"]
        for key in ("billing", "shipping"):
            if isinstance(data.get(key), dict):
                fields[key] = {k: str(v) for k, v in data[key].items() if k in order[key]}
        if "customer_note" in data:
            fields["customer_note"] = str(data["customer_note"])
        if isinstance(data.get("meta_data"), list):
            fields["meta_data"] = _merge_meta(order["meta_data"], data["meta_data"], self._meta_id)
        return self.update_order(order_id, **fields)

    def _create_webhook(self, data: dict) -> dict:
        missing = [k for k in ("topic", "delivery_url") if not data.get(k)]
        if missing:
            raise _ApiError(400, "rest_missing_callback_param",
                            f"Missing parameter(s): {', '.join(missing)}", {"params": missing})
        topic = str(data["topic"])
        resource, _, event = topic.partition(".")
        if resource not in WEBHOOK_RESOURCES or event not in WEBHOOK_EVENTS:
            raise _ApiError(400, "woocommerce_rest_webhook_invalid_topic",
                            "Webhook topic is required and must be valid.")
        status = str(data.get("status") or "active")
        if status not in ("active", "paused", "disabled"):
            raise _invalid_param("status", "status is not one of active, paused, disabled.")
        secret = str(data.get("secret") or "".join(
            self._live_rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*()", k=50)))
        if self.ping_webhooks and status == "active":
            self._ping(str(data["delivery_url"]), self._next_webhook_id)
        return self.add_webhook(topic, str(data["delivery_url"]), secret, data.get("name"), status)

    def _put_webhook(self, webhook_id: int, data: dict) -> dict:
        webhook = self.webhooks[webhook_id]
        for key in ("name", "delivery_url", "secret"):
            if key in data:
                webhook[key] = str(data[key])
        if "status" in data:
            if data["status"] == "active" and webhook["status"] != "active" and self.ping_webhooks:
                self._ping(webhook["delivery_url"], webhook_id)
            return self.set_webhook_status(webhook_id, str(data["status"]))
        self._bump_modified(webhook)
        return self._public_webhook(webhook)

    def _ping(self, url: str, webhook_id: int) -> None:
        """WooCommerce's ping: unsigned form body; only an exact 200 lets the save succeed."""
        try:
            status = requests.post(url, data=ping_body(webhook_id), timeout=10, allow_redirects=False,
                                   headers={"User-Agent": _USER_AGENT}).status_code
        except requests.RequestException as exc:
            self.pings.append({"webhook_id": webhook_id, "url": url, "status": None})
            raise _ApiError(400, "woocommerce_rest_webhook_ping_failed",  # fake's own code
                            f"Error: Delivery URL cannot be reached: {type(exc).__name__}") from None
        self.pings.append({"webhook_id": webhook_id, "url": url, "status": status})
        if status != 200:
            raise _ApiError(400, "woocommerce_rest_webhook_ping_failed",
                            f"Error: Delivery URL returned response code: {status}")

    # ---------------------------------------------------------------- lists

    def _list(self, resource: str, query: dict[str, str], multi: dict[str, list[str]]
              ) -> tuple[int, dict[str, str], list]:
        page = _int_param(query, "page", 1, minimum=1)
        per_page = _int_param(query, "per_page", 10, minimum=1, maximum=100)
        offset = _int_param(query, "offset", None, minimum=0)
        order = query.get("order", "asc" if resource == "customers" else "desc")
        if order not in ("asc", "desc"):
            raise _invalid_param("order", "order is not one of asc and desc.")
        include = _ids_param(multi, "include")
        exclude = _ids_param(multi, "exclude")

        if resource == "customers":
            items = self._filter_customers(query)
            orderings: dict[str, Callable[[dict], Any]] = {
                "id": lambda c: c["id"],
                "name": lambda c: (c["username"].lower(), c["id"]),
                "registered_date": lambda c: (c["date_created_gmt"], c["id"]),
                "include": lambda c: include.index(c["id"]) if include and c["id"] in include else 0,
            }
            default_orderby = "name"
        elif resource == "orders":
            items = self._filter_orders(query, multi)
            by_id = lambda o: o["id"]  # noqa: E731
            orderings = {
                "id": by_id, "title": by_id, "slug": by_id,
                "date": lambda o: (o["date_created_gmt"], o["id"]),
                "modified": lambda o: (o["date_modified_gmt"], o["id"]),
                "include": lambda o: include.index(o["id"]) if include and o["id"] in include else 0,
            }
            default_orderby = "date"
        elif resource == "coupons":
            items = self._filter_coupons(query)
            orderings = {"id": lambda c: c["id"], "include": lambda c: include.index(c["id"]) if include and c["id"] in include else 0,
                         "date": lambda c: (c["date_created_gmt"], c["id"]),
                         "modified": lambda c: (c["date_modified_gmt"], c["id"]),
                         "title": lambda c: (c["code"], c["id"]), "slug": lambda c: (c["code"], c["id"])}
            default_orderby = "date"
        else:
            items = [self._public_webhook(w) for w in self.webhooks.values()
                     if query.get("status", "all") in ("all", w["status"])]
            orderings = {"id": lambda w: w["id"], "date": lambda w: (w["date_created_gmt"], w["id"]),
                         "title": lambda w: (w["name"], w["id"])}
            default_orderby = "date"
        if include:
            items = [i for i in items if i["id"] in include]
        if exclude:
            items = [i for i in items if i["id"] not in exclude]
        orderby = query.get("orderby", default_orderby)
        if orderby not in orderings:
            raise _invalid_param("orderby", f"orderby is not one of {', '.join(orderings)}.")
        items.sort(key=orderings[orderby], reverse=(order == "desc"))

        total = len(items)
        total_pages = -(-total // per_page)
        begin = offset if offset is not None else (page - 1) * per_page
        page_items = items[begin:begin + per_page]
        headers: dict[str, str] = {}
        if self.paging_headers:
            headers["X-WP-Total"] = str(total)
            headers["X-WP-TotalPages"] = str(total_pages)
            links = []
            link_query = {k: v for k, v in query.items()}
            base = self.api_url + resource if self._server is not None else API_PREFIX + resource
            if page > 1:
                link_query["page"] = str(min(page - 1, total_pages) or 1)
                links.append(f'<{base}?{urlencode(link_query)}>; rel="prev"')
            if total_pages > page:
                link_query["page"] = str(page + 1)
                links.append(f'<{base}?{urlencode(link_query)}>; rel="next"')
            if links:
                headers["Link"] = ", ".join(links)
        return 200, headers, page_items

    def _filter_customers(self, query: dict[str, str]) -> list[dict]:
        items = list(self.customers.values())
        role = query.get("role", "customer")
        if role != "all":
            items = [c for c in items if c["role"] == role]
        if query.get("email"):
            email = query["email"].lower()
            items = [c for c in items if c["email"].lower() == email]
        if query.get("search"):
            needle = query["search"].strip("*").lower()
            items = [c for c in items if needle in c["email"].lower() or needle in c["username"].lower()]
        return items

    def _filter_coupons(self, query: dict[str, str]) -> list[dict]:
        """`code` finds the one published coupon wc_get_coupon_id_by_code finds (any case);
        `search` matches within codes; trashed coupons are left out unless `status=trash`."""
        if query.get("code"):
            found = self._published_coupon(query["code"])
            return [found] if found is not None else []
        status = query.get("status") or "any"
        items = [c for c in self.coupons.values()
                 if (c["status"] != "trash" if status in ("any", "all") else c["status"] == status)]
        if query.get("search"):
            needle = query["search"].strip().lower()
            items = [c for c in items if needle in c["code"]]
        return items

    def _filter_orders(self, query: dict[str, str], multi: dict[str, list[str]]) -> list[dict]:
        gmt = _bool_param(query, "dates_are_gmt")
        suffix = "_gmt" if gmt else ""
        items = list(self.orders.values())
        statuses = [s for v in multi.get("status", multi.get("status[]", [])) for s in v.split(",") if s]
        for s in statuses:
            if s not in ORDER_STATUSES + ("any",):
                raise _invalid_param("status", f"status[0] is not one of any, {', '.join(ORDER_STATUSES)}.")
        if not statuses or "any" in statuses:
            items = [o for o in items if o["status"] not in ("trash", "checkout-draft")]
        else:
            wanted = set(statuses)
            items = [o for o in items if o["status"] in wanted]
        for name, field, op in (("after", "date_created", ">"), ("before", "date_created", "<"),
                                ("modified_after", "date_modified", ">"),
                                ("modified_before", "date_modified", "<")):
            if name in query:
                bound = self._date_param(query, name, gmt)
                key = field + suffix
                if op == ">":
                    items = [o for o in items if o[key] > bound]
                else:
                    items = [o for o in items if o[key] < bound]
        if "customer" in query:
            customer = _int_param(query, "customer", 0, minimum=0)
            items = [o for o in items if o["customer_id"] == customer]
        if "product" in query:
            product = _int_param(query, "product", 0, minimum=0)
            items = [o for o in items if any(li["product_id"] == product for li in o["line_items"])]
        if "parent" in query or "parent[]" in multi:
            parents = set(_ids_param(multi, "parent") or [])
            items = [o for o in items if o["parent_id"] in parents]
        if query.get("search"):
            needle = query["search"].lower()
            items = [o for o in items if needle in str(o["id"]) or needle in o["billing"]["email"].lower()
                     or needle in f"{o['billing']['first_name']} {o['billing']['last_name']}".lower()]
        return items

    def _date_param(self, query: dict[str, str], name: str, gmt: bool) -> str:
        raw = query[name].strip()
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _invalid_param(name, "Invalid date.") from None
        if value.tzinfo is not None:
            utc = value.astimezone(timezone.utc).replace(tzinfo=None)
            value = utc if gmt else self._local(utc)
        return _iso(value)


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------

def _no_route() -> _ApiError:
    return _ApiError(404, "rest_no_route", "No route was found matching the URL and request method.")


def _fault_error(fault: _Fault) -> _ApiError:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    if fault.code is not None:
        return _ApiError(fault.status, fault.code, fault.message or "", headers=headers)
    if fault.status == 429:
        return _ApiError(429, "rest_too_many_requests", "Too many requests. Please slow down.",
                         headers=headers)
    if fault.status == 500:
        return _ApiError(500, "internal_server_error",
                         "<p>There has been a critical error on this website.</p>",
                         headers=headers)
    return _ApiError(fault.status, f"http_{fault.status}", f"Injected HTTP {fault.status}.",
                     headers=headers)


def _int_param(query: dict[str, str], name: str, default: int | None, *, minimum: int | None = None,
               maximum: int | None = None) -> int | None:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        raise _invalid_param(name, f"{name} is not of type integer.") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is not None:
            reason = f"{name} must be between {minimum} (inclusive) and {maximum} (inclusive)"
        else:
            reason = f"{name} must be greater than or equal to {minimum}"
        raise _invalid_param(name, reason)
    return value


def _bool_param(query: dict[str, str], name: str) -> bool:
    raw = query.get(name, "false").lower()
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0", ""):
        return False
    raise _invalid_param(name, f"{name} is not of type boolean.")


def _ids_param(multi: dict[str, list[str]], name: str) -> list[int]:
    values = multi.get(name, []) + multi.get(name + "[]", [])
    try:
        return [int(p) for v in values for p in v.split(",") if p.strip()]
    except ValueError:
        raise _invalid_param(name, f"{name}[0] is not of type integer.") from None


def _request_data(headers: dict[str, str], body: bytes) -> dict:
    if not body:
        return {}
    content_type = headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in content_type:
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8")).items()}
    try:
        data = json.loads(body)
    except ValueError:
        raise _ApiError(400, "rest_invalid_json", "Invalid JSON body passed.") from None
    if not isinstance(data, dict):
        raise _ApiError(400, "rest_invalid_json", "Invalid JSON body passed.")
    return data


def _merge_meta(current: list[dict], updates: list, new_id: Callable[[], int]) -> list[dict]:
    merged = [dict(m) for m in current]
    for item in updates:
        if not isinstance(item, dict) or "key" not in item:
            continue
        for existing in merged:
            if existing["key"] == item["key"]:
                existing["value"] = item.get("value")
                break
        else:
            merged.append({"id": new_id(), "key": item["key"], "value": item.get("value")})
    return merged
