"""notifications on the real broker, with a real local SMTP server and a local stand-in that
speaks Twilio's Messages API: events in, messages out, exactly once, with consent."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.notifications.service import NotificationsService
from shared.events import build_event, contract
from tests.support import EventBarrier, free_port, publish, wait_until

STORE = "nt"
PHONE = "+447700900123"


def start(services, smtp, twilio, **overrides):
    port = free_port()
    config = dict(WEB_SERVER_ADDRESS=f"127.0.0.1:{port}", SMTP_HOST=smtp.host,
                  SMTP_PORT=str(smtp.port), TWILIO_ACCOUNT_SID=twilio.account_sid,
                  TWILIO_AUTH_TOKEN=twilio.auth_token, TWILIO_FROM_NUMBER=twilio.phone_number,
                  TWILIO_API_BASE=twilio.base_url, NOTIFY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                  NOTIFY_POLL_SECONDS="0.2", NOTIFY_RETRY_SECONDS="0.3")
    config.update(overrides)
    container = services.start(NotificationsService, **config)
    return container, f"http://127.0.0.1:{port}"


@pytest.fixture
def rpc(services):
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy



def event(event_type: str, data: dict, at: datetime | None = None) -> dict:
    return build_event(event_type, store_id=STORE, data=data,
                       occurred_at=at or datetime.now(timezone.utc)).to_message()


def customer(customer_id: str, email: str, phone: str = PHONE) -> dict:
    return event("customer.created", {**contract("customer.created").sample,
                                      "customer_id": customer_id, "email": email,
                                      "first_name": "Ada", "phone": phone})


def consent(customer_id: str, purpose: str, granted: bool = True) -> dict:
    return event("consent.changed", {"customer_id": customer_id, "purpose": purpose,
                                     "granted": granted, "source": "checkout",
                                     "changed_at": datetime.now(timezone.utc).isoformat(),
                                     "origin": "gdpr"})


def tagged(customer_id: str, tag: str, untag: bool = False) -> dict:
    return event("customer.untagged" if untag else "customer.tagged",
                 {"customer_id": customer_id, "tag": tag, "source": "manual", "rule_id": None,
                  "actor": "ops"})


CART = {"workflow_id": "cart", "name": "Abandoned cart", "trigger": {
    "event": "customer.tagged", "tag": "abandoned-cart"}, "delay_seconds": 2, "channel": "email",
    "template": "abandoned_cart", "purpose": "marketing",
    "cancel": [{"if": "tag_removed", "tag": "abandoned-cart"}]}


def known(rpc, customer_id: str, purpose: str | None = "email_marketing") -> None:
    """Wait until the projection has the customer's contact fields (and their consent): each
    comes on its own queue, the contact fields in a batch."""
    def ready():
        try:
            contact = rpc.notifications.export_customer(STORE, customer_id)["contact"]
        except Exception:
            return False
        if not (contact or {}).get("email"):
            return False
        return purpose is None or (contact.get("consent") or {}).get(purpose, {}).get("granted")
    wait_until(ready, timeout=10, message=f"customer {customer_id} in the projection")


def test_a_tag_sends_an_email_after_the_delay_once_even_when_redelivered(
        services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    rpc.notifications.save_store_settings(STORE, {"name": "Tea & Co", "url": "https://tea.example"})
    rpc.notifications.save_workflow(STORE, CART)
    publish(services.amqp_uri, customer("c1", "ada@example.com"), consent("c1", "email_marketing"))
    known(rpc, "c1")
    trigger = tagged("c1", "abandoned-cart")
    barrier = EventBarrier(services, "notifications").expect("customer.tagged")
    started = time.monotonic()
    publish(services.amqp_uri, trigger, trigger)  # delivered twice
    [mail] = smtp.wait_for(1, timeout=15)
    assert time.monotonic() - started >= 1.5  # not before the delay
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "Ada, your cart is waiting"
    assert "Tea &amp; Co" in mail.get_body(("html",)).get_content()
    assert "Tea & Co" in mail.get_body(("plain",)).get_content()
    # Both deliveries handled, and the log holds every send they made, each finished: no
    # second message is still to come.
    barrier.settled("customer.tagged", 2)
    wait_until(lambda: [e["status"] for e in rpc.notifications.send_log(STORE, "c1")] == ["sent"])
    assert smtp.received == 1
    [entry] = rpc.notifications.send_log(STORE, "c1")
    assert [a["outcome"] for a in entry["attempts"]] == ["sent"]


def test_removing_the_tag_before_the_delay_cancels(services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    rpc.notifications.save_workflow(STORE, CART)
    publish(services.amqp_uri, customer("c2", "bo@example.com"), consent("c2", "email_marketing"))
    known(rpc, "c2")
    barrier = EventBarrier(services, "notifications").expect("customer.tagged")
    publish(services.amqp_uri, tagged("c2", "abandoned-cart"))
    barrier.settled("customer.tagged")  # the send is scheduled before the tag goes
    publish(services.amqp_uri, tagged("c2", "abandoned-cart", untag=True))
    wait_until(lambda: [e["status"] for e in rpc.notifications.send_log(STORE, "c2")] == ["cancelled"],
               timeout=15)
    assert smtp.received == 0
    assert rpc.notifications.send_log(STORE, "c2")[0]["reason"] == "tag abandoned-cart was removed"


def test_no_consent_no_marketing_but_transactional_goes(services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    rpc.notifications.save_workflow(STORE, {**CART, "delay_seconds": 0})
    rpc.notifications.save_workflow(STORE, {
        "workflow_id": "first", "name": "First order", "trigger": {
            "event": "order.placed", "first_order": True},
        "channel": "email", "template": "welcome", "purpose": "transactional"})
    publish(services.amqp_uri, customer("c3", "cy@example.com"))
    known(rpc, "c3", None)
    publish(services.amqp_uri, tagged("c3", "abandoned-cart"))
    wait_until(lambda: [e["status"] for e in rpc.notifications.send_log(STORE, "c3")] == ["refused"],
               timeout=15)
    assert rpc.notifications.send_log(STORE, "c3")[0]["reason"] == "no email_marketing consent"
    # A live order (the store's max_trigger_age_hours keeps a backfilled old one silent).
    order = {**contract("order.placed").sample, "customer_id": "c3", "order_id": "77", "number": "77",
             "date_created": datetime.now(timezone.utc).isoformat()}
    publish(services.amqp_uri, event("order.placed", order))
    [mail] = smtp.wait_for(1, timeout=15)
    assert mail["Subject"].startswith("Welcome to")
    wait_until(lambda: sorted(e["status"] for e in rpc.notifications.send_log(STORE, "c3"))
               == ["refused", "sent"])
    barrier = EventBarrier(services, "notifications").expect("order.placed")
    publish(services.amqp_uri, event("order.placed", {**order, "order_id": "78", "number": "78"}))
    barrier.settled("order.placed")
    # only the first order triggers: the second made no send at all
    assert sorted(e["status"] for e in rpc.notifications.send_log(STORE, "c3")) == [
        "refused", "sent"]
    assert smtp.received == 1


def test_two_instances_send_once(services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    start(services, smtp, twilio)
    rpc.notifications.save_workflow(STORE, {**CART, "delay_seconds": 1})
    for n in range(20):
        publish(services.amqp_uri, customer(f"m{n}", f"m{n}@example.com"),
                consent(f"m{n}", "email_marketing"))
    wait_until(lambda: all(
        (rpc.notifications.export_customer(STORE, f"m{n}")["contact"].get("consent") or {})
        .get("email_marketing") for n in range(20)), timeout=20)
    barrier = EventBarrier(services, "notifications").expect("customer.tagged")
    publish(services.amqp_uri, *[tagged(f"m{n}", "abandoned-cart") for n in range(20)])
    smtp.wait_for(20, timeout=20)
    barrier.settled("customer.tagged", 20)
    wait_until(lambda: all([e["status"] for e in rpc.notifications.send_log(STORE, f"m{n}")]
                           == ["sent"] for n in range(20)), timeout=20)
    assert smtp.received == 20
    assert sorted(m["To"] for m in smtp.messages) == sorted(f"m{n}@example.com" for n in range(20))


def test_a_refused_smtp_connection_is_retried_until_it_succeeds(services, smtp, twilio, rpc):
    start(services, smtp, twilio)
    rpc.notifications.save_workflow(STORE, {**CART, "delay_seconds": 0})
    publish(services.amqp_uri, customer("c5", "eve@example.com"), consent("c5", "email_marketing"))
    known(rpc, "c5")
    smtp.refuse_connections(2)
    publish(services.amqp_uri, tagged("c5", "abandoned-cart"))
    smtp.wait_for(1, timeout=20)
    [entry] = rpc.notifications.send_log(STORE, "c5")
    assert [a["outcome"] for a in entry["attempts"]] == ["retry", "retry", "sent"]
    assert "421" in entry["attempts"][0]["detail"]


def test_sms_quiet_hours_hold_and_stop_turns_sms_marketing_off(services, smtp, twilio, rpc):
    _, base = start(services, smtp, twilio)
    now = datetime.now(timezone.utc)
    # Quiet hours from an hour ago to an hour from now (UTC): an SMS now is held.
    rpc.notifications.save_store_settings(STORE, {
        "name": "Tea & Co", "timezone": "UTC",
        "quiet_start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "quiet_end": (now + timedelta(hours=1)).strftime("%H:%M")})
    rpc.notifications.save_workflow(STORE, {
        "workflow_id": "winback", "name": "Win back by SMS", "trigger": {
            "event": "customer.segment_changed", "to": "at_risk"},
        "channel": "sms", "template": "win_back_sms", "purpose": "marketing"})
    publish(services.amqp_uri, customer("c6", "fay@example.com"), consent("c6", "sms_marketing"))
    known(rpc, "c6", "sms_marketing")
    publish(services.amqp_uri, event("customer.segment_changed", {
        "customer_id": "c6", "old_segment": "regular", "new_segment": "at_risk",
        "orders_count": 3, "total_spent": None}))
    wait_until(lambda: any(a["outcome"] == "held" for e in rpc.notifications.send_log(STORE, "c6")
                           for a in e["attempts"]), timeout=15)
    [entry] = rpc.notifications.send_log(STORE, "c6")
    assert entry["status"] == "scheduled" and twilio.messages == []
    held_until = datetime.fromisoformat(entry["due_at"])
    assert abs((held_until - (now + timedelta(hours=1))).total_seconds()) < 120
    # Out of quiet hours (moved away), the held SMS goes, with a status callback asked for.
    rpc.notifications.save_store_settings(STORE, {"name": "Tea & Co", "quiet_start": "00:00",
                                                  "quiet_end": "00:00"})
    services_db = _database(services)
    services_db["sends"].update_one({"_id": entry["_id"]}, {"$set": {"due_at": now}})
    wait_until(lambda: twilio.messages, timeout=15)
    [sms] = twilio.messages
    assert sms.to == PHONE and "Tea & Co" in sms.body
    wait_until(lambda: rpc.notifications.send_log(STORE, "c6")[0]["status"] == "sent")
    # Status callbacks: signed ones move the status forward only; a bad signature is refused.
    sid = rpc.notifications.send_log(STORE, "c6")[0]["provider_id"]
    assert twilio.send_status_callback(sid, "delivered").status == 200
    assert twilio.send_status_callback(sid, "sent").status == 200  # late and older: no effect
    assert rpc.notifications.send_log(STORE, "c6")[0]["delivery_status"] == "delivered"
    assert twilio.send_status_callback(sid, "failed", signature="bad").status == 403
    # STOP from the customer's phone: consent off, announced, and the next SMS is refused.
    answer = twilio.send_inbound(f"{base}/twilio/inbound", PHONE, twilio.phone_number, "STOP")
    assert answer.status == 200
    assert twilio.send_inbound(f"{base}/twilio/inbound", PHONE, twilio.phone_number, "START",
                               signature="bad").status == 403
    wait_until(lambda: not rpc.notifications.export_customer(STORE, "c6")["contact"]["consent"]
               ["sms_marketing"]["granted"])
    publish(services.amqp_uri, event("customer.segment_changed", {
        "customer_id": "c6", "old_segment": "at_risk", "new_segment": "at_risk",
        "orders_count": 3, "total_spent": None}))
    wait_until(lambda: [e["status"] for e in rpc.notifications.send_log(STORE, "c6")][0] == "refused",
               timeout=15)
    assert len(twilio.messages) == 1


def _database(services):
    from shared import mongo
    return mongo.connect(services.mongo_uri)["companion_notifications"]


def test_templates_preview_and_a_permanent_sms_failure(services, smtp, twilio, rpc):
    from shared.errors import ValidationError

    start(services, smtp, twilio)
    with pytest.raises(ValidationError) as info:
        rpc.notifications.save_template(STORE, {"slug": "promo", "channel": "email",
                                                "subject": "Hi {{ customer.first_name }}",
                                                "html": "<p>ok</p>",
                                                "text": "line one\n{{ customer.nickname }}"})
    assert "text: line 2: unknown variable 'customer.nickname'" in str(info.value)
    rpc.notifications.save_template(STORE, {"slug": "promo", "channel": "sms",
                                            "body": "{{ store.name }}: hi {{ customer.first_name }}"})
    assert rpc.notifications.preview(STORE, "promo")["text"] == "Tea & Co: hi Ada"
    fetched = rpc.notifications.get_template(STORE, "promo")
    datetime.fromisoformat(fetched["updated_at"])  # ISO-8601, as every RPC time
    assert "+00:00" in fetched["updated_at"]
    assert rpc.notifications.save_template(STORE, fetched)["slug"] == "promo"  # saved back as is
    publish(services.amqp_uri, customer("c7", "gus@example.com", phone="+15005550001"),
            consent("c7", "sms_marketing"))
    known(rpc, "c7", "sms_marketing")
    assert rpc.notifications.preview(STORE, "promo", "c7")["text"] == "our shop: hi Ada"
    twilio.reject_to("+15005550001")  # Twilio 21211: not a valid number
    # No quiet hours (by default 21:00-08:00): run at night, the SMS would be held, not tried.
    rpc.notifications.save_store_settings(STORE, {"quiet_start": "00:00", "quiet_end": "00:00"})
    status = rpc.notifications.bulk_send(STORE, {"customer_ids": ["c7"]}, "promo")
    assert status["total"] == 1
    wait_until(lambda: rpc.notifications.bulk_status(STORE, status["bulk_id"])["done"] == 1,
               timeout=15)
    assert rpc.notifications.bulk_status(STORE, status["bulk_id"])["state"] == "completed"
    [entry] = rpc.notifications.send_log(STORE, "c7")
    assert entry["status"] == "failed" and "21211" in entry["reason"]
    assert [a["outcome"] for a in entry["attempts"]] == ["failed"]  # permanent: not retried


def test_birthdays_and_erasure(services, smtp, twilio, rpc, events):
    events.listen("gdpr", "gdpr.erasure_completed")
    start(services, smtp, twilio)
    today = datetime.now(timezone.utc)
    rpc.notifications.save_workflow(STORE, {
        "workflow_id": "bday", "name": "Birthday", "trigger": {"date": "birthday"},
        "channel": "email", "template": "birthday", "purpose": "marketing"})
    born = {**contract("customer.created").sample, "customer_id": "c8", "email": "hal@example.com",
            "first_name": "Hal", "birthday": today.strftime("%m-%d")}
    publish(services.amqp_uri, event("customer.created", born), consent("c8", "email_marketing"))
    known(rpc, "c8")
    assert rpc.notifications.run_date_rules()["scheduled"] == 1
    assert rpc.notifications.run_date_rules()["scheduled"] == 0  # once a year
    [mail] = smtp.wait_for(1, timeout=15)
    assert mail["Subject"] == "Happy birthday, Hal!"
    request = build_event("gdpr.erasure_requested", store_id=STORE,
                          data={"request_id": "req-n", "customer_ids": ["c8"],
                                "email": "hal@example.com"}).to_message()
    publish(services.amqp_uri, request)
    got = events.wait_for(lambda got: events.of_type("gdpr.erasure_completed"), timeout=15)
    [done] = [e for e in got if e["event_type"] == "gdpr.erasure_completed"]
    assert done["data"]["counts"] == {"contacts": 1, "sends": 1, "suppressions": 0,
                                      "coupons_to_withdraw": 0, "parked_messages": 0}
    [entry] = [d for d in _database(services)["sends"].find({"customer_id": "c8"})]
    assert "to" not in entry and "subject" not in entry and entry["redacted"] is True
    assert "hal@example.com" not in repr(entry)
    from shared.errors import NotFound
    with pytest.raises(NotFound):
        rpc.notifications.export_customer(STORE, "c8")


def test_a_reward_code_email_goes_once_per_reward_and_points_emails_follow_their_kind(
        services, smtp, twilio, rpc):
    """loyalty's events on the broker start their workflows: the reward's code in its email,
    once however often the event comes; points earned are told, points spent are not."""
    start(services, smtp, twilio)
    for slug, text in (("reward_code", "Your code {{ reward.code }} for {{ reward.amount }}"),
                       ("points_earned", "You earned {{ points.delta }} points")):
        rpc.notifications.save_template(STORE, {"slug": slug, "channel": "email",
                                                "subject": slug, "html": text, "text": text})
        rpc.notifications.save_workflow(STORE, {
            "workflow_id": slug.replace("_", "-"), "name": slug, "channel": "email",
            "template": slug, "purpose": "transactional",
            "trigger": {"event": "loyalty.reward_issued" if slug == "reward_code"
                        else "loyalty.points_changed"}})
    publish(services.amqp_uri, customer("c9", "ida@example.com"))
    known(rpc, "c9", purpose=None)
    barrier = EventBarrier(services, "notifications").expect("loyalty.reward_issued",
                                                             "loyalty.points_changed")
    reward = event("loyalty.reward_issued", {**contract("loyalty.reward_issued").sample,
                                              "customer_id": "c9"})
    spent = event("loyalty.points_changed", {**contract("loyalty.points_changed").sample,
                                              "customer_id": "c9", "kind": "redeem",
                                              "delta": -500, "balance": 950})
    earned = event("loyalty.points_changed", {**contract("loyalty.points_changed").sample,
                                               "customer_id": "c9", "kind": "earn",
                                               "delta": 450, "balance": 1400})
    publish(services.amqp_uri, reward, reward, spent, earned)
    mails = smtp.wait_for(2, timeout=15)
    bodies = sorted(m.get_body(("plain",)).get_content().strip() for m in mails)
    assert bodies == ["You earned 450 points", "Your code shop-7kq2m9xwpa for 5.00 EUR"]
    barrier.settled("loyalty.reward_issued", 2)
    barrier.settled("loyalty.points_changed", 2)  # the redemption too: it scheduled nothing
    assert sorted(e["template"] for e in rpc.notifications.send_log(STORE, "c9")) == \
        ["points_earned", "reward_code"]
    assert smtp.received == 2
