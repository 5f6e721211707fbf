"""`companion loyalty`: a customer's rewards from the command line, against a stand-in loyalty
service in place of the RPC proxy (the same commands run against the real services in
tests/integration/test_cli.py's way, by `main`)."""
from __future__ import annotations

import io
import json

import pytest

from ops import cli
from ops.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from shared.errors import Conflict

REWARD = {"reward_id": "r-1", "kind": "points", "state": "issued", "code": "reward-7kq2mnp4xz",
          "amount": {"amount": 500, "currency": "EUR"}, "points": 500,
          "created_at": "2026-03-02T10:00:00+00:00", "expires_at": "2026-06-01T00:00:00+00:00",
          "issued_at": "2026-03-02T10:00:01+00:00", "order_id": None, "attempts": 1,
          "next_attempt_at": None, "last_error": None, "reason": None, "note": None}


class Loyalty:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.currency = "EUR"

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, *args))
            return getattr(self, "_" + name)(*args)
        return call

    def _list_rewards(self, store, customer):
        return {"items": [REWARD, {**REWARD, "reward_id": "r-0", "state": "pending",
                                   "attempts": 4, "last_error": "shop answered 503"}]}

    def _quote_redemption(self, store, customer, points):
        allowed = points <= 1000
        return {"points": points, "amount": {"amount": points, "currency": "EUR"},
                "balance": 1000, "allowed": allowed,
                "reason": None if allowed else "the balance is 1000 points",
                "expires_at": "2026-06-01T00:00:00+00:00"}

    def _redeem(self, store, customer, points, request_id, actor):
        return {"request_key": f"redeem:{request_id}", "entries": [], "reward": REWARD}

    def _get_account(self, store, customer):
        return {"store_credit": {"amount": 0, "currency": self.currency}, "cash_value": None}

    def _get_programme(self, store):
        return {"currency": None}

    def _issue_credit(self, store, customer, amount, reason, note, actor, expires_at,
                      request_id):
        return {"request_key": f"credit:{request_id}", "entries": [],
                "reward": {**REWARD, "kind": "credit", "points": None,
                           "amount": {"amount": amount, "currency": self.currency}}}

    def _cancel_reward(self, store, customer, reward_id, actor):
        if reward_id != "r-1":
            raise Conflict(f"reward {reward_id} is used: it cannot be cancelled")
        return {**REWARD, "state": "returned"}


class Rpc:
    def __init__(self, loyalty: Loyalty) -> None:
        self.loyalty = loyalty

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def loyalty(monkeypatch) -> Loyalty:
    service = Loyalty()
    monkeypatch.setattr(cli, "_rpc", lambda args: Rpc(service))
    monkeypatch.setenv("COMPANION_ACTOR", "ops-ann")
    return service


def run(capsys, *argv: str, stdin: str | None = None, tty: bool = False, monkeypatch=None):
    if stdin is not None:
        stream = io.StringIO(stdin)
        stream.isatty = lambda: tty
        monkeypatch.setattr("sys.stdin", stream)
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rewards_are_listed_with_their_money_and_state(loyalty, capsys):
    code, out, _ = run(capsys, "loyalty", "rewards", "c1", "--store", "shop")
    assert code == EXIT_OK and loyalty.calls == [("list_rewards", "shop", "c1")]
    header, first, second = out.splitlines()
    assert header.split()[:5] == ["REWARD_ID", "CODE", "KIND", "AMOUNT", "STATE"]
    assert "reward-7kq2mnp4xz" in first and "5.00 EUR" in first and "issued" in first
    assert "pending" in second and "shop answered 503" in second
    code, out, _ = run(capsys, "loyalty", "rewards", "c1", "--store", "shop", "--json")
    assert json.loads(out)[0]["amount"] == {"amount": 500, "currency": "EUR"}


def test_redeem_shows_the_quote_and_redeems_only_when_the_answer_is_yes(loyalty, capsys,
                                                                        monkeypatch):
    code, out, err = run(capsys, "loyalty", "redeem", "c1", "500", "--store", "shop",
                         stdin="n\n", tty=True, monkeypatch=monkeypatch)
    assert "500 points = 5.00 EUR, coupon valid until 2026-06-01" in err
    assert code == EXIT_FAILED and "nothing was redeemed" in err
    assert [c[0] for c in loyalty.calls] == ["quote_redemption"]
    code, out, err = run(capsys, "loyalty", "redeem", "c1", "500", "--store", "shop",
                         "--request-id", "ticket-9", stdin="y\n", tty=True,
                         monkeypatch=monkeypatch)
    assert code == EXIT_OK
    assert loyalty.calls[-1] == ("redeem", "shop", "c1", 500, "ticket-9", "cli:ops-ann")
    assert "Coupon reward-7kq2mnp4xz for 5.00 EUR is ready, valid until 2026-06-01." in out


def test_redeem_away_from_a_terminal_needs_yes(loyalty, capsys, monkeypatch):
    code, _, err = run(capsys, "loyalty", "redeem", "c1", "500", "--store", "shop",
                       stdin="y\n", tty=False, monkeypatch=monkeypatch)
    assert code == EXIT_USAGE and "pass --yes" in err
    assert "redeem" not in [c[0] for c in loyalty.calls]
    code, out, _ = run(capsys, "loyalty", "redeem", "c1", "500", "--store", "shop", "--yes",
                       "--json")
    assert code == EXIT_OK and json.loads(out)["reward"]["code"] == "reward-7kq2mnp4xz"
    assert loyalty.calls[-1][0] == "redeem" and loyalty.calls[-1][4].startswith("cli-")


def test_a_refused_quote_redeems_nothing_and_says_why(loyalty, capsys):
    code, _, err = run(capsys, "loyalty", "redeem", "c1", "5000", "--store", "shop", "--yes")
    assert code == EXIT_FAILED and "the balance is 1000 points" in err
    assert [c[0] for c in loyalty.calls] == ["quote_redemption"]


@pytest.mark.parametrize("argv, message", [
    (["redeem", "c1", "0", "--yes"], "at least 1"),
    (["credit", "c1", "1.234", "--reason", "goodwill"], "amount has at most 2 decimals (EUR)"),
    (["credit", "c1", "lots", "--reason", "goodwill"], "amount must be an amount"),
    (["credit", "c1", "0", "--reason", "goodwill"], "more than zero"),
    (["credit", "c1", "5", "--reason", "goodwill", "--expires", "soon"], "--expires must be"),
    (["credit", "c1", "5", "--reason", "goodwill", "--expires", "2026-05-01T10:00"],
     "time zone"),
    (["credit", "c1", "5", "--reason", "goodwill", "--expires", "0001-01-01T00:00+14:00"],
     "--expires is out of range in UTC"),
])
def test_bad_input_is_refused_with_a_clear_message_and_nothing_changes(loyalty, capsys, argv,
                                                                       message):
    code, _, err = run(capsys, "loyalty", *argv, "--store", "shop")
    assert code == EXIT_USAGE and message in err
    assert not [c for c in loyalty.calls if c[0] in ("redeem", "issue_credit")]


def test_a_reason_outside_the_two_is_a_usage_error(loyalty, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["loyalty", "credit", "c1", "5", "--reason", "bribe", "--store", "shop"])
    assert exited.value.code == EXIT_USAGE and "invalid choice: 'bribe'" in capsys.readouterr().err


def test_credit_is_converted_with_the_stores_currency(loyalty, capsys):
    code, out, _ = run(capsys, "loyalty", "credit", "c1", "12.5", "--store", "shop",
                       "--reason", "refund_alternative", "--note", "late parcel",
                       "--expires", "2026-12-31", "--request-id", "t-1")
    assert code == EXIT_OK
    assert loyalty.calls[-1] == ("issue_credit", "shop", "c1", 1250, "refund_alternative",
                                 "late parcel", "cli:ops-ann", "2026-12-31T00:00:00+00:00", "t-1")
    assert "12.50 EUR" in out
    loyalty.currency = "JPY"
    run(capsys, "loyalty", "credit", "c1", "500", "--store", "shop", "--reason", "goodwill")
    assert loyalty.calls[-1][3] == 500


def test_cancel_reward_says_what_happened_and_a_refusal_is_an_error(loyalty, capsys):
    code, out, _ = run(capsys, "loyalty", "cancel-reward", "c1", "r-1", "--store", "shop")
    assert code == EXIT_OK and loyalty.calls[-1] == ("cancel_reward", "shop", "c1", "r-1",
                                                     "cli:ops-ann")
    assert "Coupon reward-7kq2mnp4xz is cancelled" in out and "500 points went back" in out
    code, _, err = run(capsys, "loyalty", "cancel-reward", "c1", "r-9", "--store", "shop")
    assert code == EXIT_FAILED and "error: reward r-9 is used: it cannot be cancelled" in err


def test_spending_credit_is_no_command():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["loyalty", "use-credit", "c1", "5", "--store", "s"])
