"""Where the demo's reader sees what the companion sent: a small web page listing every email
the mail catcher (demo/mailbox.py) received, each readable, and every SMS the Twilio stand-in
(demo/sms.py) took; `/emails.json` and `/sms.json` say the same for scripts.

What is shown came from the services, so it is escaped, and an email's HTML is shown inside a
sandboxed frame (no script, no same-origin access)."""
from __future__ import annotations

import html
import json
import threading
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from demo.mailbox import SmtpServer
from demo.sms import FakeTwilio

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>{refresh}
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem;
text-align:left;vertical-align:top}}iframe{{width:100%;height:30rem;border:1px solid #ccc}}
pre{{white-space:pre-wrap;background:#f6f6f6;padding:1rem}}</style></head>
<body>{body}</body></html>"""


def _e(value: Any) -> str:
    return html.escape(str(value if value is not None else ""))


def email_summary(number: int, message: EmailMessage) -> dict:
    return {"number": number, "date": message["Date"], "from": message["From"],
            "to": message["To"], "subject": message["Subject"]}


def _part(message: EmailMessage, kind: str) -> str | None:
    part = message.get_body(preferencelist=(kind,))
    return part.get_content() if part is not None else None


class InboxPage:
    """The page's HTTP server on 127.0.0.1 (a free port unless given)."""

    def __init__(self, smtp: SmtpServer, twilio: FakeTwilio, port: int = 0) -> None:
        self.smtp = smtp
        self.twilio = twilio
        handler = type("InboxHandler", (_Handler,), {"page": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="inbox-page",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> "InboxPage":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------- what it shows
    def emails(self) -> list[dict]:
        return [email_summary(n, m) for n, m in enumerate(self.smtp.messages, start=1)]

    def sms(self) -> list[dict]:
        return [{"number": n, "date": m.date_created.isoformat(), "to": m.to, "from": m.from_,
                 "body": m.body, "status": m.status}
                for n, m in enumerate(list(self.twilio.messages), start=1)]

    def index(self) -> str:
        emails, sms = self.emails(), self.sms()
        mail_rows = "".join(
            f"<tr><td>{m['number']}</td><td>{_e(m['date'])}</td><td>{_e(m['to'])}</td>"
            f"<td><a href=\"/emails/{m['number']}\">{_e(m['subject'] or '(no subject)')}</a></td>"
            "</tr>" for m in reversed(emails)) or "<tr><td colspan=4>None yet.</td></tr>"
        sms_rows = "".join(
            f"<tr><td>{m['number']}</td><td>{_e(m['date'])}</td><td>{_e(m['to'])}</td>"
            f"<td>{_e(m['body'])}</td></tr>" for m in reversed(sms)) \
            or "<tr><td colspan=4>None yet.</td></tr>"
        body = (f"<h1>Demo mailbox</h1><p>What the companion sent, newest first; this page "
                f"reloads every 10 seconds.</p>"
                f"<h2 id=\"emails\">Emails ({len(emails)})</h2><table><tr><th>#</th><th>Date</th>"
                f"<th>To</th><th>Subject</th></tr>{mail_rows}</table>"
                f"<h2 id=\"sms\">SMS ({len(sms)})</h2><table><tr><th>#</th><th>Sent</th>"
                f"<th>To</th><th>Text</th></tr>{sms_rows}</table>")
        return PAGE.format(title="Demo mailbox", refresh='<meta http-equiv="refresh" content="10">',
                           body=body)

    def email_page(self, number: int) -> str | None:
        messages = self.smtp.messages
        if not 1 <= number <= len(messages):
            return None
        message = messages[number - 1]
        headers = "".join(f"<tr><th>{_e(name)}</th><td>{_e(message[name])}</td></tr>"
                          for name in ("Date", "From", "To", "Subject", "List-Unsubscribe")
                          if message[name])
        html_part, text_part = _part(message, "html"), _part(message, "plain")
        shown = ""
        if html_part is not None:
            shown += (f"<h2>HTML</h2><iframe sandbox title=\"the email\" "
                      f"srcdoc=\"{html.escape(html_part, quote=True)}\"></iframe>")
        if text_part is not None:
            shown += f"<h2>Text</h2><pre>{_e(text_part)}</pre>"
        body = (f"<p><a href=\"/\">&larr; all messages</a></p><h1>{_e(message['Subject'])}</h1>"
                f"<table>{headers}</table>{shown}")
        return PAGE.format(title=_e(message["Subject"]), refresh="", body=body)


class _Handler(BaseHTTPRequestHandler):
    page: InboxPage

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._answer(200, "text/html; charset=utf-8", self.page.index())
        elif path == "/emails.json":
            self._answer(200, "application/json", json.dumps(self.page.emails()))
        elif path == "/sms.json":
            self._answer(200, "application/json", json.dumps(self.page.sms()))
        elif path.startswith("/emails/") and path[len("/emails/"):].isdigit() \
                and len(path) < 20:
            shown = self.page.email_page(int(path[len("/emails/"):]))
            if shown is None:
                self._answer(404, "text/plain; charset=utf-8", "no such email\n")
            else:
                self._answer(200, "text/html; charset=utf-8", shown)
        else:
            self._answer(404, "text/plain; charset=utf-8", "not found\n")

    def _answer(self, status: int, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                                    "frame-src 'self'; img-src data:")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the terminal calm
        pass
