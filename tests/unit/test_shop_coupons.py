"""customer_sync writes coupons for other services: against the shop stand-in over real HTTP,
with its refusals and outages mapped to what a caller's retried step needs to know."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from devdoubles import mongomock_adapter
from services.customer_sync.repository import CustomerSyncStorage, Store
from services.customer_sync.shop.shop_coupons import ShopCoupons
from services.customer_sync.core.sync import CustomerSync
from services.customer_sync.shop.woo_client import WooClient
from shared.coupons import CouponSpec
from shared.errors import NotFound, Refused, Unavailable, ValidationError
from tests import payloads
from demo.shop import FakeWooShop

STORE = "s1"
SECRET = "cs_coupon_writer_secret_1"
META = {"companion_reward": "rw-1", "companion_customer": "42"}


@pytest.fixture()
def shop():
    with FakeWooShop(customers=0, orders=0, seed=3, consumer_secret=SECRET) as running:
        yield running


@pytest.fixture()
def storage(shop):
    storage = CustomerSyncStorage(mongomock_adapter.client()["customer_sync"])
    storage.ensure_indexes()
    storage.stores.save(Store(STORE, shop.base_url, "whsec-12345678", shop.consumer_key, SECRET))
    return storage


@pytest.fixture()
def customer(storage) -> str:
    """A registered customer held here; answers their id here (not the shop's)."""
    made = CustomerSync(storage).apply(STORE, "customer", "created",
                                       payloads.customer(42, email="Ada@Example.com"),
                                       correlation_id="c")
    return made.touched[0][1]


@pytest.fixture()
def coupons(storage):
    return ShopCoupons(storage, lambda store: WooClient(
        store.shop_url, store.consumer_key, store.consumer_secret, max_retries=0,
        sleep=lambda _: None))


def wire(**changes) -> dict:
    values = dict(code="reward-7kq2m9xwpa", discount_type="fixed_cart", amount=550,
                  currency="EUR", expires_at=datetime(2027, 3, 6, 12, tzinfo=timezone.utc),
                  description="550 points", meta=META)
    values.update(changes)
    return CouponSpec(**values).to_wire()


def posts(shop) -> int:
    return sum(1 for r in shop.requests_log if r.method == "POST" and r.path.endswith("/coupons"))


def test_a_coupon_is_made_once_restricted_to_the_customers_email(shop, coupons, customer):
    first = coupons.ensure(STORE, wire(), customer_id=customer)
    again = coupons.ensure(STORE, wire(), customer_id=customer)
    assert first == again and posts(shop) == 1
    made = shop.coupons[first["coupon_id"]]
    assert made["code"] == "reward-7kq2m9xwpa" and made["amount"] == "5.50"
    assert made["email_restrictions"] == ["ada@example.com"]
    assert made["usage_limit"] == 1 and made["usage_limit_per_user"] == 1
    assert made["date_expires_gmt"] == "2027-03-06T12:00:00"
    assert {m["key"]: m["value"] for m in made["meta_data"]} == META


def test_percent_and_minimum_spend_reach_the_shop_as_its_strings(shop, coupons):
    made = coupons.ensure(STORE, wire(discount_type="percent", amount=10, minimum_spend=2000,
                                      individual_use=True, email="bo@example.com"))
    stored = shop.coupons[made["coupon_id"]]
    assert (stored["discount_type"], stored["amount"], stored["minimum_amount"]) == (
        "percent", "10.00", "20.00")
    assert stored["individual_use"] is True and stored["email_restrictions"] == ["bo@example.com"]


def test_a_code_held_by_another_coupon_is_a_refusal_and_nothing_is_made(shop, coupons, customer):
    coupons.ensure(STORE, wire(meta={"companion_send": "s-1"}))
    with pytest.raises(Refused, match="another coupon"):
        coupons.ensure(STORE, wire(), customer_id=customer)
    assert len(shop.coupons) == 1


def test_an_outage_is_unavailable_and_a_lasting_refusal_is_refused(shop, coupons):
    shop.coupons_down(503)
    with pytest.raises(Unavailable) as down:
        coupons.ensure(STORE, wire())
    assert down.value.details["shop_status"] == 503
    shop.reset_faults()
    shop.coupons_unreachable()
    with pytest.raises(Unavailable):
        coupons.ensure(STORE, wire())
    shop.reset_faults()
    shop.refuse_coupon_writes()
    with pytest.raises(Refused) as refused:
        coupons.ensure(STORE, wire())
    assert refused.value.details["shop_code"] == "woocommerce_rest_shop_coupon_not_created"
    assert shop.coupons == {}


def test_throttling_and_rejected_keys_are_worth_another_try_later(shop, coupons):
    for status in (429, 401):
        shop.coupons_down(status)
        with pytest.raises(Unavailable):
            coupons.ensure(STORE, wire())
        shop.reset_faults()


@pytest.mark.parametrize("change, field", [
    ({"amount": 0}, "coupon.amount"), ({"code": "Bad Code"}, "coupon.code"),
    ({"meta": {}}, "coupon.meta"), ({"colour": "red"}, "coupon.colour"),
])
def test_a_bad_coupon_names_its_field_and_never_reaches_the_shop(shop, coupons, change, field):
    body = {**wire(), **change}
    with pytest.raises(ValidationError) as caught:
        coupons.ensure(STORE, body)
    assert field in caught.value.details["fields"]
    assert posts(shop) == 0


def test_an_unknown_store_or_customer_is_not_found(shop, coupons, customer):
    with pytest.raises(NotFound):
        coupons.ensure("nope", wire())
    with pytest.raises(NotFound):
        coupons.ensure(STORE, wire(), customer_id="999")
    with pytest.raises(ValidationError, match="not both"):
        coupons.ensure(STORE, wire(email="x@example.com"), customer_id=customer)
    assert posts(shop) == 0


def test_delete_removes_only_our_unused_coupon(shop, coupons, customer):
    made = coupons.ensure(STORE, wire(), customer_id=customer)
    assert coupons.delete(STORE, "reward-7kq2m9xwpa", {"companion_reward": "rw-2"}) == {
        "deleted": False, "usage_count": 0, "found": True}
    assert coupons.delete(STORE, "REWARD-7kq2m9xwpa", META) == {
        "deleted": True, "usage_count": 0, "found": True}
    assert made["coupon_id"] not in shop.coupons
    assert coupons.delete(STORE, "reward-7kq2m9xwpa", META) == {
        "deleted": False, "usage_count": 0, "found": False}


def test_a_used_coupon_is_not_deleted_and_its_use_is_told(shop, coupons, customer):
    made = coupons.ensure(STORE, wire(), customer_id=customer)
    buyer = shop.add_customer(email="ada@example.com")
    shop.add_order(customer_id=buyer["id"], coupon_code="reward-7kq2m9xwpa")
    assert coupons.delete(STORE, "reward-7kq2m9xwpa", META) == {
        "deleted": False, "usage_count": 1, "found": True}
    assert made["coupon_id"] in shop.coupons


def test_delete_checks_what_it_is_given(shop, coupons):
    with pytest.raises(ValidationError):
        coupons.delete(STORE, "", META)
    with pytest.raises(ValidationError):
        coupons.delete(STORE, "reward-1", {"k": 1})
    shop.coupons_down(502)
    with pytest.raises(Unavailable):
        coupons.delete(STORE, "reward-7kq2m9xwpa", META)
