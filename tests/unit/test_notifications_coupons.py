"""notifications' coupons and loyalty triggers on an in-memory MongoDB, a local SMTP server and
an in-memory stand-in for customer_sync's `ensure_coupon`: a workflow's coupon is validated,
its code kept on the send before the shop is asked, made once however often the send is
tried, and a shop that cannot make it delays or fails the send as a provider's failure would."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from services.notifications import templates as tpl
from services.notifications import workflows as wf
from services.notifications.channels import EmailChannel, SmsChannel, SmtpSettings, TwilioSettings
from services.notifications.notifier import Notifier
from services.notifications.repository import NotificationsStorage
from services.notifications.sender import Sender, SenderSettings
from shared.coupons import CODE_ALPHABET, CouponSpec
from shared.errors import NotFound, Refused, Unavailable, ValidationError
from shared.events import build_event, contract
from tests.support import Clock, storage_at

T0 = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
STORE = "s1"
COUPON = {"type": "percent", "amount": 10, "currency": "EUR", "validity_days": 30,
          "minimum_spend": 2000, "individual_use": True}
GIFT_TEMPLATE = {"slug": "welcome_gift", "channel": "email", "name": "Welcome with a gift",
                 "subject": "A gift from {{ store.name }}",
                 "html": "<p>Use {{ coupon.code }} for {{ coupon.amount }} off until "
                         "{{ coupon.expires }}.</p>",
                 "text": "Use {{ coupon.code }} for {{ coupon.amount }} off until "
                         "{{ coupon.expires }}."}
WELCOME = {"workflow_id": "welcome", "name": "Welcome", "trigger": {"event": "customer.created"},
           "channel": "email", "template": "welcome_gift", "purpose": "transactional",
           "coupon": COUPON}
from services.notifications import links as ln

# Marketing email carries its unsubscribe link, so the sender needs a public address.
PUBLIC_LINKS = ln.PublicLinks(ln.LinkSigner("a-link-secret-for-tests-0123456789abcdef"),
                              "https://notify.shop.example")


class ShopCouponsStandIn:
    """customer_sync's ensure_coupon in memory: one coupon per code, looked up before it is
    made, as the RPC promises; `fail_with` makes every call raise it until cleared."""

    def __init__(self) -> None:
        self.coupons: dict[str, dict] = {}
        self.calls: list[tuple[str, dict, str | None]] = []
        self.fail_with: Exception | None = None
        self.emails = {"c1": "ada@example.com", "c2": "b@example.com"}  # customer_sync's

    def ensure_coupon(self, store_id: str, coupon: dict, customer_id: str | None = None) -> dict:
        self.calls.append((store_id, coupon, customer_id))
        if self.fail_with is not None:
            raise self.fail_with
        CouponSpec.from_wire(coupon)  # what customer_sync checks first
        assert coupon["email"] is None or customer_id is None  # one or the other
        email = self.emails[customer_id] if customer_id else coupon["email"]
        held = self.coupons.setdefault(coupon["code"], {**coupon, "email": email,
                                                        "id": len(self.coupons) + 1})
        assert held["meta"] == coupon["meta"]  # a code is never someone else's here
        return {"coupon_id": held["id"], "code": held["code"], "status": "publish",
                "usage_count": 0, "expires_at": held["expires_at"]}

    def delete_coupon(self, store_id: str, code: str, meta: dict) -> dict:
        self.calls.append((store_id, {"delete": code, "meta": meta}, None))
        if self.fail_with is not None:
            raise self.fail_with
        held = self.coupons.get(code)
        if held is None or held["meta"] != meta:
            return {"deleted": False, "usage_count": 0, "found": held is not None}
        del self.coupons[code]
        return {"deleted": True, "usage_count": 0, "found": True}


@pytest.fixture
def world(database, smtp):
    """A store with the welcome-with-a-coupon workflow, a known customer and a sender."""
    storage, clock = storage_at(NotificationsStorage, database, T0)
    shop = ShopCouponsStandIn()
    email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))
    sender = Sender(storage, email, SmsChannel(TwilioSettings("", "", "", "", 5)),
                    SenderSettings(max_attempts=4, retry_seconds=60, links=PUBLIC_LINKS), clock,
                    shop_coupons=shop, choose=random.Random(7).choice)
    notifier = Notifier(storage, clock)
    notifier.save_template(STORE, GIFT_TEMPLATE)
    notifier.save_workflow(STORE, WELCOME)
    created = build_event("customer.created", store_id=STORE, occurred_at=T0, data={
        **contract("customer.created").sample, "customer_id": "c1", "email": "Ada@Example.com",
        "first_name": "Ada", "date_created": T0.isoformat()})
    assert notifier.apply(created) == 1
    yield storage, sender, shop, clock, smtp
    email.close()


def _send(storage) -> dict:
    [send] = storage.sends.collection.find()
    return send


def test_a_workflow_coupon_is_validated_naming_each_field_and_normalised():
    channels = {"welcome": "email"}
    base = {k: v for k, v in WELCOME.items() if k != "coupon"} | {"template": "welcome"}
    saved = wf.validate_workflow({**base, "coupon": {"type": "fixed", "amount": 500,
                                                     "currency": "EUR", "validity_days": 7}},
                                 channels)
    assert saved["coupon"] == {"type": "fixed", "amount": 500, "currency": "EUR",
                               "validity_days": 7, "minimum_spend": None,
                               "individual_use": False, "prefix": None}
    assert "coupon" not in wf.validate_workflow(base, channels)
    bad = {"percent 0": ({"amount": 0}, "coupon.amount"),
           "1000 %": ({"amount": 1000}, "coupon.amount"),
           "fixed 0": ({"type": "fixed", "amount": 0}, "coupon.amount"),
           "not whole": ({"amount": 9.5}, "coupon.amount"),
           "negative minimum": ({"minimum_spend": -1}, "coupon.minimum_spend"),
           "no validity": ({"validity_days": 0}, "coupon.validity_days"),
           "huge validity": ({"validity_days": 10 ** 6}, "coupon.validity_days"),
           "unknown key": ({"free_shipping": True}, "coupon.free_shipping"),
           "currency": ({"currency": "eur"}, "coupon.currency"),
           "type": ({"type": "fixed_product"}, "coupon.type"),
           "individual": ({"individual_use": "yes"}, "coupon.individual_use"),
           "prefix": ({"prefix": "Gift-0"}, "coupon.prefix")}
    for name, (change, field) in bad.items():
        with pytest.raises(ValidationError) as info:
            wf.validate_workflow({**base, "coupon": {**COUPON, **change}}, channels)
        assert field in info.value.details["fields"], name
        assert field in str(info.value), name
    with pytest.raises(ValidationError, match="coupon: must be an object"):
        wf.validate_workflow({**base, "coupon": "10%"}, channels)


def test_a_template_using_a_coupon_needs_a_workflow_that_attaches_one(database):
    notifier = Notifier(NotificationsStorage(database), Clock(T0))
    notifier.save_template(STORE, GIFT_TEMPLATE)
    without = {k: v for k, v in WELCOME.items() if k != "coupon"}
    with pytest.raises(ValidationError) as info:
        notifier.save_workflow(STORE, without)
    assert "coupon" in info.value.details["fields"]
    assert notifier.workflows(STORE) == []  # nothing stored on refusal
    notifier.save_template(STORE, {**GIFT_TEMPLATE, "slug": "reward_code",
                                   "text": "{{ reward.code }}", "html": "{{ reward.code }}"})
    with pytest.raises(ValidationError, match="uses reward"):
        notifier.save_workflow(STORE, {**without, "template": "reward_code"})
    # Nor may a template change under a workflow into one the workflow cannot fill.
    notifier.save_workflow(STORE, {**without, "template": "welcome"})
    with pytest.raises(ValidationError) as changed:
        notifier.save_template(STORE, {**GIFT_TEMPLATE, "slug": "welcome"})
    assert "coupon" in changed.value.details["fields"]
    assert notifier.templates(STORE)["welcome"] == tpl.DEFAULT_TEMPLATES["welcome"]


def test_the_send_keeps_its_code_asks_the_shop_and_the_email_shows_the_coupon(world):
    storage, sender, shop, clock, smtp = world
    assert sender.run_once() == {"sent": 1}
    send = _send(storage)
    code = send["coupon"]["code"]
    assert code.startswith("gift-") and len(code) == 15
    assert set(code[5:]) <= set(CODE_ALPHABET)
    [(store_id, wire, customer_id)] = shop.calls
    assert (store_id, customer_id) == (STORE, "c1")  # restricted to c1's email over there
    assert shop.coupons[code]["email"] == "ada@example.com"
    assert wire == {"code": code, "discount_type": "percent", "amount": 10, "currency": "EUR",
                    "expires_at": (T0 + timedelta(days=30)).isoformat(),
                    "email": None, "individual_use": True, "minimum_spend": 2000,
                    "usage_limit": 1, "description": "Message welcome_gift of workflow welcome",
                    "meta": {"companion_send": send["_id"]}}
    assert send["coupon"]["coupon_id"] == 1
    [mail] = smtp.wait_for(1)
    assert mail.get_body(("plain",)).get_content().strip() == \
        f"Use {code} for 10 % off until 2026-12-29."


def test_the_code_follows_the_seeded_draw_and_the_prefix_setting_or_the_workflows(world):
    storage, sender, shop, clock, smtp = world
    sender.settings = SenderSettings(coupon_prefix="shop", links=PUBLIC_LINKS)
    draw = random.Random(7)
    expected_tail = "".join(draw.choice(CODE_ALPHABET) for _ in range(10))
    sender.run_once()
    assert _send(storage)["coupon"]["code"] == f"shop-{expected_tail}"
    notifier = Notifier(storage, clock)
    notifier.save_workflow(STORE, {**WELCOME, "workflow_id": "w2",
                                   "coupon": {**COUPON, "prefix": "hello"}})
    notifier.apply(build_event("customer.created", store_id=STORE, occurred_at=T0, data={
        **contract("customer.created").sample, "customer_id": "c2", "email": "b@example.com",
        "date_created": T0.isoformat()}))
    sender.run_once()
    codes = sorted(s["coupon"]["code"] for s in storage.sends.collection.find())
    assert [c.split("-")[0] for c in codes] == ["hello", "shop", "shop"]  # c2 has both


def test_a_shop_that_cannot_make_the_coupon_delays_the_send_which_then_reuses_its_code(world):
    storage, sender, shop, clock, smtp = world
    shop.fail_with = Unavailable("the shop answered 503")
    assert sender.run_once() == {"retry": 1}
    send = _send(storage)
    code = send["coupon"]["code"]
    assert shop.calls[0][1]["code"] == code  # chosen and kept before the shop was asked
    assert send["status"] == "scheduled"
    assert send["due_at"].replace(tzinfo=timezone.utc) == T0 + timedelta(seconds=60)
    assert send["attempts"][0]["outcome"] == "retry"
    assert "coupon not created" in send["attempts"][0]["detail"]
    # The send log's row says why it waits; the email channel itself was never tried.
    assert send["reason"] == "coupon not created: Unavailable: the shop answered 503"
    assert storage.channel_state.all() == {}
    assert smtp.received == 0
    clock.now = T0 + timedelta(seconds=59)
    assert sender.run_once() == {}  # not before its back-off
    clock.now = T0 + timedelta(seconds=60)
    assert sender.run_once() == {"retry": 1}  # a timeout is as transient
    assert _send(storage)["due_at"].replace(tzinfo=timezone.utc) == \
        clock.now + timedelta(seconds=120)  # doubled, as a provider's retry
    shop.fail_with = None
    clock.now += timedelta(seconds=120)
    assert sender.run_once() == {"sent": 1}
    assert "reason" not in _send(storage)
    assert [wire["code"] for _, wire, _ in shop.calls] == [code, code, code]
    assert list(shop.coupons) == [code]
    # the expiry was fixed with the code, not when the shop came back
    assert shop.coupons[code]["expires_at"] == (T0 + timedelta(days=30)).isoformat()
    assert code in smtp.wait_for(1)[0].get_body(("plain",)).get_content()


def test_a_shop_down_for_good_uses_the_providers_attempt_limit(world):
    storage, sender, shop, clock, smtp = world
    shop.fail_with = TimeoutError("customer_sync did not answer")
    outcomes = []
    for _ in range(4):
        outcomes.extend(sender.run_once())
        clock.now += timedelta(hours=1)
    assert outcomes == ["retry", "retry", "retry", "failed"]
    send = _send(storage)
    assert send["status"] == "failed" and "coupon not created" in send["reason"]
    [event] = [e for e in send["outbox"] if e["event_type"] == "notification.failed"]
    assert event["message"]["data"]["permanent"] is False and event["message"]["data"]["attempts"] == 4
    assert smtp.received == 0


@pytest.mark.parametrize("refusal", [Refused("the shop refused: coupon code already exists"),
                                     ValidationError("amount must be a whole number"),
                                     NotFound("no store s1")])
def test_a_refusal_fails_the_send_for_good_with_its_reason(world, refusal):
    storage, sender, shop, clock, smtp = world
    shop.fail_with = refusal
    assert sender.run_once() == {"failed": 1}
    send = _send(storage)
    assert send["status"] == "failed"
    assert send["reason"] == f"coupon not created: {type(refusal).__name__}: {refusal}"
    [event] = [e for e in send["outbox"] if e["event_type"] == "notification.failed"]
    assert event["message"]["data"]["permanent"] is True and event["message"]["data"]["reason"] == send["reason"]
    assert len(shop.calls) == 1 and smtp.received == 0


def test_a_send_retried_after_the_coupon_was_made_reuses_it(world):
    storage, sender, shop, clock, smtp = world
    smtp.fail_data(1, 451)  # the provider fails after the coupon exists
    assert sender.run_once() == {"retry": 1}
    code = _send(storage)["coupon"]["code"]
    clock.now += timedelta(hours=1)
    assert sender.run_once() == {"sent": 1}
    assert list(shop.coupons) == [code] and len(shop.calls) == 1
    assert code in smtp.wait_for(1)[0].get_body(("plain",)).get_content()
    # a sender that stopped before it recorded the coupon's id asks again for the same code
    storage.sends.collection.update_one({}, {"$unset": {"coupon.coupon_id": ""},
                                             "$set": {"status": "scheduled", "attempts": []}})
    assert sender.run_once() == {"sent": 1}
    assert [w["code"] for _, w, _ in shop.calls] == [code, code] and list(shop.coupons) == [code]


def test_a_message_that_will_never_go_takes_its_coupon_back(world):
    storage, sender, shop, clock, smtp = world
    smtp.reject_recipient("ada@example.com", 550)  # refused for good, after the coupon
    assert sender.run_once() == {"failed": 1}
    send = _send(storage)
    assert shop.coupons == {} and send["coupon"]["withdrawn"] is True
    assert shop.calls[-1][1] == {"delete": send["coupon"]["code"],
                                 "meta": {"companion_send": send["_id"]}}
    assert smtp.received == 0


def test_a_coupon_the_shop_would_not_take_back_is_left_and_the_log_says_why(world):
    storage, sender, shop, clock, smtp = world
    smtp.reject_recipient("ada@example.com", 550)
    real_delete = shop.delete_coupon

    def shop_down_by_then(*args):
        shop.fail_with = Unavailable("the shop answered 503")
        return real_delete(*args)

    shop.delete_coupon = shop_down_by_then
    assert sender.run_once() == {"failed": 1}
    send = _send(storage)
    assert send["status"] == "failed" and len(shop.coupons) == 1
    assert send["coupon"]["withdrawn"] is False
    assert send["coupon"]["left_because"] == "Unavailable: the shop answered 503"


def test_no_coupon_is_made_for_a_send_refused_or_cancelled(world):
    storage, sender, shop, clock, smtp = world
    storage.sends.collection.update_one({}, {"$set": {"purpose": "marketing"}})  # no consent
    assert sender.run_once() == {"refused": 1}
    assert shop.calls == [] and "code" not in _send(storage)["coupon"]


def _loyalty(event_type: str, **data):
    return build_event(event_type, store_id=STORE, occurred_at=T0,
                       data={**contract(event_type).sample, "customer_id": "c1", **data})


def test_loyalty_events_trigger_with_their_conditions():
    def workflow(trigger):
        return {"trigger": trigger, "enabled": True}

    issued = _loyalty("loyalty.reward_issued").data
    assert wf.triggered_by(workflow({"event": "loyalty.reward_issued"}),
                           "loyalty.reward_issued", issued)
    assert not wf.triggered_by(workflow({"event": "loyalty.reward_issued", "kind": "credit"}),
                               "loyalty.reward_issued", issued)
    earn = {"event": "loyalty.points_changed"}
    assert wf.triggered_by(workflow(earn), "loyalty.points_changed", {"kind": "earn", "delta": 5})
    assert not wf.triggered_by(workflow(earn), "loyalty.points_changed",
                               {"kind": "redeem", "delta": -5})
    assert not wf.triggered_by(workflow({**earn, "kind": "adjust"}), "loyalty.points_changed",
                               {"kind": "adjust", "delta": -5})  # nothing earned
    assert wf.triggered_by(workflow({**earn, "kind": "adjust"}), "loyalty.points_changed",
                           {"kind": "adjust", "delta": 5})
    base = {"name": "x", "channel": "email", "template": "welcome", "purpose": "transactional"}
    for trigger, field in (({"event": "loyalty.points_changed", "kind": "redeem"}, "trigger.kind"),
                           ({"event": "loyalty.reward_issued", "kind": "gift"}, "trigger.kind"),
                           ({"event": "loyalty.points_expiring", "days": 3}, "trigger.days")):
        with pytest.raises(ValidationError) as info:
            wf.validate_workflow({**base, "trigger": trigger}, {"welcome": "email"})
        assert field in info.value.details["fields"]


def test_a_reward_code_and_points_messages_carry_their_events_facts(database, smtp):
    storage, clock = storage_at(NotificationsStorage, database, T0)
    notifier = Notifier(storage, clock)
    notifier.save_settings(STORE, {"timezone": "Europe/Berlin"})
    storage.contacts.apply(STORE, "c1", "contact_at", T0, {"email": "ada@example.com",
                                                           "first_name": "Ada"})
    for slug, text in (("reward", "Your code {{ reward.code }}: {{ reward.amount }} until "
                                  "{{ reward.expires }}"),
                       ("earned", "You earned {{ points.delta }} points: {{ points.balance }}"),
                       ("expiring", "{{ points.expiring }} points expire on {{ points.expires }}")):
        notifier.save_template(STORE, {"slug": slug, "channel": "email", "subject": slug,
                                       "html": text, "text": text})
    for workflow_id, trigger in (("reward", {"event": "loyalty.reward_issued"}),
                                 ("earned", {"event": "loyalty.points_changed"}),
                                 ("expiring", {"event": "loyalty.points_expiring"})):
        notifier.save_workflow(STORE, {"workflow_id": workflow_id, "name": workflow_id,
                                       "trigger": trigger, "channel": "email",
                                       "template": workflow_id, "purpose": "transactional"})
    reward = _loyalty("loyalty.reward_issued", expires_at="2027-03-06T23:30:00+00:00")
    assert notifier.apply(reward) == 1
    assert notifier.apply(reward) == 0  # once per event
    assert notifier.apply(_loyalty("loyalty.points_changed", kind="earn", delta=450,
                                   balance=1450)) == 1
    assert notifier.apply(_loyalty("loyalty.points_changed", kind="redeem", delta=-500,
                                   balance=950)) == 0
    assert notifier.apply(_loyalty("loyalty.points_expiring", points=200, balance=950,
                                   expires_at="2027-01-31T23:00:00+00:00")) == 1
    email = EmailChannel(SmtpSettings(smtp.host, smtp.port, "none", "", "", 5, "s@example.com"))
    sender = Sender(storage, email, SmsChannel(TwilioSettings("", "", "", "", 5)),
                    SenderSettings(), clock)
    assert sender.run_once() == {"sent": 3}
    bodies = {m["Subject"]: m.get_body(("plain",)).get_content().strip()
              for m in smtp.wait_for(3)}
    email.close()
    assert bodies == {  # dates in the store's time zone
        "reward": "Your code shop-7kq2m9xwpa: 5.00 EUR until 2027-03-07",
        "earned": "You earned 450 points: 1450",
        "expiring": "200 points expire on 2027-02-01"}
    # An erasure takes the events' facts (a reward's code) from the send log with the rest.
    notifier.erase(STORE, ["c1"], "r1")
    assert all("facts" not in send for send in storage.sends.collection.find())


def test_preview_shows_sample_coupon_and_loyalty_values_that_no_shop_holds():
    rendered = tpl.render(GIFT_TEMPLATE, tpl.SAMPLE_CONTEXT)
    assert rendered.text == "Use gift-sample00000 for 10 % off until 2026-12-31."
    assert "0" not in CODE_ALPHABET  # so the sample can never be a real code
    tpl.validate_template({"slug": "pts", "channel": "sms",
                           "body": "{{ points.delta }} {{ points.expiring }} {{ reward.code }}"})
