"""Rewards for people: the API's reward routes, and the console's coupons on the loyalty card,
the two-step redemption (quote, then confirm), store credit and cancelling a coupon, driven
through the gateway's real pipeline with the stand-in services of test_console."""
from __future__ import annotations

import json
import re

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.test import Client
from werkzeug.wrappers import Request

from services.gateway import openapi
from services.gateway.console import forms, present
from services.gateway.routes import build_routes
from tests.unit.test_console import EVIL, Loyalty, World


@pytest.fixture
def world(monkeypatch) -> World:
    monkeypatch.setattr(Loyalty, "shop_answers", True)
    monkeypatch.setattr(Loyalty, "rewards", list(Loyalty.rewards))
    world = World()
    world.login("wcc_write")
    return world


def api(world: World) -> Client:
    return Client(lambda environ, start: world.gateway.handle(Request(environ), world.backends)(
        environ, start))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def flashes(world: World) -> str:
    html = world.client.get("/console/customers/c1").get_data(as_text=True)
    return " ".join(re.findall(r'<p class="flash flash-\w+">(.*?)</p>', html, re.S))


# -- the API --------------------------------------------------------------------------------
def test_the_api_lists_quotes_and_cancels_rewards_as_the_loyalty_service_answers(world):
    client = api(world)
    listed = client.get("/api/v1/customers/c1/loyalty/rewards", headers=bearer("wcc_read"))
    assert listed.status_code == 200
    assert [r["reward_id"] for r in listed.get_json()["items"]] == ["r-pending", "r-credit",
                                                                    "r-used"]
    quote = client.get("/api/v1/customers/c1/loyalty/redemption-quote?points=100",
                       headers=bearer("wcc_read")).get_json()
    assert quote["amount"] == {"amount": 100, "currency": "EUR"} and quote["allowed"] is True
    assert world.called("quote_redemption")[-1][2] == ("shop", "c1", 100)
    cancelled = client.post("/api/v1/customers/c1/loyalty/rewards/r-pending/cancel",
                            headers=bearer("wcc_write"))
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "returned"
    assert world.called("cancel_reward")[-1][2] == ("shop", "c1", "r-pending", "api-key:write")
    conflict = client.post("/api/v1/customers/c1/loyalty/rewards/r-used/cancel",
                           headers=bearer("wcc_write"))
    assert conflict.status_code == 409 and "cannot be cancelled" in conflict.get_json()["detail"]


@pytest.mark.parametrize("query, message", [
    ("", "is required"), ("?points=", "must not be empty"), ("?points=0", "must be from 1"),
    ("?points=ten", "whole number"), ("?points=" + "9" * 5000, "whole number"),
    ("?points=1000000001", "must be from 1"),
])
def test_a_quote_needs_a_sane_number_of_points_and_asks_no_service_otherwise(world, query,
                                                                              message):
    answer = api(world).get("/api/v1/customers/c1/loyalty/redemption-quote" + query,
                            headers=bearer("wcc_read"))
    assert answer.status_code == 400, answer.get_data(as_text=True)
    problem = answer.get_json()
    assert message in problem["errors"]["points"][0] and "points" in problem["detail"]
    assert world.called("quote_redemption") == []


def test_a_read_key_may_not_cancel_and_spending_credit_is_no_route_any_more(world):
    client = api(world)
    refused = client.post("/api/v1/customers/c1/loyalty/rewards/r-pending/cancel",
                          headers=bearer("wcc_read"))
    assert refused.status_code == 403 and world.called("cancel_reward") == []
    gone = client.post("/api/v1/customers/c1/loyalty/credit/use", headers=bearer("wcc_write"),
                       json={"amount": 100})
    assert gone.status_code == 404


def test_credit_reasons_are_the_loyalty_services_two_and_the_answers_carry_the_reward(world):
    client = api(world)
    refused = client.post("/api/v1/customers/c1/loyalty/credit", headers=bearer("wcc_write"),
                          json={"amount": 500, "reason": "bribe"})
    assert refused.status_code == 400 and "reason" in refused.get_json()["errors"]
    assert world.called("issue_credit") == []
    issued = client.post("/api/v1/customers/c1/loyalty/credit", headers=bearer("wcc_write"),
                         json={"amount": 500, "reason": "refund_alternative", "note": "late"})
    assert issued.get_json()["reward"]["code"] == "reward-7kq2newcod"
    document = openapi.document(build_routes())
    card = "/api/v1/customers/{customer_id}/loyalty"
    answer = document["paths"][card + "/redeem"]["post"]["responses"]["200"]
    assert "reward" in answer["content"]["application/json"]["schema"]["required"]
    [points] = document["paths"][card + "/redemption-quote"]["get"]["parameters"][1:]
    assert points["name"] == "points" and points["required"] is True
    assert card + "/credit/use" not in document["paths"]


# -- the loyalty card -----------------------------------------------------------------------
def test_the_card_lists_coupons_with_their_state_and_cancels_only_unused_ones(world):
    html = world.client.get("/console/customers/c1").get_data(as_text=True)
    rows = dict(re.findall(r'<tr id="reward-([\w-]+)">(.*?)</tr>', html, re.S))
    assert list(rows) == ["r-pending", "r-credit", "r-used"]
    pending = rows["r-pending"]
    assert "reward-7kq2mnp4xz" in pending and "5.00 EUR" in pending
    assert "waiting for the shop" in pending and "3 attempts" in pending
    assert "shop answered 503 &lt;script&gt;" in pending and "2026-06-01" in pending
    assert "credit-&lt;script&gt;alert(1)&lt;/script&gt;" in rows["r-credit"]  # code and note
    assert "12.50 EUR" in rows["r-credit"] and "Goodwill" in rows["r-credit"]
    assert "<script>alert" not in html
    assert '/rewards/r-pending/cancel"' in pending and '/rewards/r-credit/cancel"' in html
    assert "/cancel" not in rows["r-used"] and "order 77" in rows["r-used"]
    assert "1 coupon waiting for the shop" in html
    assert 'id="legacy-credit"' not in html  # none left from before coupons


def test_credit_from_before_coupons_shows_until_it_becomes_one(world, monkeypatch):
    account = Loyalty.get_account
    monkeypatch.setattr(Loyalty, "get_account", lambda self, store, customer_id: {
        **account(self, store, customer_id), "legacy_credit": {"amount": 300, "currency": "EUR"}})
    html = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert re.search(r'id="legacy-credit">3.00 EUR', html)


def test_a_read_key_sees_the_coupons_but_no_form_that_changes_them(world):
    world = World()
    world.login("wcc_read")
    html = world.client.get("/console/customers/c1").get_data(as_text=True)
    assert 'id="reward-r-pending"' in html
    for action in ("/redeem", "/credit", "/rewards/r-pending/cancel"):
        assert f'action="/console/customers/c1{action}"' not in html, action


def test_coupons_that_cannot_be_loaded_say_so_and_the_rest_of_the_page_shows(world,
                                                                                monkeypatch):
    def down(self, store, customer_id):
        from shared.errors import Unavailable
        raise Unavailable("loyalty is catching up")
    monkeypatch.setattr(Loyalty, "list_rewards", down)
    answer = world.client.get("/console/customers/c1")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and "The coupons could not be loaded" in html
    assert "loyalty is catching up" in html and 'id="points-balance">120 points' in html


# -- redeeming: quote, then confirm ----------------------------------------------------------
def test_redeeming_shows_the_coupons_value_first_and_redeems_only_when_confirmed(world):
    asked = world.client.post("/console/customers/c1/redeem", data={
        "points": "100", "request_id": "form-1", "csrf_token": world.csrf()})
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200
    assert '<p class="quote" id="quote">100 points = 1.00 EUR, coupon valid until 2026-06-01' \
        in html
    assert world.called("redeem") == []
    confirm = re.search(r'<form method="post" action="/console/customers/c1/redeem"[^>]*>'
                        r'(.*?)</form>', html, re.S).group(1)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirm))
    assert fields["points"] == "100" and fields["confirm"] == "yes"
    assert fields["request_id"] == "form-1"  # a double submit redeems once
    done = world.client.post("/console/customers/c1/redeem", data=fields)
    assert done.status_code == 303 and done.headers["Location"].endswith("/customers/c1#loyalty")
    [(_, _, args)] = world.called("redeem")
    assert args[:5] == ("shop", "c1", 100, "console-form-1", "api-key:write")
    assert "Redeemed 100 points. Coupon reward-7kq2newcod for 1.00 EUR is ready, valid until " \
           "2026-06-01." in flashes(world)


def test_when_the_shop_is_down_the_message_says_the_coupon_comes_later(world, monkeypatch):
    monkeypatch.setattr(Loyalty, "shop_answers", False)
    world.client.post("/console/customers/c1/redeem", data={
        "points": "100", "confirm": "yes", "request_id": "f2", "csrf_token": world.csrf()})
    assert "The shop is not answering; the coupon reward-7kq2newcod for 1.00 EUR will be " \
           "created when it is back." in flashes(world)


def test_a_refused_quote_shows_its_reason_and_takes_nothing(world):
    asked = world.client.post("/console/customers/c1/redeem", data={
        "points": "500", "request_id": "f3", "csrf_token": world.csrf()})
    html = asked.get_data(as_text=True)
    assert "at least 100 and at most the balance of 120" in html and "Nothing was redeemed" in html
    assert 'name="confirm"' not in html and world.called("redeem") == []


@pytest.mark.parametrize("points", ["", "ten", "-5", "0", "1.5", "9" * 40])
def test_points_that_are_no_whole_number_are_refused_before_any_call(world, points):
    world.client.post("/console/customers/c1/redeem", data={
        "points": points, "csrf_token": world.csrf()})
    assert world.called("quote_redemption") == [] and world.called("redeem") == []
    assert "Points to redeem must be a whole number" in flashes(world)


def test_reward_forms_without_the_sessions_csrf_token_do_nothing(world):
    for url, data in (("/console/customers/c1/redeem", {"points": "100", "confirm": "yes"}),
                      ("/console/customers/c1/credit", {"amount": "5", "reason": "goodwill"}),
                      ("/console/customers/c1/rewards/r-pending/cancel", {"confirm": "yes"})):
        assert world.client.post(url, data=data).status_code == 403, url
        assert world.client.post(url, data={**data, "csrf_token": "x" * 43}).status_code == 403
    assert not (world.called("redeem") or world.called("issue_credit")
                or world.called("cancel_reward") or world.called("quote_redemption"))


# -- store credit ----------------------------------------------------------------------------
def test_store_credit_is_typed_in_the_stores_currency_and_sent_in_minor_units(world):
    answer = world.client.post("/console/customers/c1/credit", data={
        "amount": "12.5", "reason": "refund_alternative", "note": f"  late parcel {EVIL} ",
        "expires": "2026-12-31", "request_id": "cf-1", "csrf_token": world.csrf()})
    assert answer.status_code == 303
    [(_, _, args)] = world.called("issue_credit")
    assert args == ("shop", "c1", 1250, "refund_alternative", f"late parcel {EVIL}",
                    "api-key:write", "2026-12-31T00:00:00+00:00", "console-cf-1")
    assert "Store credit issued. Coupon reward-7kq2newcod for 12.50 EUR is ready" in \
        flashes(world)


def test_credit_in_a_currency_without_cents_takes_whole_units(world, monkeypatch):
    account = Loyalty.get_account

    def in_yen(self, store, customer_id):
        return {**account(self, store, customer_id), "cash_value": None,
                "store_credit": {"amount": 0, "currency": "JPY"}}
    monkeypatch.setattr(Loyalty, "get_account", in_yen)
    world.client.post("/console/customers/c1/credit", data={
        "amount": "500", "reason": "goodwill", "csrf_token": world.csrf()})
    assert world.called("issue_credit")[0][2][2] == 500
    world.client.post("/console/customers/c1/credit", data={
        "amount": "5.5", "reason": "goodwill", "csrf_token": world.csrf()})
    assert len(world.called("issue_credit")) == 1
    assert "Amount has no decimals" in flashes(world)


@pytest.mark.parametrize("form, message", [
    ({"amount": "1.234", "reason": "goodwill"}, "Amount has at most 2 decimals"),
    ({"amount": "lots", "reason": "goodwill"}, "Amount must be an amount such as 25"),
    ({"amount": "-3", "reason": "goodwill"}, "Amount must be an amount of zero or more"),
    ({"amount": "0", "reason": "goodwill"}, "Amount must be more than zero"),
    ({"amount": "5", "reason": "bribe"}, "Choose the reason"),
    ({"amount": "5", "reason": "goodwill", "expires": "soon"}, "Valid until must be a date"),
])
def test_a_credit_form_the_console_cannot_read_sends_nothing_and_says_why(world, form, message):
    world.client.post("/console/customers/c1/credit", data={**form, "csrf_token": world.csrf()})
    assert world.called("issue_credit") == []
    assert f"No credit was issued: {message}" in flashes(world)


# -- cancelling ------------------------------------------------------------------------------
def test_cancelling_a_coupon_asks_first_then_says_what_happened(world):
    asked = world.client.post("/console/customers/c1/rewards/r-pending/cancel",
                              data={"csrf_token": world.csrf()})
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Cancel coupon <code>reward-7kq2mnp4xz</code>?" in html
    assert "its 500 points go back to the balance" in html and world.called("cancel_reward") == []
    done = world.client.post("/console/customers/c1/rewards/r-pending/cancel",
                             data={"confirm": "yes", "csrf_token": world.csrf()})
    assert done.status_code == 303
    assert world.called("cancel_reward")[0][2] == ("shop", "c1", "r-pending", "api-key:write")
    assert "Coupon reward-7kq2mnp4xz is cancelled and no longer works at the shop. 500 points " \
           "went back to the balance." in flashes(world)


def test_a_coupon_the_shop_cannot_withdraw_yet_is_said_to_be_on_its_way_out(world, monkeypatch):
    monkeypatch.setattr(Loyalty, "shop_answers", False)
    world.client.post("/console/customers/c1/rewards/r-credit/cancel",
                      data={"confirm": "yes", "csrf_token": world.csrf()})
    assert "is being withdrawn at the shop; it is deleted there as soon as the shop answers" \
        in flashes(world)


def test_a_used_coupon_is_not_offered_for_cancelling_and_the_services_refusal_is_shown(world):
    asked = world.client.post("/console/customers/c1/rewards/r-used/cancel",
                              data={"csrf_token": world.csrf()})
    assert asked.status_code == 303 and world.called("cancel_reward") == []
    assert "Nothing was cancelled: that reward is not one that can be cancelled" in \
        flashes(world)
    world.client.post("/console/customers/c1/rewards/r-used/cancel",
                      data={"confirm": "yes", "csrf_token": world.csrf()})
    assert "Nothing was cancelled: reward r-used is used: it cannot be cancelled" in \
        flashes(world)


# -- words ---------------------------------------------------------------------------------
def test_reward_messages_and_money_follow_the_rewards_state_and_currency():
    reward = {"code": "reward-x", "amount": {"amount": 500, "currency": "EUR"}, "points": 500,
              "expires_at": None}
    assert present.reward_message({**reward, "state": "issued"}) == \
        "Coupon reward-x for 5.00 EUR is ready."
    assert present.reward_message({**reward, "state": "pending"}) == \
        "Coupon reward-x for 5.00 EUR is being created at the shop."
    assert present.reward_message({**reward, "state": "returned", "last_error": "refused"}) == \
        "The shop refused the coupon reward-x (refused) and the points went back."
    assert present.money(500, "JPY") == "500 JPY" and present.money(1234, "KWD") == "1.234 KWD"
    assert present.to_minor_units("1.234", "KWD") == 1234
    assert present.store_currency({"store_credit": {"amount": 0, "currency": None},
                                   "cash_value": None}, {"currency": "SEK"}) == "SEK"
    assert json.dumps(present.REWARD_STATES)  # every state the service names has words
    assert set(present.REWARD_STATES) == {"pending", "issued", "used", "closing", "returned",
                                          "expired"}


# -- the programme form keeps what it does not show --------------------------------------------
def test_saving_the_programme_keeps_the_settings_the_form_does_not_show(monkeypatch):
    """The API replaces the programme whole: a field the form leaves out would go back to its
    default on every save from the console."""
    accepted = ["points_per_unit", "expiry_months", "currency", "hidden_setting"]
    current = {"points_per_unit": 100, "expiry_months": 12, "currency": "EUR",
               "hidden_setting": 7, "store_id": "shop"}
    assert forms.keep_unshown(current, {"points_per_unit": 50, "currency": None}, accepted) == {
        "points_per_unit": 50, "currency": None, "expiry_months": 12, "hidden_setting": 7}


REWARD_SETTINGS = {"coupon_prefix": "reward", "reward_expiry_days": 90,
                   "credit_expiry_days": 365, "expiry_warning_days": 14,
                   "reward_individual_use": True, "expired_rewards_return_points": False}


def test_the_programme_page_shows_and_reads_the_reward_settings_it_has(monkeypatch):
    monkeypatch.setattr(Loyalty, "programme", {**Loyalty.programme, **REWARD_SETTINGS})
    admin = World()
    admin.login("wcc_admin")
    html = admin.client.get("/console/loyalty").get_data(as_text=True)
    assert "codes reward-…; valid 90 days (store credit 365)" in html
    assert re.search(r'id="p-reward_expiry_days"[^>]*value="90"', html)
    assert re.search(r'name="reward_individual_use" checked', html)
    assert re.search(r'id="p-coupon_prefix"[^>]*value="reward"', html)
    typed = {"tier_name": ["bronze"], "tier_min_points": ["0"], "tier_max_points": [""],
             "tier_rate": ["10"], "earning_statuses": ["completed"], "coupon_prefix": " Gift ",
             "reward_expiry_days": "30", "credit_expiry_days": "400", "expiry_warning_days": "0",
             "expired_rewards_return_points": "on",
             **{k: "1" for k in forms.PROGRAMME_INTEGERS}}
    body, _, errors = forms.parse_programme(MultiDict(typed), Loyalty.programme)
    assert errors == {}
    assert {k: body[k] for k in REWARD_SETTINGS} == {
        "coupon_prefix": "gift", "reward_expiry_days": 30, "credit_expiry_days": 400,
        "expiry_warning_days": 0, "reward_individual_use": False,
        "expired_rewards_return_points": True}
    _, _, errors = forms.parse_programme(MultiDict({**typed, "coupon_prefix": "",
                                                    "credit_expiry_days": "soon"}),
                                         Loyalty.programme)
    assert set(errors) >= {"coupon_prefix", "credit_expiry_days"}
    # A programme without them (a loyalty service before coupons) shows and sends none.
    body, _, _ = forms.parse_programme(MultiDict(typed), {"currency": "EUR"})
    assert not set(REWARD_SETTINGS) & set(body)
