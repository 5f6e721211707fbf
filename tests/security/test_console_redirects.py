"""The console's `next=` after sign-in, attacked: a target that would put CR, LF or another
control character into the Location header is dropped for the console's home, signed in or
not (it was a 500 for a signed-in user: the header was refused while being written)."""
from __future__ import annotations

import urllib.parse

import pytest

from services.gateway.console.views import _safe_next
from tests.unit.test_console import World

HOSTILE = ["/console/customers\r\nSet-Cookie: console=stolen", "/console/customers\nX: y",
           "/console/customers\rX: y", "/console/\x00", "/console/\x7f", "/console/\tcustomers"]


@pytest.mark.parametrize("target", HOSTILE, ids=[repr(t) for t in HOSTILE])
def test_a_control_character_in_next_is_never_a_redirect_target(target):
    assert _safe_next(target) == "/console/"


@pytest.mark.parametrize("target", HOSTILE, ids=[repr(t) for t in HOSTILE])
def test_signed_in_the_sign_in_page_redirects_home_instead_of_failing(target):
    world = World()
    world.login("wcc_read")
    answer = world.client.get("/console/login?" + urllib.parse.urlencode({"next": target}))
    assert answer.status_code == 303, answer.get_data(as_text=True)[:300]
    assert answer.headers["Location"] == "/console/"


@pytest.mark.parametrize("target", HOSTILE, ids=[repr(t) for t in HOSTILE])
def test_signing_in_with_a_hostile_next_lands_home(target):
    world = World()
    token = world.csrf("/console/login")
    answer = world.client.post("/console/login", data={"api_key": "wcc_read", "next": target,
                                                       "csrf_token": token})
    assert answer.status_code == 303, answer.get_data(as_text=True)[:300]
    assert answer.headers["Location"] == "/console/"
