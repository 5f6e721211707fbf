"""The match keys that tell two customer records may be one person, and their scores."""
from __future__ import annotations

import pytest

from services.customer_sync.core.duplicates import (
    EMAIL,
    NAME_POSTCODE,
    PHONE,
    e164_phone,
    group_score,
    hashed_key,
    match_keys,
    match_values,
    name_postcode_key,
    shared_kinds,
)


@pytest.mark.parametrize("raw, country, expected", [
    ("+49 30 1234567", None, "+49301234567"),          # international: kept, country unused
    ("+49 (0)30-123.4567", "FR", "+49301234567"),      # the "(0)" a reader leaves out
    ("030 1234567", "DE", "+49301234567"),             # trunk "0" stripped
    ("0049 30 1234567", "DE", "+49301234567"),         # "00" international prefix
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("07700 900123", "GB", "+447700900123"),
    ("06 1234 5678", "IT", "+390612345678"),           # Italy keeps its leading 0
    ("(555) 123-4567", "US", "+15551234567"),
    ("1-555-123-4567", "US", "+15551234567"),          # NANP trunk "1"
    ("011 49 30 1234567", "US", "+49301234567"),       # North America's "011" to dial abroad
    ("0049 30 1234567", "CA", None),                   # no NANP number starts with 0
    ("06 30 123 4567", "HU", "+36301234567"),          # Hungary's trunk "06"
    ("090-1234-5678", "jp", "+819012345678"),          # country code in any case
    ("0412 345 678", "AU", "+61412345678"),
    ("030 1234567", None, None),                       # national, no country: no key
    ("030 1234567", "BR", None),                       # a country not in the table: no guess
    ("call me", "DE", None),
    ("+12", None, None),                               # too short
    ("+1234567890123456", None, None),                 # too long for E.164
    ("", "DE", None),
    (None, "DE", None),
    ("+٤٩٣٠١٢٣٤٥٦٧", None, None),                      # non-ASCII digits
])
def test_phones_are_read_as_e164_only_without_guessing(raw, country, expected):
    assert e164_phone(raw, country) == expected


@pytest.mark.parametrize("first, last, postcode, country, expected", [
    ("Anna", "Müller", "10115", "DE", "DE|10115|anna müller"),
    ("  ANNA ", " MÜLLER", "101 15", "de", "DE|10115|anna müller"),
    ("Jean  Paul", "Dupont", "sw1a 1aa", "GB", "GB|SW1A1AA|jean paul dupont"),
    ("Straße", "", "1010", "AT", "AT|1010|strasse"),      # case-folded, not just lower-cased
    ("Anna", "Müller", "", "DE", None),                     # no postcode
    ("", "", "10115", "DE", None),                          # no name
    ("Anna", "Müller", "10115", None, "|10115|anna müller"),
])
def test_name_and_postcode_key(first, last, postcode, country, expected):
    assert name_postcode_key(first, last, postcode, country) == expected


def test_billing_country_comes_before_the_stores():
    doc = {"email": " Anna@Example.COM ", "phone": "030 1234567", "first_name": "Anna",
           "last_name": "Müller", "billing": {"country": "DE", "postcode": "10115"}}
    assert match_values(doc, store_country="FR") == {
        EMAIL: "anna@example.com", PHONE: "+49301234567", NAME_POSTCODE: "DE|10115|anna müller"}
    without_country = {**doc, "billing": {"postcode": "10115"}}
    assert match_values(without_country, store_country="FR")[PHONE] == "+33301234567"
    assert PHONE not in match_values(without_country, store_country=None)


def test_phone_and_name_are_taken_from_billing_when_the_record_has_none():
    doc = {"billing": {"phone": "+44 7700 900123", "first_name": "Jo", "last_name": "Bloggs",
                       "postcode": "N1 9GU", "country": "GB"}}
    assert match_values(doc, None) == {PHONE: "+447700900123",
                                       NAME_POSTCODE: "GB|N19GU|jo bloggs"}


def test_keys_are_stored_hashed_and_stable():
    doc = {"email": "anna@example.com"}
    keys = match_keys(doc, None)
    assert keys == {EMAIL: hashed_key(EMAIL, "anna@example.com")}
    assert "anna" not in keys[EMAIL] and len(keys[EMAIL]) == 32
    assert hashed_key(EMAIL, "x") != hashed_key(PHONE, "x")


@pytest.mark.parametrize("members, matched, score", [
    ([{"match_keys": {EMAIL: "e", PHONE: "p1"}}, {"match_keys": {EMAIL: "e", PHONE: "p2"}}],
     [EMAIL], 100),
    ([{"match_keys": {EMAIL: "e", PHONE: "p"}}, {"match_keys": {EMAIL: "e", PHONE: "p"}}],
     [EMAIL, PHONE], 105),
    ([{"match_keys": {EMAIL: "e", PHONE: "p", NAME_POSTCODE: "n"}}] * 2,
     [EMAIL, PHONE, NAME_POSTCODE], 110),
    ([{"match_keys": {PHONE: "p", NAME_POSTCODE: "n"}}, {"match_keys": {PHONE: "p", NAME_POSTCODE: "n"}}],
     [PHONE, NAME_POSTCODE], 85),
    ([{"match_keys": {NAME_POSTCODE: "n"}}, {"match_keys": {NAME_POSTCODE: "n", EMAIL: "e"}}],
     [NAME_POSTCODE], 60),
])
def test_a_group_scores_its_strongest_shared_key_plus_a_bonus_per_further_one(members, matched,
                                                                              score):
    assert shared_kinds(members) == matched
    assert group_score(matched) == score
