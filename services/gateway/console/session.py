"""The console's session: the signed-in API key, the server-side session it opened, a CSRF
token and one-shot messages, kept in a cookie that is encrypted and authenticated (Fernet:
AES-128-CBC with HMAC-SHA256), so the browser holds the key but cannot read or change it, and
any gateway instance with the same CONSOLE_SESSION_SECRET can serve the next request.

A cookie cannot be taken back, so it is not what keeps a session open: the session record
with customer_sync is, asked on every request (services/customer_sync/console_sessions.py).
The cookie's own limits stay as a second fence: the token's timestamp gives the idle
timeout (the cookie is sealed anew on every request), `signed_in_at` bounds its whole life."""
from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_LENGTH = 16


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    csrf: str = field(default_factory=new_token)
    api_key: str | None = None
    session_token: str | None = None  # the server-side session's `wcs_...` token
    key_name: str = ""
    store_id: str = ""
    signed_in_at: float | None = None
    flashes: list = field(default_factory=list)  # [level, text] pairs shown once

    @property
    def signed_in(self) -> bool:
        return self.api_key is not None and self.session_token is not None

    def flash(self, level: str, text: str) -> None:
        self.flashes.append([level, text[:500]])

    def take_flashes(self) -> list:
        flashes, self.flashes = self.flashes, []
        return flashes

    def to_dict(self) -> dict:
        return {"c": self.csrf, "k": self.api_key, "z": self.session_token, "n": self.key_name,
                "s": self.store_id, "t": self.signed_in_at, "f": self.flashes[-5:]}

    @classmethod
    def from_dict(cls, data: dict) -> "Session":
        return cls(csrf=data["c"], api_key=data.get("k"), session_token=data.get("z"),
                   key_name=data.get("n") or "",
                   store_id=data.get("s") or "", signed_in_at=data.get("t"),
                   flashes=list(data.get("f") or []))


def fernet_key(secret: str) -> bytes:
    """A Fernet key derived from the configured secret (any length of at least 16)."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"woo-companion console session v1").derive(secret.encode())
    return base64.urlsafe_b64encode(derived)


class SessionCodec:
    def __init__(self, secret: str, idle_seconds: float, max_age_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"CONSOLE_SESSION_SECRET must have at least {MIN_SECRET_LENGTH} "
                             "characters")
        self.fernet = Fernet(fernet_key(secret))
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock

    def dumps(self, session: Session) -> str:
        raw = json.dumps(session.to_dict(), separators=(",", ":")).encode()
        return self.fernet.encrypt_at_time(raw, int(self.clock())).decode()

    def loads(self, token: str | None) -> Session | None:
        """The session in the cookie; None when absent, forged, idle too long or too old."""
        if not token:
            return None
        now = self.clock()
        try:
            raw = self.fernet.decrypt_at_time(token.encode(), ttl=int(self.idle_seconds),
                                              current_time=int(now))
            session = Session.from_dict(json.loads(raw))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        if session.signed_in_at is not None and now - session.signed_in_at > self.max_age_seconds:
            return None
        return session
