"""One-click unsubscribe and the preference page on the real broker, with notifications and
gdpr running and the local SMTP server: the link is taken from the email that arrived."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.gdpr.service import GdprService
from services.notifications.service import NotificationsService
from shared.events import build_event, contract
from tests.support import free_port, publish, wait_until

STORE = "un"
# A "." is outside the token's alphabet (base64url), so "the id is not in the link" is
# decided by the link's make-up, never by what a random token happens to spell.
CUSTOMER = "cust.1001"
SECRET = "an-integration-link-secret-0123456789abcdef"


@pytest.fixture
def rpc(services):
    with ClusterRpcProxy({"AMQP_URI": services.amqp_uri}, timeout=20) as proxy:
        yield proxy


def start(services, smtp) -> str:
    port = free_port()
    services.start(NotificationsService, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                   SMTP_HOST=smtp.host, SMTP_PORT=str(smtp.port),
                   NOTIFY_PUBLIC_URL=f"http://127.0.0.1:{port}", NOTIFY_LINK_SECRET=SECRET,
                   NOTIFY_POLL_SECONDS="0.2")
    services.start(GdprService, GDPR_PROCESS_SECONDS="3600")
    return f"http://127.0.0.1:{port}"


def event(event_type: str, data: dict) -> dict:
    return build_event(event_type, store_id=STORE, data=data,
                       occurred_at=datetime.now(timezone.utc)).to_message()


def subscribed_customer(services, rpc, customer_id: str, email: str) -> None:
    publish(services.amqp_uri,
            event("customer.created", {**contract("customer.created").sample,
                                       "customer_id": customer_id, "email": email,
                                       "first_name": "Ada"}),
            event("consent.changed", {"customer_id": customer_id, "purpose": "email_marketing",
                                      "granted": True, "source": "checkout",
                                      "changed_at": datetime.now(timezone.utc).isoformat(),
                                      "origin": "gdpr"}))

    def known():
        try:
            contact = rpc.notifications.export_customer(STORE, customer_id)["contact"]
        except Exception:
            return False
        # The address and the consent come on their own queues, the address in a batch.
        return contact.get("email") and (contact.get("consent") or {}).get(
            "email_marketing", {}).get("granted")
    wait_until(known, timeout=10, message=f"{customer_id} subscribed in the projection")


def send(rpc, customer_id: str, template: str, purpose: str, bulk_id: str) -> None:
    rpc.notifications.bulk_send(STORE, {"customer_ids": [customer_id]}, template, None, purpose,
                                bulk_id)


def outcome(rpc, bulk_id: str) -> dict:
    wait_until(lambda: rpc.notifications.bulk_status(STORE, bulk_id)["state"] == "completed",
               timeout=15, message=f"bulk send {bulk_id} finished")
    return rpc.notifications.bulk_status(STORE, bulk_id)["by_status"]


def test_the_one_click_post_from_the_header_stops_marketing_but_not_transactional_email(
        services, smtp, rpc):
    base = start(services, smtp)
    rpc.notifications.save_store_settings(STORE, {"name": "Tea & Co"})
    subscribed_customer(services, rpc, CUSTOMER, "ada@example.com")
    send(rpc, CUSTOMER, "win_back", "marketing", "first")
    [mail] = smtp.wait_for(1, timeout=15)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = mail["List-Unsubscribe"].strip("<>")
    assert url.startswith(f"{base}/unsubscribe/") and CUSTOMER not in url
    assert url in mail.get_body(("plain",)).get_content()

    # A link scanner opening it unsubscribes nobody; a forged token changes nothing.
    opened = requests.get(url, timeout=10)
    assert opened.status_code == 200 and "One-Click" in opened.text
    token = url.rsplit("/", 1)[1]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    refused = requests.post(f"{base}/unsubscribe/{forged}",
                            data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert refused.status_code == 404
    send(rpc, CUSTOMER, "win_back", "marketing", "after-scans")
    assert outcome(rpc, "after-scans") == {"sent": 1}
    smtp.wait_for(2, timeout=15)

    # The mail client's one-click POST (RFC 8058: multipart/form-data).
    done = requests.post(url, files={"List-Unsubscribe": (None, "One-Click")}, timeout=10)
    assert done.status_code == 200
    contact = rpc.notifications.export_customer(STORE, CUSTOMER)["contact"]
    assert contact["consent"]["email_marketing"]["granted"] is False
    send(rpc, CUSTOMER, "win_back", "marketing", "after")
    assert outcome(rpc, "after") == {"refused": 1}
    send(rpc, CUSTOMER, "welcome", "transactional", "receipt")
    assert outcome(rpc, "receipt") == {"sent": 1}
    received = smtp.wait_for(3, timeout=15)
    assert received[-1]["Subject"].startswith("Welcome") and received[-1]["List-Unsubscribe"] is None

    # gdpr holds the change in the customer's consent history, once, however often it is posted.
    assert requests.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code == 200

    def recorded():
        history = rpc.gdpr.get_consent(STORE, CUSTOMER)["history"]
        return [h for h in history if h["source"] == "unsubscribe_link"]
    wait_until(recorded, timeout=10, message="gdpr recorded the unsubscribe")
    assert [(h["granted"], h["actor"]) for h in recorded()] == [(False, "notifications")]
    assert rpc.gdpr.get_consent(STORE, CUSTOMER)["purposes"]["email_marketing"]["granted"] is False


def test_forget_me_files_an_erasure_request_waiting_for_verification(services, smtp, rpc):
    base = start(services, smtp)
    subscribed_customer(services, rpc, "c2", "bo@example.com")
    send(rpc, "c2", "win_back", "marketing", "m")
    [mail] = smtp.wait_for(1, timeout=15)
    text = mail.get_body(("plain",)).get_content()
    preferences = next(w for w in text.split() if w.startswith(f"{base}/preferences/"))
    page = requests.get(preferences, timeout=10)
    assert page.status_code == 200 and 'action="/forget/' in page.text
    forget = page.text.split('action="/forget/')[1].split('"')[0]
    answer = requests.post(f"{base}/forget/{forget}", timeout=10)
    assert answer.status_code == 200
    [request] = rpc.gdpr.list_requests(STORE)
    assert (request["type"], request["state"], request["email"]) == (
        "erasure", "received", "bo@example.com")
    assert request["request_id"] in answer.text
    assert requests.post(f"{base}/forget/{forget}", timeout=10).status_code == 200
    assert len(rpc.gdpr.list_requests(STORE)) == 1  # asked twice, filed once
