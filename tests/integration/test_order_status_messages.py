"""Order-status messages on the real broker, with the local SMTP server and the Twilio
stand-in: a transactional workflow on an order's status ("your order is on its way") sends once
per order and status however the events come, also in the store's quiet hours (which hold
marketing only), and not for a status change the shop made days ago."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services.notifications.service import NotificationsService
from shared.events import build_event, contract
from tests.support import EventBarrier, free_port, publish, wait_until

STORE = "ost"
PHONE = "+447700900124"


@pytest.fixture
def rpc(services, smtp, twilio):
    port = free_port()
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                   SMTP_HOST=smtp.host, SMTP_PORT=str(smtp.port),
                   TWILIO_ACCOUNT_SID=twilio.account_sid, TWILIO_AUTH_TOKEN=twilio.auth_token,
                   TWILIO_FROM_NUMBER=twilio.phone_number, TWILIO_API_BASE=twilio.base_url,
                   NOTIFY_PUBLIC_URL=f"http://127.0.0.1:{port}", NOTIFY_POLL_SECONDS="0.2",
                   NOTIFY_RETRY_SECONDS="0.3")
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy


def _event(event_type: str, data: dict) -> dict:
    return build_event(event_type, store_id=STORE, data=data,
                       occurred_at=datetime.now(timezone.utc)).to_message()


def _order(event_type: str, order_id: str, status: str, old_status: str | None = None,
           modified: datetime | None = None) -> dict:
    now = datetime.now(timezone.utc)
    data = {**contract("order.placed").sample, "customer_id": "c1", "order_id": order_id,
            "number": order_id, "status": status,
            "date_created": (now - timedelta(hours=2)).isoformat(),
            "date_modified": (modified or now).isoformat()}
    if event_type == "order.updated":
        data.update(old_status=old_status, new_status=status, changed_fields=["status"])
    return _event(event_type, data)


def _log(rpc) -> list[dict]:
    return rpc.notifications.send_log(STORE, "c1")


def test_an_order_status_message_goes_once_per_order_and_status_even_in_quiet_hours(
        services, smtp, twilio, rpc):
    now = datetime.now(timezone.utc)
    # Quiet hours from an hour ago to an hour from now, whatever the time of day: they hold
    # marketing SMS, not a customer's news about their order.
    rpc.notifications.save_store_settings(STORE, {
        "name": "Tea & Co", "timezone": "UTC",
        "quiet_start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "quiet_end": (now + timedelta(hours=1)).strftime("%H:%M")})
    rpc.notifications.save_template(STORE, {
        "slug": "order_shipped", "channel": "email",
        "subject": "{{ customer.first_name }}, your order is on its way",
        "html": "<p>It left {{ store.name }} today.</p>", "text": "It left {{ store.name }} today."})
    rpc.notifications.save_workflow(STORE, {
        "workflow_id": "shipped", "name": "Order on its way", "channel": "email",
        "template": "order_shipped", "purpose": "transactional",
        "trigger": {"event": "order.updated", "to_status": "completed"}})
    rpc.notifications.save_workflow(STORE, {
        "workflow_id": "paid", "name": "Payment received", "channel": "sms",
        "template": "win_back_sms", "purpose": "transactional",
        "trigger": {"event": "order.placed", "to_status": "processing"}})
    # no marketing consent at all: transactional messages need none
    barrier = EventBarrier(services, "notifications").expect(
        "customer.created", "order.placed", "order.updated")
    publish(services.amqp_uri, _event("customer.created", {
        **contract("customer.created").sample, "customer_id": "c1", "email": "ada@example.com",
        "first_name": "Ada", "phone": PHONE}))
    barrier.settled("customer.created")

    publish(services.amqp_uri, _order("order.placed", "501", "processing"))
    wait_until(lambda: twilio.messages, timeout=15, message="the payment SMS")
    assert [m.to for m in twilio.messages] == [PHONE]

    completed = _order("order.updated", "501", "completed", "processing")
    publish(services.amqp_uri, completed, completed)  # delivered twice
    [mail] = smtp.wait_for(1, timeout=15)
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "Ada, your order is on its way"
    # Staff set it back and complete it again; another order completed days ago reaches us
    # only now (reconciliation): neither says anything new to the customer.
    publish(services.amqp_uri, _order("order.updated", "501", "processing", "completed"),
            _order("order.updated", "501", "completed", "processing",
                   modified=now + timedelta(seconds=1)),
            _order("order.updated", "502", "completed", "processing",
                   modified=now - timedelta(days=5)))
    barrier.settled("order.placed")
    barrier.settled("order.updated", 5)
    wait_until(lambda: all(e["status"] == "sent" for e in _log(rpc)), timeout=15,
               message="every scheduled send finished")
    assert sorted(e["workflow_id"] for e in _log(rpc)) == ["paid", "shipped"]
    assert (smtp.received, len(twilio.messages)) == (1, 1)
