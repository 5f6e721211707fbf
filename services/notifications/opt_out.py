"""What a message carries so its recipient can say no: in a marketing email, their own signed
unsubscribe and preference links (in the body, whatever the store's template says) and the
RFC 8058 one-click headers; in a marketing SMS, the store's opt-out text; in the double opt-in
confirmation, its confirmation link. Transactional messages carry no marketing unsubscribe.
Pure: the caller gives the links and the store's settings.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, replace
from urllib.parse import quote

from services.notifications.templates import Rendered

UNSUBSCRIBE_WORD = "Unsubscribe"


@dataclass(frozen=True)
class MessageLinks:
    """The links one message offers (empty strings where it offers none)."""

    unsubscribe_url: str = ""
    preferences_url: str = ""
    confirm_url: str = ""

    def context(self) -> dict:
        return {"unsubscribe_url": self.unsubscribe_url, "preferences_url": self.preferences_url,
                "confirm_url": self.confirm_url}


def with_unsubscribe_in_body(rendered: Rendered, links: MessageLinks) -> Rendered:
    """The email with its unsubscribe link in both parts: a store's own template that leaves
    it out gets a footer line, so no marketing email goes without its way out."""
    url = links.unsubscribe_url
    if not url:
        return rendered
    text, body = rendered.text or "", rendered.html
    if url not in text:
        text = f"{text.rstrip()}\n\n{UNSUBSCRIBE_WORD}: {url}\n"
    if body is not None and html.escape(url) not in body and url not in body:
        body = (f'{body}\n<p><a href="{html.escape(url)}">{UNSUBSCRIBE_WORD}</a></p>')
    return replace(rendered, text=text, html=body)


def list_unsubscribe_headers(links: MessageLinks, mailto: str = "") -> dict[str, str]:
    """RFC 2369 List-Unsubscribe (the https link first, then a mailto where the store has
    one) and RFC 8058 List-Unsubscribe-Post, which tells a mail client it may unsubscribe
    with one POST to that link, without opening a page."""
    if not links.unsubscribe_url:
        return {}
    targets = [f"<{links.unsubscribe_url}>"]
    if mailto:
        targets.append(f"<mailto:{quote(mailto, safe='@')}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def with_sms_opt_out(body: str, opt_out_text: str) -> str:
    """A marketing SMS ending with the store's opt-out text, once."""
    text = (opt_out_text or "").strip()
    if not text or body.rstrip().endswith(text):
        return body
    return f"{body.rstrip()} {text}"
