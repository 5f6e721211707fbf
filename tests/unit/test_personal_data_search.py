"""What the erasure's proof search counts as a mention of a person: ids are not."""
from __future__ import annotations

import uuid

from shared.personal_data import search_terms, text_mentions

NEEDLES = search_terms(["Ada", "ada@example.com"])


def test_a_name_in_text_is_found_in_any_case():
    assert text_mentions("Dear ADA, thank you", NEEDLES)
    assert text_mentions('{"email": "Ada@Example.com"}', NEEDLES)


def test_ids_made_of_hex_letters_are_not_mentions_of_a_person():
    """'Ada' is all hex letters: a random id holding 'ada' is no trace of her. An event or
    timeline entry id is a hyphenated UUID, whose groups are shorter than the 16-digit runs
    skipped before, so it matched about one run in a hundred."""
    hyphenated = "7c0adaf3-9b1e-5d2a-8ada-0123456789ab"
    assert uuid.UUID(hyphenated)
    assert not text_mentions(hyphenated, NEEDLES)
    assert not text_mentions(f"shop:{hyphenated}", NEEDLES)
    assert not text_mentions("0adaf00d0adaf00d0adaf00d", NEEDLES)


def test_a_name_beside_an_id_is_still_found():
    assert text_mentions("7c0adaf3-9b1e-5d2a-8ada-0123456789ab Ada", NEEDLES)
    assert text_mentions("ada-0123", NEEDLES)  # not a UUID: a name with a number is text
