"""WooClient's coupon helpers against the fake shop over real HTTP: look-up, create, ensure,
delete, the shop's refusals and outages, and requests or answers that must not be trusted."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.customer_sync.shop.woo_client import (
    CouponCodeTaken,
    CouponRequest,
    WooApiError,
    WooClient,
    WooUnavailable,
)
from demo.shop import FakeWooShop

SECRET = "cs_coupon_secret_value_987"
LEDGER = {"_companion_customer": "c-42", "_companion_ledger_entry": "redeem:req-1"}


class RecordingSleep:
    """Stands in for time.sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture()
def shop():
    with FakeWooShop(customers=5, orders=5, seed=5, consumer_secret=SECRET) as running:
        yield running


@pytest.fixture()
def sleep():
    return RecordingSleep()


@pytest.fixture()
def client(shop, sleep):
    with WooClient(shop.base_url, shop.consumer_key, SECRET, sleep=sleep, max_retries=3) as c:
        yield c


def reward(**changes) -> CouponRequest:
    fields = dict(code="wc-7k3m9q2xpl", amount=Decimal("5.00"), currency="EUR",
                  email_restrictions=("anna@example.com",),
                  expires_at=datetime(2026, 4, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),
                  meta=LEDGER)
    fields.update(changes)
    return CouponRequest(**fields)


def coupon_posts(shop: FakeWooShop) -> int:
    return sum(1 for r in shop.requests_log if r.method == "POST" and r.path.endswith("/coupons"))


def test_create_then_find_in_any_case(shop, client):
    created = client.create_coupon(reward())
    stored = shop.coupons[created.id]
    assert (stored["code"], stored["amount"], stored["discount_type"]) == ("wc-7k3m9q2xpl", "5.00", "fixed_cart")
    assert (stored["usage_limit"], stored["usage_limit_per_user"]) == (1, 1)
    assert stored["email_restrictions"] == ["anna@example.com"]
    assert stored["date_expires_gmt"] == "2026-04-01T00:00:00"  # sent as UTC
    assert created.expires_at == datetime(2026, 4, 1, tzinfo=timezone.utc)
    assert created.amount == Decimal("5.00") and created.usage_count == 0 and created.carries(LEDGER)
    assert client.find_coupon("WC-7K3M9Q2XPL") == created
    assert client.find_coupon("wc-0000000000") is None


def test_percent_and_minimum_spend_are_sent_as_woocommerce_strings(shop, client):
    request = reward(code="welcome-ab12cd34ef", discount_type="percent", amount=Decimal("12.5"),
                     minimum_spend=Decimal("30"), usage_limit=None, individual_use=True)
    assert request.payload()["amount"] == "12.50" and request.payload()["minimum_amount"] == "30.00"
    created = client.create_coupon(request)
    stored = shop.coupons[created.id]
    assert (stored["amount"], stored["minimum_amount"], stored["usage_limit"], stored["individual_use"]) == \
        ("12.50", "30.00", None, True)


def test_an_existing_code_raises_coupon_code_taken(shop, client):
    shop.add_coupon("WC-7K3M9Q2XPL")
    with pytest.raises(CouponCodeTaken) as taken:
        client.create_coupon(reward())
    assert isinstance(taken.value, WooApiError) and taken.value.status == 400
    assert len(shop.coupons) == 1


def test_ensure_coupon_makes_one_coupon_however_often_it_runs(shop, client):
    first = client.ensure_coupon(reward())
    again = client.ensure_coupon(reward())
    assert again.id == first.id and len(shop.coupons) == 1 and coupon_posts(shop) == 1


def test_ensure_coupon_finds_the_coupon_of_a_post_whose_answer_was_lost(shop, client):
    lost = shop.add_coupon("wc-7k3m9q2xpl", amount="5.00",
                           meta_data=[{"key": k, "value": v} for k, v in LEDGER.items()])
    assert client.ensure_coupon(reward()).id == lost["id"]
    assert coupon_posts(shop) == 0


def test_ensure_coupon_refuses_a_code_that_belongs_to_another_coupon(shop, client):
    shop.add_coupon("wc-7k3m9q2xpl", amount="50.00",
                    meta_data=[{"key": "_companion_ledger_entry", "value": "redeem:someone-else"}])
    with pytest.raises(CouponCodeTaken):
        client.ensure_coupon(reward())
    assert coupon_posts(shop) == 0 and len(shop.coupons) == 1
    with pytest.raises(ValueError):
        client.ensure_coupon(reward(meta={}))  # nothing to recognise its own coupon by


def test_ensure_coupon_takes_the_coupon_another_worker_made_between_look_up_and_post(shop, client, monkeypatch):
    real_find = client.find_coupon
    calls = []

    def find_then_race(code):
        found = real_find(code)
        if not calls:  # the other worker's POST lands right after our first look-up
            shop.add_coupon(code, amount="5.00", meta_data=[{"key": k, "value": v} for k, v in LEDGER.items()])
        calls.append(code)
        return found

    monkeypatch.setattr(client, "find_coupon", find_then_race)
    made = client.ensure_coupon(reward())
    assert len(calls) == 2 and len(shop.coupons) == 1 and made.id == min(shop.coupons)


def test_a_post_is_retried_while_the_shop_cannot_have_acted(shop, client, sleep):
    shop.fail_next(2, 503, retry_after="1")
    created = client.create_coupon(reward())
    assert sleep.waits == [1.0, 1.0] and list(shop.coupons) == [created.id]


def test_a_post_with_an_unknown_outcome_is_not_retried_and_ensure_recovers(shop, client, sleep):
    shop.fail_next(1, 500)
    with pytest.raises(WooUnavailable):
        client.create_coupon(reward())
    assert sleep.waits == [] and coupon_posts(shop) == 1
    assert client.ensure_coupon(reward()).code == "wc-7k3m9q2xpl" and len(shop.coupons) == 1


def test_a_coupon_outage_raises_woo_unavailable_after_the_retries(shop, client, sleep):
    shop.coupons_down(503)
    with pytest.raises(WooUnavailable) as down:
        client.find_coupon("wc-7k3m9q2xpl")
    assert down.value.status == 503 and len(sleep.waits) == 3
    shop.coupons_unreachable()
    with pytest.raises(WooUnavailable) as unreachable:
        client.ensure_coupon(reward())
    assert unreachable.value.code == "connection_error" and shop.coupons == {}
    assert SECRET not in str(unreachable.value)
    shop.reset_faults()
    assert client.ensure_coupon(reward()).id in shop.coupons


def test_a_permanent_refusal_is_not_retried(shop, client, sleep):
    shop.refuse_coupon_writes()
    with pytest.raises(WooApiError) as refused:
        client.create_coupon(reward())
    assert not isinstance(refused.value, (WooUnavailable, CouponCodeTaken))
    assert (refused.value.status, refused.value.code) == (400, "woocommerce_rest_shop_coupon_not_created")
    assert sleep.waits == [] and shop.coupons == {}


def test_delete_coupon_deletes_for_good_and_a_second_delete_is_no_error(shop, client):
    created = client.create_coupon(reward())
    assert client.delete_coupon(created.id) is True
    assert created.id not in shop.coupons  # not in the trash, where the code would linger
    assert client.delete_coupon(created.id) is False
    assert client.find_coupon(created.code) is None
    with pytest.raises(ValueError):
        client.delete_coupon(0)


def test_a_shop_that_ignores_the_code_filter_is_not_believed(shop, client, monkeypatch):
    shop.add_coupon("someone-elses", amount="1")
    monkeypatch.setattr(shop, "_filter_coupons", lambda query: list(shop.coupons.values()))
    with pytest.raises(WooApiError) as wrong:
        client.find_coupon("wc-7k3m9q2xpl")
    assert wrong.value.code == "unexpected_response"


@pytest.mark.parametrize("field, value", [
    ("amount", "plenty"),
    ("usage_count", -1),
    ("email_restrictions", "anna@example.com"),
    ("meta_data", {"key": "x"}),
    ("date_expires_gmt", "soon"),
    ("id", "7"),
])
def test_a_malformed_coupon_from_the_shop_raises_naming_the_field(shop, client, field, value):
    created = client.create_coupon(reward())
    shop.coupons[created.id][field] = value
    with pytest.raises(WooApiError) as wrong:
        client.find_coupon(created.code)
    assert wrong.value.code == "unexpected_response" and field in wrong.value.message


@pytest.mark.parametrize("changes", [
    {"code": "WC-UPPER"}, {"code": "has space"}, {"code": "<b>x</b>"}, {"code": ""}, {"code": "x" * 65},
    {"code": "-leading"}, {"amount": Decimal("-1")}, {"amount": Decimal("0")}, {"amount": Decimal("1.001")},
    {"amount": Decimal("NaN")}, {"amount": 5}, {"amount": Decimal("5.5"), "currency": "JPY"},
    {"amount": Decimal("100.5"), "discount_type": "percent"}, {"amount": Decimal("2000000")},
    {"currency": "eur"}, {"discount_type": "free"}, {"usage_limit": 0}, {"usage_limit": True},
    {"usage_limit_per_user": "1"}, {"email_restrictions": ("Anna@Example.com",)},
    {"email_restrictions": ("*@example.com",)}, {"email_restrictions": ("not-an-email",)},
    {"email_restrictions": ["anna@example.com"]}, {"expires_at": datetime(2026, 4, 1)},
    {"minimum_spend": Decimal("-5")}, {"description": "x" * 501},
    {"meta": {"k": 1}}, {"meta": {"": "v"}}, {"meta": {f"k{i}": "v" for i in range(21)}},
])
def test_a_bad_coupon_request_is_refused_before_anything_is_sent(changes):
    with pytest.raises(ValueError):
        reward(**changes)
