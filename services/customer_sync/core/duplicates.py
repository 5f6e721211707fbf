"""How two customer records are told to be possibly the same person: match keys and scores.

Pure rules, no database. A customer has up to three match keys: the email (case-folded), the
phone in E.164 (read with the customer's billing country, else the store's; no country we
know, no key: a wrong calling code would match strangers), and the name with the postcode
(case-folded, per country). Keys are stored hashed, so the index and a paging cursor hold no
address or number in clear.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Mapping

from services.customer_sync.core.normalise import email_key

EMAIL, PHONE, NAME_POSTCODE = "email", "phone", "name_postcode"
# Strongest first: the order groups are listed in and a group's primary key is chosen by.
MATCH_KINDS = (EMAIL, PHONE, NAME_POSTCODE)
BASE_SCORES = {EMAIL: 100, PHONE: 80, NAME_POSTCODE: 60}
# Each further key every member shares; kept below the gap between kinds, so a group's score
# stays in its strongest key's band.
EXTRA_KEY_BONUS = 5

# Calling code and national trunk prefix of the countries shops ship to most: the EU/EEA,
# the UK, Switzerland, North America, Australia, New Zealand and Japan.
CALLING_CODES: dict[str, tuple[str, str]] = {
    "AT": ("43", "0"), "BE": ("32", "0"), "BG": ("359", "0"), "HR": ("385", "0"),
    "CY": ("357", ""), "CZ": ("420", ""), "DK": ("45", ""), "EE": ("372", ""),
    "FI": ("358", "0"), "FR": ("33", "0"), "DE": ("49", "0"), "GR": ("30", ""),
    "HU": ("36", "06"), "IE": ("353", "0"), "IT": ("39", ""), "LV": ("371", ""),
    "LT": ("370", "0"), "LU": ("352", ""), "MT": ("356", ""), "NL": ("31", "0"),
    "PL": ("48", ""), "PT": ("351", ""), "RO": ("40", "0"), "SK": ("421", "0"),
    "SI": ("386", "0"), "ES": ("34", ""), "SE": ("46", "0"), "IS": ("354", ""),
    "LI": ("423", ""), "NO": ("47", ""), "GB": ("44", "0"), "CH": ("41", "0"),
    "US": ("1", "1"), "CA": ("1", "1"), "AU": ("61", "0"), "NZ": ("64", "0"),
    "JP": ("81", "0"),
}

_PHONE_PUNCTUATION = re.compile(r"[\s\-./()\u00a0]")
_SPACES = re.compile(r"\s+")
# E.164 allows 15 digits at most; fewer than 7 is no subscriber number anywhere listed.
_MIN_DIGITS, _MAX_DIGITS = 7, 15


def _country(value: Any) -> str | None:
    if isinstance(value, str) and len(value.strip()) == 2 and value.strip().isalpha():
        return value.strip().upper()
    return None


def e164_phone(value: Any, country: str | None) -> str | None:
    """The number as "+<digits>", or None when it cannot be read without guessing.

    A number written with "+" (or the international "00") is kept as written; a national
    number takes the calling code of `country` after one trunk prefix is stripped."""
    if not isinstance(value, str):
        return None
    # "+49 (0)30 ..." writes the trunk prefix it tells the reader to leave out.
    text = _PHONE_PUNCTUATION.sub("", value.strip().replace("(0)", ""))
    if not text:
        return None
    if text.startswith("+"):
        digits = text[1:]
    else:
        known = CALLING_CODES.get(_country(country) or "")
        if known is None:
            return None
        code, trunk = known
        if code == "1" and text.startswith("011"):  # North America dials abroad with 011
            digits = text[3:]
        elif code == "1" and text.startswith("0"):  # and no national number starts with 0
            return None
        elif text.startswith("00"):
            digits = text[2:]
        else:
            national = text[len(trunk):] if trunk and text.startswith(trunk) else text
            digits = code + national
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0"):
        return None
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        return None
    return "+" + digits


def _folded(value: Any) -> str:
    """Case-folded, accents composed the same way, runs of whitespace as one space."""
    if not isinstance(value, str):
        return ""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value).casefold()).strip()


def name_postcode_key(first_name: Any, last_name: Any, postcode: Any,
                      country: str | None) -> str | None:
    """`COUNTRY|POSTCODE|first last`; None without a postcode or without any name."""
    name = _folded(f"{first_name or ''} {last_name or ''}")
    code = "".join(str(postcode or "").split()).upper() if isinstance(postcode, str) else ""
    if not name or not code:
        return None
    return f"{_country(country) or ''}|{code}|{name}"


def match_values(doc: Mapping[str, Any], store_country: str | None) -> dict[str, str]:
    """The customer's match keys in clear, by kind (only those it has)."""
    billing = doc.get("billing") if isinstance(doc.get("billing"), Mapping) else {}
    country = _country(billing.get("country")) or _country(store_country)
    found = {
        EMAIL: email_key(doc.get("email")),
        PHONE: e164_phone(doc.get("phone") or billing.get("phone"), country),
        NAME_POSTCODE: name_postcode_key(doc.get("first_name") or billing.get("first_name"),
                                         doc.get("last_name") or billing.get("last_name"),
                                         billing.get("postcode"), country),
    }
    return {kind: value for kind, value in found.items() if value}


def hashed_key(kind: str, value: str) -> str:
    """What is stored and indexed for a key: the same for the same key, nothing readable."""
    return hashlib.sha256(f"{kind}\x1f{value}".encode()).hexdigest()[:32]


def match_keys(doc: Mapping[str, Any], store_country: str | None) -> dict[str, str]:
    """The hashed match keys a customer document carries (`match_keys` field)."""
    return {kind: hashed_key(kind, value)
            for kind, value in match_values(doc, store_country).items()}


def shared_kinds(members: list[Mapping[str, Any]]) -> list[str]:
    """The kinds of key every member holds, with the same value, strongest first."""
    kinds = []
    for kind in MATCH_KINDS:
        values = {(m.get("match_keys") or {}).get(kind) for m in members}
        if len(values) == 1 and None not in values:
            kinds.append(kind)
    return kinds


def group_score(matched: list[str]) -> int:
    """The strongest shared key's score, plus a bonus for each further one."""
    if not matched:
        return 0
    return max(BASE_SCORES[k] for k in matched) + EXTRA_KEY_BONUS * (len(matched) - 1)
