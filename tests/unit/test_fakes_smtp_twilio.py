"""The SMTP and Twilio stand-ins behave like the real services, seen through the real clients.

smtplib and the twilio Client are used unmodified: what they raise here is what the
notifications service will see in production for the same failure.
"""
from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from demo.mailbox import SmtpServer, TlsUnavailable, tls_unavailable_reason
from demo.sms import FakeTwilio, LocalTwilioHttpClient, num_segments, sign

SID = re.compile(r"^SM[0-9a-f]{32}$")
CUSTOMER = "+4915112345678"


def _mail(to: str = "anna@example.net", subject: str = "Your order #1042 shipped ✓",
          bcc: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = to
    if bcc:
        message["Bcc"] = bcc
    message["Subject"] = subject
    message.set_content("Hallo Anna, dein Paket ist unterwegs.")
    return message


# --------------------------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------------------------

@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def _tls_server(**kwargs: Any) -> SmtpServer:
    try:
        return SmtpServer(**kwargs)
    except TlsUnavailable as exc:
        pytest.skip(str(exc))


def test_a_sent_message_is_captured_with_its_envelope(smtp: SmtpServer) -> None:
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        refused = client.send_message(_mail(bcc="audit@example.com"))
    assert refused == {}
    [mail] = smtp.wait_for(1)
    assert mail["Subject"] == "Your order #1042 shipped ✓"
    assert mail["Bcc"] is None  # smtplib moves Bcc into the envelope
    assert mail.envelope_from == "shop@example.com"
    assert mail.envelope_to == ("anna@example.net", "audit@example.com")
    assert mail.get_content() == "Hallo Anna, dein Paket ist unterwegs.\n"
    assert b"Subject: " in mail.raw and (mail.tls, mail.login) == (False, None)
    assert (smtp.received, smtp.connections) == (1, 1)


def test_refused_connections_are_421_greetings_then_service_resumes(smtp: SmtpServer) -> None:
    smtp.refuse_connections(2)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPConnectError) as caught:
            smtplib.SMTP(smtp.host, smtp.port)
        assert caught.value.smtp_code == 421
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        client.send_message(_mail())
    assert smtp.wait_for(1) and smtp.connections == 3


def test_a_dropped_connection_is_server_disconnected(smtp: SmtpServer) -> None:
    smtp.refuse_connections(1, how="drop")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtplib.SMTP(smtp.host, smtp.port)


def test_paused_server_refuses_at_tcp_level_and_cuts_open_sessions(smtp: SmtpServer) -> None:
    held = smtplib.SMTP(smtp.host, smtp.port)
    held.ehlo()
    port = smtp.port
    smtp.pause()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(smtp.host, port)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        held.send_message(_mail())
    smtp.resume()
    assert smtp.port == port
    with smtplib.SMTP(smtp.host, port) as client:
        client.send_message(_mail())
    assert len(smtp.wait_for(1)) == 1


def test_a_rejected_recipient_is_refused_permanently(smtp: SmtpServer) -> None:
    smtp.reject_recipient("Gone@Example.net")
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            client.send_message(_mail(to="gone@example.net"))
        code, text = caught.value.recipients["gone@example.net"]
        assert code == 550 and b"5.1.1" in text
        # With another recipient left, smtplib delivers and reports the refused one.
        refused = client.send_message(_mail(to="gone@example.net, anna@example.net"))
    assert refused == {"gone@example.net": (550, refused["gone@example.net"][1])}
    [mail] = smtp.wait_for(1)
    assert mail.envelope_to == ("anna@example.net",)


def test_a_recipient_can_be_refused_transiently_and_accepted_again(smtp: SmtpServer) -> None:
    smtp.reject_recipient("busy@example.net", code=450)
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            client.send_message(_mail(to="busy@example.net"))
        assert caught.value.recipients["busy@example.net"][0] == 450
        smtp.accept_recipient("busy@example.net")
        client.send_message(_mail(to="busy@example.net"))
    assert smtp.wait_for(1)[0].envelope_to == ("busy@example.net",)


def test_failed_data_is_a_transient_error_and_the_connection_stays_usable(smtp: SmtpServer) -> None:
    smtp.fail_data(2)
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as caught:
                client.send_message(_mail())
            assert caught.value.smtp_code == 451
        client.send_message(_mail())
    assert (len(smtp.wait_for(1)), smtp.connections) == (1, 1)


def test_without_keeping_messages_only_the_count_is_kept() -> None:
    with SmtpServer(keep_messages=False) as smtp, smtplib.SMTP(smtp.host, smtp.port) as client:
        for n in range(300):
            client.sendmail("shop@example.com", [f"c{n}@example.net"], b"Subject: x\r\n\r\nhi\r\n")
        assert smtp.wait_for(300) == [] and smtp.received == 300


def test_many_clients_at_once_are_all_served(smtp: SmtpServer) -> None:
    def send(n: int) -> None:
        with smtplib.SMTP(smtp.host, smtp.port) as client:
            client.send_message(_mail(to=f"c{n}@example.net"))

    with ThreadPoolExecutor(max_workers=40) as pool:
        list(pool.map(send, range(40)))
    assert len({m.envelope_to for m in smtp.wait_for(40)}) == 40


def test_wait_for_says_what_arrived(smtp: SmtpServer) -> None:
    with pytest.raises(TimeoutError, match="expected 1 messages within 0.05 s, got 0"):
        smtp.wait_for(1, timeout=0.05)


def test_auth_is_required_when_configured_and_absent_otherwise() -> None:
    with SmtpServer(auth=("mailer", "s3cret")) as smtp, smtplib.SMTP(smtp.host, smtp.port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
            client.send_message(_mail())
        assert caught.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            client.login("mailer", "wrong")
        assert wrong.value.smtp_code == 535
        client.login("mailer", "s3cret")
        client.send_message(_mail())
        assert smtp.wait_for(1)[0].login == "mailer"
    with SmtpServer() as smtp, smtplib.SMTP(smtp.host, smtp.port) as client:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login("mailer", "s3cret")


def test_starttls_is_offered_required_and_verifiable() -> None:
    with _tls_server(security="starttls", auth=("mailer", "s3cret")) as smtp:
        with smtplib.SMTP(smtp.host, smtp.port) as client:
            with pytest.raises(smtplib.SMTPNotSupportedError):  # no AUTH before TLS
                client.login("mailer", "s3cret")
            with pytest.raises(smtplib.SMTPSenderRefused) as caught:
                client.send_message(_mail())
            assert caught.value.smtp_code == 530
        with smtplib.SMTP(smtp.host, smtp.port) as client:
            with pytest.raises(ssl.SSLCertVerificationError):  # a real, self-signed certificate
                client.starttls(context=ssl.create_default_context())
        with smtplib.SMTP("localhost", smtp.port) as client:
            client.starttls(context=smtp.client_ssl_context())
            client.login("mailer", "s3cret")
            client.send_message(_mail())
        [mail] = smtp.wait_for(1)
        assert (mail.tls, mail.login) == (True, "mailer")


def test_ssl_cert_file_makes_a_default_context_trust_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """For code that builds `ssl.create_default_context()` itself, as a service does."""
    with _tls_server(security="tls") as smtp:
        monkeypatch.setenv("SSL_CERT_FILE", str(smtp.cert_path))
        with smtplib.SMTP_SSL(smtp.host, smtp.port, context=ssl.create_default_context()) as client:
            client.send_message(_mail())
        assert smtp.wait_for(1)[0].tls is True


def test_implicit_tls_speaks_smtps() -> None:
    with _tls_server(security="tls") as smtp:
        with smtplib.SMTP_SSL(smtp.host, smtp.port, context=smtp.client_ssl_context()) as client:
            client.send_message(_mail())
        assert smtp.wait_for(1)[0].tls is True


def test_tls_availability_is_reported() -> None:
    reason = tls_unavailable_reason()
    assert reason is None or "openssl" in reason


def test_the_server_loop_does_not_leak_into_the_callers_greenlets(smtp: SmtpServer) -> None:
    """Under eventlet, aiosmtpd's own Controller would run its asyncio loop as a greenlet of this
    hub, where every other greenlet then sees it as the running loop."""
    async def answer() -> int:
        return 42

    assert asyncio.run(answer()) == 42
    thread = smtp._controller._thread if smtp._controller else None
    assert thread is not None and thread.native_id != threading.get_native_id()


# --------------------------------------------------------------------------------------------
# Twilio
# --------------------------------------------------------------------------------------------

def local_twilio_client(base_url: str, account_sid: str, auth_token: str, **kwargs: Any) -> Client:
    """The production-side override: the public `http_client` argument and the minimal subclass
    LocalTwilioHttpClient (demo/sms.py's module doc shows its whole code)."""
    return Client(account_sid, auth_token, http_client=LocalTwilioHttpClient(base_url), **kwargs)


class _Receiver:
    """The service's webhook endpoints, reduced to what Twilio needs: validate and record."""

    def __init__(self, auth_token: str) -> None:
        self.validator = RequestValidator(auth_token)
        self.received: list[tuple[str, dict[str, str], str | None, bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                params = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                url = receiver.base_url + self.path
                signature = self.headers.get("X-Twilio-Signature")
                valid = signature is not None and receiver.validator.validate(url, params, signature)
                receiver.received.append((self.path, params, signature, valid))
                self.send_response(204 if valid else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fixed = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    with FakeTwilio(seed=3, clock=lambda: fixed) as fake:
        yield fake


@pytest.fixture
def receiver(twilio: FakeTwilio) -> Iterator[_Receiver]:
    running = _Receiver(twilio.auth_token)
    yield running
    running.close()


def test_the_real_client_sends_an_sms_through_the_fake(twilio: FakeTwilio) -> None:
    client = local_twilio_client(twilio.base_url, twilio.account_sid, twilio.auth_token)
    sent = client.messages.create(to="+49 151 1234-5678", from_=twilio.phone_number,
                                  body="Your order #1042 shipped",
                                  status_callback="https://companion.example/twilio/status")
    assert SID.match(sent.sid) and sent.status == "queued"
    assert (sent.to, sent.from_, sent.body) == (CUSTOMER, twilio.phone_number, "Your order #1042 shipped")
    assert sent.date_created == datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
    assert (sent.num_segments, sent.direction, sent.account_sid) == ("1", "outbound-api", twilio.account_sid)
    [recorded] = twilio.messages
    assert (recorded.sid, recorded.to, recorded.status_callback, recorded.auth_username) == (
        sent.sid, CUSTOMER, "https://companion.example/twilio/status", twilio.account_sid)
    assert client.messages(sent.sid).fetch().status == "queued"


def test_the_override_survives_a_configured_region_and_edge(twilio: FakeTwilio) -> None:
    client = local_twilio_client(twilio.base_url, twilio.account_sid, twilio.auth_token,
                                 region="ie1", edge="dublin")
    sent = client.messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert sent.sid == twilio.messages[0].sid


def test_setting_the_api_domains_base_url_also_reaches_the_fake(
        twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other way in 9.13: Client.api is created once and its Domain reads `base_url` on every
    request. Not a documented setting, and mangled when a region or edge is configured (also
    through TWILIO_REGION/TWILIO_EDGE), which the http_client override is not."""
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    client = Client(twilio.account_sid, twilio.auth_token)
    client.api.base_url = twilio.base_url
    sent = client.messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert sent.sid == twilio.messages[0].sid


def test_sids_are_repeatable_from_the_seed() -> None:
    sids = []
    for _ in range(2):
        with FakeTwilio(seed=9) as fake:
            sids.append(fake.client().messages.create(to=CUSTOMER, from_=fake.phone_number,
                                                      body="hi").sid)
    assert sids[0] == sids[1]


def test_a_messaging_service_send_is_accepted_without_from(twilio: FakeTwilio) -> None:
    sent = twilio.client().messages.create(to=CUSTOMER, body="hi",
                                           messaging_service_sid="MG" + "a" * 32)
    assert (sent.status, sent.from_, sent.messaging_service_sid) == ("accepted", None, "MG" + "a" * 32)


def test_api_key_credentials_are_accepted(twilio: FakeTwilio) -> None:
    twilio.api_keys["SK" + "b" * 32] = "key-secret"
    client = Client("SK" + "b" * 32, "key-secret", account_sid=twilio.account_sid,
                    http_client=twilio.http_client())
    client.messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert twilio.messages[0].auth_username == "SK" + "b" * 32


def test_wrong_credentials_are_401_20003(twilio: FakeTwilio) -> None:
    client = local_twilio_client(twilio.base_url, twilio.account_sid, "not-the-token")
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert twilio.messages == []


@pytest.mark.parametrize("status,code", [(429, 20429), (500, 20500), (503, 20503)])
def test_injected_transient_errors_then_success(twilio: FakeTwilio, status: int, code: int) -> None:
    client = twilio.client()
    twilio.fail_next(2, status=status)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
        assert (caught.value.status, caught.value.code) == (status, code)
    client.messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert [s for _, _, s in twilio.requests_log] == [status, status, 201]


def test_many_clients_at_once_are_all_answered(twilio: FakeTwilio) -> None:
    def send(n: int) -> str:
        return twilio.client().messages.create(to=f"+49151000000{n:02d}", from_=twilio.phone_number,
                                               body="hi").sid

    with ThreadPoolExecutor(max_workers=40) as pool:
        sids = list(pool.map(send, range(40)))
    assert len(set(sids)) == len(twilio.messages) == 40


def test_a_dropped_request_is_a_connection_error_not_a_twilio_error(twilio: FakeTwilio) -> None:
    twilio.drop_next(1)
    with pytest.raises(requests.exceptions.ConnectionError):
        twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")


def test_invalid_to_numbers_are_permanent_21211(twilio: FakeTwilio) -> None:
    client = twilio.client()
    twilio.reject_to("+4915100000000")
    for to in ("+4915100000000", "12345"):
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(to=to, from_=twilio.phone_number, body="hi")
        assert (caught.value.status, caught.value.code) == (400, 21211)
        assert f"The 'To' number {to} is not a valid phone number." in caught.value.msg


def test_an_unsubscribed_recipient_is_21610(twilio: FakeTwilio) -> None:
    twilio.unsubscribe(CUSTOMER)
    with pytest.raises(TwilioRestException) as caught:
        twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert (caught.value.status, caught.value.code) == (400, 21610)
    assert "unsubscribed recipient" in caught.value.msg


def test_a_status_callback_is_signed_like_twilio(twilio: FakeTwilio, receiver: _Receiver) -> None:
    url = receiver.base_url + "/twilio/status?store=7"
    sent = twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi",
                                           status_callback=url)
    answer = twilio.send_status_callback(sent.sid, "delivered")
    assert (answer.status, answer.body) == (204, "")
    path, params, signature, valid = receiver.received[0]
    assert valid and path == "/twilio/status?store=7"
    assert params == {"MessageSid": sent.sid, "SmsSid": sent.sid, "MessageStatus": "delivered",
                      "SmsStatus": "delivered", "AccountSid": twilio.account_sid,
                      "To": CUSTOMER, "From": twilio.phone_number, "ApiVersion": "2010-04-01"}
    assert RequestValidator(twilio.auth_token).validate(url, params, signature)
    assert signature == sign(url, params, twilio.auth_token)
    assert twilio.client().messages(sent.sid).fetch().status == "delivered"


def test_a_failed_status_carries_an_error_code(twilio: FakeTwilio, receiver: _Receiver) -> None:
    sent = twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    answer = twilio.send_status_callback(sent.sid, "failed", receiver.base_url + "/s",
                                         twilio.auth_token)
    assert answer.status == 204 and answer.params["ErrorCode"] == "30008"
    assert twilio.message(sent.sid).error_code == 30008


def test_bad_or_missing_signatures_do_not_validate(twilio: FakeTwilio, receiver: _Receiver) -> None:
    sent = twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    url = receiver.base_url + "/twilio/status"
    assert twilio.send_status_callback(sent.sid, "sent", url, signature="bad").status == 403
    assert twilio.send_status_callback(sent.sid, "sent", url, signature="").status == 403
    assert twilio.send_status_callback(sent.sid, "sent", url, auth_token="other").status == 403
    assert [(sig, valid) for _, _, sig, valid in receiver.received][:2] == [("bad", False), (None, False)]
    params = receiver.received[2][1]
    assert not RequestValidator(twilio.auth_token).validate(url, params, "bad")


def test_a_webhook_can_be_signed_for_the_public_url(twilio: FakeTwilio, receiver: _Receiver) -> None:
    """Behind a proxy the service validates against the URL Twilio was given, not its own."""
    public = "https://companion.example/twilio/inbound"
    answer = twilio.send_inbound(receiver.base_url + "/twilio/inbound", CUSTOMER,
                                 twilio.phone_number, "hi", signed_url=public)
    assert answer.status == 403  # the receiver checks its own URL
    assert RequestValidator(twilio.auth_token).validate(public, answer.params, answer.signature)


def test_inbound_stop_and_start_change_the_subscription(twilio: FakeTwilio, receiver: _Receiver) -> None:
    url = receiver.base_url + "/twilio/inbound"
    answer = twilio.send_inbound(url, CUSTOMER, twilio.phone_number, " stop ")
    assert answer.status == 204 and twilio.is_unsubscribed(CUSTOMER)
    _, params, _, valid = receiver.received[0]
    assert valid and SID.match(params["MessageSid"])
    assert {k: params[k] for k in ("AccountSid", "From", "To", "Body", "NumMedia")} == {
        "AccountSid": twilio.account_sid, "From": CUSTOMER, "To": twilio.phone_number,
        "Body": " stop ", "NumMedia": "0"}
    with pytest.raises(TwilioRestException) as caught:
        twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="hi")
    assert caught.value.code == 21610
    assert twilio.send_inbound(url, CUSTOMER, twilio.phone_number, "START").status == 204
    assert not twilio.is_unsubscribed(CUSTOMER)
    twilio.client().messages.create(to=CUSTOMER, from_=twilio.phone_number, body="welcome back")
    assert twilio.send_inbound(url, CUSTOMER, twilio.phone_number, "hi", signature="bad").status == 403


def test_segments_follow_gsm7_and_ucs2() -> None:
    assert [num_segments("a" * 160), num_segments("a" * 161), num_segments("€" * 80)] == [1, 2, 1]
    assert [num_segments("😀" * 35), num_segments("😀" * 36)] == [1, 2]
