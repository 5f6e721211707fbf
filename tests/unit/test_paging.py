"""The one cursor codec and page-size check every list uses."""
from __future__ import annotations

import base64
import json

import pytest

from shared.errors import ValidationError
from shared.paging import decode_cursor, encode_cursor, page_size


def test_a_cursor_reads_back_what_it_was_made_from():
    value = ["2026-01-01T00:00:00+00:00", "c1"]
    assert decode_cursor(encode_cursor(value)) == value
    assert "=" not in encode_cursor({"f": "x", "v": 1, "id": "c"})


def test_a_cursor_handed_out_before_the_shared_codec_still_reads():
    # customer_sync's lists and its timeline gave out padded base64 of JSON with spaces.
    old = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "c1"]).encode()).decode()
    assert decode_cursor(old) == ["2026-01-01T00:00:00+00:00", "c1"]


@pytest.mark.parametrize("cursor", ["nonsense", "!!", "", base64.urlsafe_b64encode(b"\xff").decode()])
def test_text_that_is_no_cursor_is_a_value_error(cursor):
    with pytest.raises(ValueError):
        decode_cursor(cursor)


@pytest.mark.parametrize("size", [0, 501, True, "10", 2.5])
def test_a_page_size_outside_1_to_500_names_the_field(size):
    with pytest.raises(ValidationError) as raised:
        page_size({"size": size}, default=50)
    assert raised.value.details == {"fields": {"page.size": ["range"]}}


def test_a_missing_page_size_is_the_lists_default():
    assert page_size({}, default=50) == 50 and page_size({"size": 500}, default=50) == 500
