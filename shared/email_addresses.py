"""Email addresses from outside: exactly one plain, syntactically valid address, or none.

A customer's email comes from the shop (webhooks, its REST API, CSV files) and ends up in a
To header, where `a@example.com,x@evil.example` is two recipients and a CR/LF starts a header
of the sender's choosing. So what is not exactly one address of the syntax WordPress itself
accepts (is_email(): a dot-atom local part, a domain of at least two LDH labels) is no address,
and headers are built from the standard library's Address, never pasted from text.
"""
from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import getaddresses
from typing import Any

MAX_LENGTH = 254  # RFC 5321's longest forward path, less the angle brackets
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def single_address(value: Any) -> str | None:
    """The one address `value` is (trimmed), or None when it is anything else: blank, two
    addresses, a display name, control characters, or not an address at all."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_LENGTH or text.count("@") != 1 or _CONTROL.search(text):
        return None
    local, domain = text.split("@")
    labels = domain.split(".")
    if len(local) > 64 or not _LOCAL.match(local) or len(labels) < 2 \
            or not all(_LABEL.match(label) for label in labels):
        return None
    try:
        parsed = Address(addr_spec=text)
    except (ValueError, IndexError, HeaderParseError):
        return None
    return text if parsed.addr_spec == text else None


def recipient(value: Any) -> Address | None:
    """The To of a message: one Address, or None when `value` is not exactly one address."""
    address = single_address(value)
    return Address(addr_spec=address) if address else None


def mailbox(value: Any, strict: bool = True) -> Address | None:
    """A From such as `Tea & Co <shop@example.com>` or a bare address, as one Address; None
    when it is not exactly one, or holds control characters. `strict=False` lets the address
    part be anything the standard library parses (an operator's `noreply@localhost`)."""
    if not isinstance(value, str) or _CONTROL.search(value) or value.count("@") != 1:
        return None
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1]:
        return None
    name, address = pairs[0]
    if strict and single_address(address) is None:
        return None
    try:
        parsed = Address(display_name=name, addr_spec=address)
    except (ValueError, IndexError, HeaderParseError):
        return None
    return parsed if parsed.addr_spec == address else None
