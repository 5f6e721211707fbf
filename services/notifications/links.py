"""The signed links a message carries: unsubscribe (and the preference page behind it), and the
confirmation of an email opt-in.

A link names a contact by its `link_id`, a random value kept on the contact for this alone, so
no customer or store id is in clear and an erased contact's links (whose `link_id` goes with
everything else) lead nowhere. The token is the link id and an HMAC-SHA256 over what the link
is for and that id, made with NOTIFY_LINK_SECRET: a token cannot be guessed, altered, or used
for another purpose than the one it was made for. Pure: the secret comes in, nothing is read.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 32
LINK_ID_BYTES = 16
_MAC_BYTES = 16
TOKEN_LENGTH = 2 * 22  # two unpadded base64url blocks of 16 bytes
UNSUBSCRIBE = "unsubscribe"  # the one-click unsubscribe, and the preference page behind it
CONFIRM_EMAIL = "confirm-email"  # the double opt-in confirmation
KINDS = (UNSUBSCRIBE, CONFIRM_EMAIL)

UNSUBSCRIBE_PATH = "/unsubscribe/<token>"
PREFERENCES_PATH = "/preferences/<token>"
FORGET_PATH = "/forget/<token>"
CONFIRM_PATH = "/confirm/<token>"
STYLE_PATH = "/pages/style.css"


def new_link_id() -> str:
    return _b64(secrets.token_bytes(LINK_ID_BYTES))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        return None


class LinkSigner:
    """Makes and checks tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"NOTIFY_LINK_SECRET must have at least {MIN_SECRET_LENGTH} "
                             "characters")
        self._key = secret.encode("utf-8")

    def _mac(self, kind: str, link_id: str) -> str:
        digest = hmac.new(self._key, f"v1:{kind}:{link_id}".encode("ascii"), hashlib.sha256)
        return _b64(digest.digest()[:_MAC_BYTES])

    def token(self, kind: str, link_id: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown link kind {kind!r}")
        return link_id + self._mac(kind, link_id)

    def link_id(self, kind: str, token: object) -> str | None:
        """The link id a token of this kind names, or None for anything this secret did not
        sign for this kind (checked in constant time, before anything is looked up)."""
        if not isinstance(token, str) or len(token) != TOKEN_LENGTH or not token.isascii():
            return None
        link_id, mac = token[:22], token[22:]
        raw = _unb64(link_id)
        if raw is None or len(raw) != LINK_ID_BYTES or _b64(raw) != link_id:
            return None
        if not hmac.compare_digest(mac, self._mac(kind, link_id)):
            return None
        return link_id


def signer_from_settings(secret: str, public_url: str) -> LinkSigner:
    """The signer of this process. Without a secret a real deployment (an https public URL)
    refuses to start; elsewhere a random secret serves this process only, and says so."""
    if secret:
        return LinkSigner(secret)
    if public_url.lower().startswith("https://"):
        raise ValueError("NOTIFY_LINK_SECRET is not set: the links in messages would stop "
                         "working at the next restart (set it, the same on every instance)")
    log.warning("NOTIFY_LINK_SECRET is not set: unsubscribe and confirmation links are signed "
                "with a random secret of this process and answer 404 after a restart")
    return LinkSigner(secrets.token_urlsafe(48))


@dataclass(frozen=True)
class PublicLinks:
    """The addresses of a contact's links, under NOTIFY_PUBLIC_URL."""

    signer: LinkSigner
    base_url: str

    def _url(self, path: str, kind: str, link_id: str) -> str:
        return self.base_url.rstrip("/") + path.replace("<token>", self.signer.token(kind, link_id))

    def unsubscribe(self, link_id: str) -> str:
        return self._url(UNSUBSCRIBE_PATH, UNSUBSCRIBE, link_id)

    def preferences(self, link_id: str) -> str:
        return self._url(PREFERENCES_PATH, UNSUBSCRIBE, link_id)

    def confirm_email(self, link_id: str) -> str:
        return self._url(CONFIRM_PATH, CONFIRM_EMAIL, link_id)
