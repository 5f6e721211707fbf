"""The proof step of an erasure: search a service's whole database for a person's strings.

Generic on purpose (it takes any pymongo `Database` and knows nothing of customer_sync's
collections), so it can move to the shared package and serve every service: a collection
added later is searched without anyone remembering to add it.

A document matches when any string in it, at any depth (values and keys, inside lists too),
contains one of the terms, case-insensitively (Unicode case folding, NFC-normalised). Two
refinements keep the answer honest:

- strings that are JSON text (stored webhook bodies) are also searched decoded, since PHP's
  json_encode writes "José" as "Jos\\u00e9", which a plain substring search would miss;
- runs of 16 or more hex digits (ids, digests, keys) and UUIDs in their hyphenated form
  (event and entry ids) are skipped: a short name such as "Ada" or "Abe" is all hex letters
  and would "match" random ids, and a keyed hash is exactly what an erasure leaves behind on
  purpose.

Only the store's documents are searched (`store_id` equal), plus documents without a
`store_id` (not keyed by store): the same email in another shop of the deployment is another
controller's data, not a trace of this erasure.

An email is the person's alone, so it is searched for everywhere. A phone or a name is not:
households and offices share a phone, and common names recur. Those "tied" terms count only in
documents about the erased customer ids; a document that names other customers is theirs and is
left out, and one that names no customer at all cannot be attributed: it is reported apart, as
ambiguous, for an operator to judge, instead of holding the erasure open for ever.
"""
from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, Callable, Iterable

from pymongo.database import Database

from shared.errors import ValidationError

MIN_TERM_LENGTH = 2
_OPAQUE_HEX = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}", re.IGNORECASE)
_JSON_ESCAPE = "\\u"
# The fields every service names the customer a document is about with.
_OWNER_FIELDS = ("customer_id", "customer_ids")

# Whose a document is: the customer ids it is about (collection name, document), empty when
# it names none. A service whose documents name people otherwise supplies its own.
Owners = Callable[[str, dict], set[str]]


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


def named_customers(collection: str, doc: dict) -> set[str]:
    """The customers a document names in the fields every service keys personal data by."""
    owners: set[str] = set()
    for name in _OWNER_FIELDS:
        value = doc.get(name)
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, str) and item:
                owners.add(item)
    return owners


def prove_erasure(database: Database, store_id: str, terms: Iterable[Any],
                  tied_terms: Iterable[Any], customer_ids: Iterable[str],
                  owners: Owners = named_customers) -> dict:
    """What is left of one person after their erasure, per collection of `database`:
    `matches` (documents holding a term anywhere, or a tied term in a document about one of
    `customer_ids`) and `ambiguous` (a tied term in a document that names no customer).
    Documents about other customers are theirs and are not counted."""
    anywhere = search_terms(terms)
    tied = [t for t in search_terms(tied_terms) if t not in anywhere]
    erased = set(customer_ids)
    scope = {"$or": [{"store_id": store_id}, {"store_id": {"$exists": False}}]}
    matches: list[dict] = []
    ambiguous: list[dict] = []
    for name in sorted(database.list_collection_names()):
        if name.startswith("system."):
            continue
        found = unattributed = 0
        for doc in database[name].find(scope):
            if anywhere and value_mentions(doc, anywhere):
                found += 1
            elif tied and value_mentions(doc, tied):
                about = owners(name, doc)
                if about & erased:
                    found += 1
                elif not about:
                    unattributed += 1
        if found:
            matches.append({"collection": name, "count": found})
        if unattributed:
            ambiguous.append({"collection": name, "count": unattributed})
    return {"matches": matches, "ambiguous": ambiguous}


def _string_list(value: Any, field: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValidationError(f"{field} must be a list", {"fields": {field: ["must be a list"]}})
    return list(value)


def search(database: Database, store_id: str, terms: Any, service: str,
           tied_terms: Any = None, customer_ids: Any = None,
           owners: Owners = named_customers) -> dict:
    """The RPC answer every data-owning service gives to `search_personal_data`: with only
    `terms`, every document holding one; with `tied_terms` (a phone, a name), those count only
    where they are tied to `customer_ids`, and unattributable ones come back as `ambiguous`."""
    terms = _string_list(terms, "terms")
    tied = _string_list(tied_terms if tied_terms is not None else [], "tied_terms")
    ids = _string_list(customer_ids if customer_ids is not None else [], "customer_ids")
    if not terms and not tied:
        raise ValidationError("terms must be a non-empty list", {"fields": {"terms": ["required"]}})
    if tied and (not ids or not all(isinstance(i, str) and i for i in ids)):
        raise ValidationError("customer_ids must name the erased customers when tied_terms are "
                              "given", {"fields": {"customer_ids": ["required"]}})
    for field, values in (("terms", terms), ("tied_terms", tied)):
        try:
            search_terms(values)
        except ValueError as exc:
            raise ValidationError(str(exc), {"fields": {field: [str(exc)]}}) from None
    if tied_terms is None:
        return {"service": service, "matches": search_personal_data(database, store_id, terms)}
    proof = prove_erasure(database, store_id, terms, tied, ids, owners)
    return {"service": service, **proof}
