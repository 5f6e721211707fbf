"""The proof step of an erasure: search a service's whole database for a person's strings.

Generic on purpose (it takes any pymongo `Database` and knows nothing of customer_sync's
collections), so it can move to the shared package and serve every service: a collection
added later is searched without anyone remembering to add it.

A document matches when any string in it, at any depth (values and keys, inside lists too),
contains one of the terms, case-insensitively (Unicode case folding, NFC-normalised). Two
refinements keep the answer honest:

- strings that are JSON text (stored webhook bodies) are also searched decoded, since PHP's
  json_encode writes "José" as "Jos\\u00e9", which a plain substring search would miss;
- runs of 16 or more hex digits (ids, digests, keys) are skipped: a short name such as "Ada"
  or "Abe" is all hex letters and would "match" random hashes, and a keyed hash is exactly
  what an erasure leaves behind on purpose.

Only the store's documents are searched (`store_id` equal), plus documents without a
`store_id` (not keyed by store): the same email in another shop of the deployment is another
controller's data, not a trace of this erasure.
"""
from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, Iterable

from pymongo.database import Database

from shared.errors import ValidationError

MIN_TERM_LENGTH = 2
_OPAQUE_HEX = re.compile(r"[0-9a-f]{16,}", re.IGNORECASE)
_JSON_ESCAPE = "\\u"


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def search_terms(terms: Iterable[Any]) -> list[str]:
    """The terms as they are compared: folded, trimmed, distinct; ValueError for anything
    that is not a string of at least MIN_TERM_LENGTH characters."""
    folded: list[str] = []
    for term in terms:
        if not isinstance(term, str) or len(term.strip()) < MIN_TERM_LENGTH:
            raise ValueError(f"every term must be a string of at least {MIN_TERM_LENGTH} "
                             f"characters, got {term!r}")
        folded.append(_fold(term.strip()))
    return list(dict.fromkeys(folded))


def text_mentions(text: str, needles: list[str]) -> bool:
    """Whether one string contains a (folded) term, decoding JSON text with \\u escapes."""
    folded = _fold(_OPAQUE_HEX.sub(" ", text))
    if any(needle in folded for needle in needles):
        return True
    if _JSON_ESCAPE in text and text.lstrip()[:1] in ("{", "[", '"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return False
        if decoded != text:
            return value_mentions(decoded, needles)
    return False


def value_mentions(value: Any, needles: list[str]) -> bool:
    """Whether any string in a document (at any depth, keys included) mentions a term."""
    if isinstance(value, str):
        return text_mentions(value, needles)
    if isinstance(value, dict):
        return any(value_mentions(k, needles) or value_mentions(v, needles)
                   for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(value_mentions(item, needles) for item in value)
    return False


def search_personal_data(database: Database, store_id: str, terms: Iterable[Any]
                         ) -> list[dict]:
    """Per collection of `database`, how many of the store's documents mention any term:
    [{"collection": name, "count": n}], only collections with a match, by name."""
    needles = search_terms(terms)
    if not needles:
        return []
    scope = {"$or": [{"store_id": store_id}, {"store_id": {"$exists": False}}]}
    matches = []
    for name in sorted(database.list_collection_names()):
        if name.startswith("system."):
            continue
        count = sum(1 for doc in database[name].find(scope) if value_mentions(doc, needles))
        if count:
            matches.append({"collection": name, "count": count})
    return matches


def search(database: Database, store_id: str, terms: Any, service: str) -> dict:
    """The RPC answer every data-owning service gives to `search_personal_data`."""
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValidationError("terms must be a non-empty list", {"fields": {"terms": ["required"]}})
    try:
        matches = search_personal_data(database, store_id, terms)
    except ValueError as exc:
        raise ValidationError(str(exc), {"fields": {"terms": [str(exc)]}}) from None
    return {"service": service, "matches": matches}
