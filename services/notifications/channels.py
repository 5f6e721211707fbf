"""The two ways a message leaves: SMTP for email, Twilio's Messages API for SMS.

Each channel answers the provider's id for the message, or raises DeliveryFailed saying
whether the failure is transient (connection refused, a 4xx SMTP reply, Twilio 429 or 5xx:
retry later) or permanent (a rejected address, an invalid or unsubscribed number: never retry).
"""
from __future__ import annotations

import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from shared.email_addresses import mailbox, recipient


class DeliveryFailed(Exception):
    """`code` is the provider's (an SMTP reply code, a Twilio error code) where it gave one;
    `recipient_refused` says the SMTP server refused the address itself (at RCPT TO), which
    is what makes a permanent failure suppress the address."""

    def __init__(self, reason: str, transient: bool, code: int | None = None,
                 recipient_refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.code = code
        self.recipient_refused = recipient_refused


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # "none", "starttls" or "tls"
    username: str
    password: str
    timeout: float
    sender: str


class EmailChannel:
    """One SMTP connection, kept open between messages and reopened when the server drops it."""

    def __init__(self, settings: SmtpSettings) -> None:
        if settings.security not in ("none", "starttls", "tls"):
            raise ValueError(f"SMTP_SECURITY must be none, starttls or tls, not {settings.security!r}")
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        if s.username:
            smtp.login(s.username, s.password)
        return smtp

    def build(self, to: str, subject: str, text: str, html: str | None, sender: str | None,
              message_id: str, headers: dict[str, str] | None = None) -> EmailMessage:
        """The message to exactly one recipient, its addresses built by the standard library
        (never pasted into a header). A message that cannot be built never can be: it fails
        for good (DeliveryFailed, not transient), before anything is sent."""
        to_address = recipient(to)
        if to_address is None:
            raise DeliveryFailed(f"the email address is not one valid address: {to!r}"[:200],
                                 transient=False)
        from_address = mailbox(sender, strict=True) if sender else mailbox(self.settings.sender,
                                                                           strict=False)
        if from_address is None:
            raise DeliveryFailed(f"the From address is not one valid address: "
                                 f"{sender or self.settings.sender!r}"[:200], transient=False)
        message = EmailMessage()
        try:
            message["From"] = from_address
            message["To"] = to_address
            message["Subject"] = subject
            message["Date"] = formatdate(localtime=False)
            message["Message-ID"] = message_id
            for name, value in (headers or {}).items():
                message[name] = value
        except ValueError as exc:  # a header value with CR/LF (stored before it was refused)
            raise DeliveryFailed(f"the message's headers are not valid: {exc}", transient=False
                                 ) from None
        message.set_content(text)
        if html:
            message.add_alternative(html, subtype="html")
        return message

    def send(self, message: EmailMessage) -> str:
        for attempt in (1, 2):  # a kept connection may have been closed by the server
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                self._smtp.send_message(message)
                return str(message["Message-ID"])
            except smtplib.SMTPServerDisconnected as exc:
                self.close()
                if attempt == 2:
                    raise DeliveryFailed(f"SMTP server disconnected: {exc}", transient=True) from None
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                self._reset()
                raise DeliveryFailed(f"recipient refused: {code} {_text(reply)}",
                                     transient=400 <= code < 500, code=code,
                                     recipient_refused=True) from None
            except smtplib.SMTPResponseException as exc:
                self._reset()
                transient = 400 <= exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPAuthenticationError)
                raise DeliveryFailed(f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}",
                                     transient=transient, code=exc.smtp_code) from None
            except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, reset
                self.close()
                raise DeliveryFailed(f"SMTP connection to {self.settings.host}:{self.settings.port} "
                                     f"failed: {_why(exc)}", transient=True) from None
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                try:
                    smtp.close()
                except OSError:
                    pass


def new_message_id(send_id: str, domain: str) -> str:
    """A Message-ID naming the send, so a message found in a mailbox leads back to the log."""
    safe = "".join(c if c.isalnum() or c in "-._" else "." for c in send_id)[:120]
    return make_msgid(idstring=safe, domain=domain or socket.getfqdn())


def _why(exc: Exception) -> str:
    """`Connection refused`, the same with or without eventlet's sockets (which say
    `[Errno 111] ECONNREFUSED`)."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    from_number: str
    api_base: str  # https://api.twilio.com, or a local stand-in in tests
    timeout: float


class BaseUrlHttpClient(TwilioHttpClient):
    """Twilio's HTTP client, sending what it addresses to *.twilio.com to another root instead
    (TWILIO_API_BASE: a regional proxy, or the local stand-in the tests use). twilio 9 has no
    base-URL setting, and `http_client` is the Client's public way in."""

    def __init__(self, base_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        if self.base_url and parts.hostname and parts.hostname.endswith(".twilio.com"):
            url = self.base_url + url[len(f"{parts.scheme}://{parts.netloc}"):]
        return super().request(method, url, *args, **kwargs)


# Twilio error codes that will not change on a retry (invalid number, unsubscribed, blocked...).
PERMANENT_TWILIO_CODES = {21211, 21408, 21610, 21612, 21614, 30003, 30004, 30005, 30006, 30007}


class SmsChannel:
    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self._client: Client | None = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.account_sid and self.settings.auth_token
                    and self.settings.from_number)

    def _twilio(self) -> Client:
        if self._client is None:
            base = self.settings.api_base.rstrip("/")
            http = (TwilioHttpClient(timeout=self.settings.timeout)
                    if base in ("", "https://api.twilio.com")
                    else BaseUrlHttpClient(base, timeout=self.settings.timeout))
            self._client = Client(self.settings.account_sid, self.settings.auth_token,
                                  http_client=http)
        return self._client

    def send(self, to: str, body: str, status_callback: str | None) -> str:
        if not self.configured:
            raise DeliveryFailed("SMS is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "
                                 "TWILIO_FROM_NUMBER)", transient=True)
        kwargs = {"to": to, "from_": self.settings.from_number, "body": body}
        if status_callback:
            kwargs["status_callback"] = status_callback
        try:
            message = self._twilio().messages.create(**kwargs)
        except TwilioRestException as exc:
            transient = exc.status == 429 or exc.status >= 500 or (
                exc.code is None and exc.status >= 500)
            if exc.code in PERMANENT_TWILIO_CODES:
                transient = False
            raise DeliveryFailed(f"Twilio {exc.status} error {exc.code}: {exc.msg}",
                                 transient=transient, code=exc.code) from None
        except (requests.RequestException, TwilioException, OSError) as exc:
            raise DeliveryFailed(f"Twilio unreachable: {exc!r}", transient=True) from None
        return str(message.sid)
