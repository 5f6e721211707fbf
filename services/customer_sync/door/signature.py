"""WooCommerce webhook signatures: base64 HMAC-SHA256 of the raw body, keyed by the secret."""
from __future__ import annotations

import base64
import hashlib
import hmac
import html


def sign(body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """Constant-time check of `X-WC-Webhook-Signature` against the raw, unparsed body."""
    if not signature or not secret:
        return False
    given = signature.strip().encode("ascii", "replace")
    # WooCommerce decodes HTML entities in the stored secret before signing; an operator may
    # have copied the secret either way.
    candidates = {secret, html.unescape(secret)}
    return any(hmac.compare_digest(sign(body, c).encode("ascii"), given) for c in candidates)
