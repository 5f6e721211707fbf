"""`companion companies --custom` attacked from the command line, against the stand-in services
of tests/unit/test_cli_companies: operator-looking keys, numbers past any bound, non-ASCII
digits, not-a-number spellings. Each is refused naming `custom_fields.<key>` (exit 2) and no
company is written."""
from __future__ import annotations

import pytest

from ops import cli
from ops.cli import EXIT_USAGE
from tests.unit.test_cli_companies import Rpc, run
from tests.unit.test_console import COMPANY_ID


@pytest.fixture
def calls(monkeypatch) -> list:
    recorded: list = []
    monkeypatch.setattr(cli, "_rpc", lambda args: Rpc(recorded))
    monkeypatch.setenv("COMPANION_ACTOR", "ops-ann")
    return recorded


@pytest.mark.parametrize("given, key", [
    ("$where=1", "$where"), ("__proto__=1", "__proto__"), ("seats.$gt=1", "seats.$gt"),
    ("seats=" + "9" * 100_000, "seats"), ("seats=1e999", "seats"), ("seats=nan", "seats"),
    ("seats=inf", "seats"), ("seats=0x10", "seats"), ("seats=1_000", "seats"),
    ("seats=\uff15", "seats"), ("seats= 5", "seats"), ("vip=\u0661", "vip"),
    ("vip=True\x00", "vip")])
def test_hostile_custom_values_are_refused_naming_the_key_and_nothing_is_written(
        calls, capsys, given, key):
    for action in (("create", "--name", "B"), ("update", COMPANY_ID)):
        calls.clear()
        code, _, err = run(capsys, "companies", action[0], "--store", "shop", *action[1:],
                           "--custom", given)
        assert code == EXIT_USAGE and f"custom_fields.{key[:40]}" in err
        assert len(err) < 2000
        assert not [c for c in calls if c[0] in ("create_company", "update_company")]
