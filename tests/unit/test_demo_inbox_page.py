"""The demo's mailbox page shows what the mail catcher and the SMS stand-in received, and shows
it as text: a subject, address, body or HTML part carrying markup never becomes the page's."""
from __future__ import annotations

import smtplib
from email.message import EmailMessage

import requests

from demo.inbox_page import InboxPage
from demo.mailbox import SmtpServer
from demo.sms import FakeTwilio

SCRIPT = "<script>alert(1)</script>"


def _send_email(smtp: SmtpServer) -> None:
    message = EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = "ada@example.com"
    message["Subject"] = f"Hello {SCRIPT}"
    message.set_content(f"Plain {SCRIPT}")
    message.add_alternative(f"<p>Rich</p>{SCRIPT}<img src=x onerror=alert(2)>", subtype="html")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.send_message(message)
    smtp.wait_for(1)


def test_the_page_lists_emails_and_sms_and_escapes_what_they_carry():
    with SmtpServer() as smtp, FakeTwilio(seed=3) as twilio:
        page = InboxPage(smtp, twilio).start()
        try:
            empty = requests.get(page.url, timeout=10).text
            assert "Emails (0)" in empty and "SMS (0)" in empty

            _send_email(smtp)
            twilio.client().messages.create(to="+4915112345678", from_=twilio.phone_number,
                                            body=f"Thanks {SCRIPT}")
            index = requests.get(page.url, timeout=10)
            assert index.status_code == 200
            assert "Emails (1)" in index.text and "SMS (1)" in index.text
            assert SCRIPT not in index.text
            assert "Hello &lt;script&gt;" in index.text and "Thanks &lt;script&gt;" in index.text
            assert "default-src 'none'" in index.headers["Content-Security-Policy"]

            shown = requests.get(page.url + "emails/1", timeout=10).text
            assert SCRIPT not in shown and "<img" not in shown
            assert "<iframe sandbox " in shown  # the HTML part, inert, in a frame of its own
            assert "srcdoc=\"&lt;p&gt;Rich&lt;/p&gt;&lt;script&gt;" in shown
            assert "<pre>Plain &lt;script&gt;" in shown

            emails = requests.get(page.url + "emails.json", timeout=10).json()
            assert [(m["number"], m["to"], m["subject"]) for m in emails] == \
                [(1, "ada@example.com", f"Hello {SCRIPT}")]
            sms = requests.get(page.url + "sms.json", timeout=10).json()
            assert [(m["to"], m["body"]) for m in sms] == [("+4915112345678", f"Thanks {SCRIPT}")]

            for missing in ("emails/2", "emails/0", "emails/" + "9" * 30, "emails/x", "other"):
                assert requests.get(page.url + missing, timeout=10).status_code == 404, missing
        finally:
            page.stop()
