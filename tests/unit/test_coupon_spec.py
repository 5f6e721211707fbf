"""The coupon form loyalty and notifications hand to customer_sync: codes and checked fields."""
import random
from datetime import datetime, timezone

import pytest

from shared.coupons import CODE_ALPHABET, CouponSpec, check_prefix, new_coupon_code

EXPIRES = datetime(2027, 3, 6, 12, tzinfo=timezone.utc)


def spec(**changes):
    values = dict(code="shop-7kq2m9xwpa", discount_type="fixed_cart", amount=500, currency="EUR",
                  expires_at=EXPIRES, email="ann@example.com", meta={"companion_reward": "rw-1"})
    values.update(changes)
    return CouponSpec(**values)


def test_codes_carry_the_prefix_and_ten_characters_nobody_misreads():
    rng = random.Random(7)
    codes = {new_coupon_code("shop", rng.choice) for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        prefix, body = code.split("-")
        assert prefix == "shop" and len(body) == 10
        assert set(body) <= set(CODE_ALPHABET)
        assert not set(body) & set("01ilo")


@pytest.mark.parametrize("prefix", ["", "Shop", "sh-op", "x" * 13, "l00p", None])
def test_a_prefix_that_is_not_plain_is_refused(prefix):
    with pytest.raises(ValueError, match="prefix"):
        check_prefix(prefix)


def test_the_wire_form_round_trips():
    original = spec(minimum_spend=2000, individual_use=True, description="500 points")
    wire = original.to_wire()
    assert wire["expires_at"] == "2027-03-06T12:00:00+00:00"
    assert CouponSpec.from_wire(wire) == original


@pytest.mark.parametrize("field, value", [
    ("code", "Shop-ABC"), ("code", "a b"), ("discount_type", "fixed_product"), ("amount", 0),
    ("amount", 1.5), ("amount", True), ("currency", "eur"), ("minimum_spend", -1),
    ("usage_limit", 0), ("email", "Ann@Example.com"), ("email", "*@example.com"),
    ("individual_use", "yes"), ("meta", {}), ("expires_at", datetime(2027, 1, 1)),
])
def test_each_bad_field_is_named(field, value):
    with pytest.raises(ValueError) as caught:
        spec(**{field: value})
    assert str(caught.value).startswith(field)


def test_a_percentage_stops_at_100():
    assert spec(discount_type="percent", amount=100).amount == 100
    with pytest.raises(ValueError, match="^amount"):
        spec(discount_type="percent", amount=101)


@pytest.mark.parametrize("wire, field", [
    ("not a dict", "coupon"), ({"code": "x"}, "discount_type"),
    ({**spec().to_wire(), "expires_at": "soon"}, "expires_at"),
    ({**spec().to_wire(), "colour": "red"}, "colour"),
])
def test_a_bad_wire_form_names_its_field(wire, field):
    with pytest.raises(ValueError) as caught:
        CouponSpec.from_wire(wire)
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize("expires_at, message", [
    ("2027-01-01T00:00:00", "expires_at must include its UTC offset"),
    ("soon", "expires_at must be an ISO-8601 time"),
    # Refused when it arrives, not when the spec is next written out (to_wire moves it to UTC).
    ("0001-01-01T00:00:00+14:00", "expires_at is out of range in UTC"),
])
def test_a_wire_expiry_must_be_a_time_that_says_its_offset(expires_at, message):
    with pytest.raises(ValueError) as caught:
        CouponSpec.from_wire({**spec().to_wire(), "expires_at": expires_at})
    assert str(caught.value) == message


def test_a_naive_expiry_is_refused_when_the_spec_is_made():
    with pytest.raises(ValueError, match="^expires_at must include its UTC offset$"):
        spec(expires_at=datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="^expires_at must be a time with its UTC offset$"):
        spec(expires_at="2027-01-01T00:00:00+00:00")  # text belongs on the wire, not here


def test_a_wire_expiry_keeps_its_offset_until_written_out_in_utc():
    wire = {**spec().to_wire(), "expires_at": "2027-03-06T14:00:00+02:00"}
    assert CouponSpec.from_wire(wire).to_wire()["expires_at"] == "2027-03-06T12:00:00+00:00"
