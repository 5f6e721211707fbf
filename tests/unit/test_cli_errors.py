"""How `companion` refuses: no abbreviated flags, an unknown flag named under the sub-command's
own usage, a service's refusal one line a field, and the exit codes docs/cli.md promises.

The parser runs for real; the services are a stand-in for the RPC proxy (the same refusals
from the real services are in tests/integration/test_cli.py)."""
from __future__ import annotations

import argparse

import pytest
from nameko.exceptions import RemoteError

from ops import cli
from ops.cli import (EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, EPILOG,
                        build_parser, flatten_field_messages, main, validation_lines)
from shared.errors import NotFound, ValidationError


def refused(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of a command line the parser turns down."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    return exited.value.code, capsys.readouterr().err


def parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


# -- abbreviations ------------------------------------------------------------------------------
def test_no_parser_or_sub_command_accepts_abbreviations():
    every = list(parsers(build_parser()))
    assert len(every) > 30
    assert [p.prog for p in every if p.allow_abbrev] == []


@pytest.mark.parametrize("argv, named, meant", [
    (["keys", "create", "--stor", "x", "--name", "crm", "--scopes", "read"], "--stor", "--store"),
    (["keys", "create", "--store", "x", "--name", "crm", "--scope", "read"], "--scope",
     "--scopes"),
    (["gdpr", "submit", "--store", "s", "--type", "access", "--emial", "a@b.example"], "--emial",
     "--email"),
    (["loyalty", "credit", "c1", "5", "--reason", "goodwill", "--store", "s", "--exp",
      "2026-01-01"], "--exp", "--expires"),
])
def test_an_abbreviated_or_mistyped_flag_is_named_under_the_sub_commands_usage(
        capsys, argv, named, meant):
    code, err = refused(capsys, *argv)
    assert code == EXIT_USAGE
    usage, error = err.strip().splitlines()[0], err.strip().splitlines()[-1]
    assert usage.startswith(f"usage: companion {argv[0]} {argv[1]} ")
    assert error == (f"companion {argv[0]} {argv[1]}: error: unrecognized argument: {named} "
                     f"(did you mean {meant}?)")


def test_unknown_flags_are_named_even_when_required_ones_are_also_missing(capsys):
    code, err = refused(capsys, "keys", "create", "--stor", "x")
    assert code == EXIT_USAGE and "unrecognized argument: --stor" in err
    assert "usage: companion keys create" in err and "required" not in err


def test_several_unknown_flags_and_a_stray_word(capsys):
    code, err = refused(capsys, "keys", "create", "--store", "x", "--name", "n", "--scopes",
                        "read", "--bogus=1", "-z")
    assert code == EXIT_USAGE
    assert err.strip().endswith("companion keys create: error: unrecognized arguments: --bogus -z")
    code, err = refused(capsys, "keys", "list", "--store", "x", "extra")
    assert code == EXIT_USAGE
    assert err.strip().endswith("companion keys list: error: unrecognized argument: extra")


def test_an_unknown_flag_before_the_sub_command_belongs_to_the_parser_that_got_it(capsys):
    code, err = refused(capsys, "--timeout", "3", "--bogus", "keys", "list")
    assert code == EXIT_USAGE
    assert err.strip().endswith("companion: error: unrecognized argument: --bogus")
    code, err = refused(capsys, "keys", "--stor", "list", "--store", "x")
    assert code == EXIT_USAGE
    assert err.strip().endswith("companion keys: error: unrecognized argument: --stor")


def test_whole_flags_still_parse_everywhere():
    args = build_parser().parse_args(["keys", "create", "--store=x", "--name", "n", "--scopes",
                                      "read", "--json"])
    assert (args.store, args.name, args.scopes, args.json) == ("x", "n", "read", True)
    args = build_parser().parse_args(["loyalty", "rewards", "--store", "s", "-5"])
    assert args.customer == "-5"


# -- a service's refusal ------------------------------------------------------------------------
class Refusing:
    """A service that refuses every call with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name):
        def call(*args):
            raise self.error
        return call


class Rpc:
    def __init__(self, service: Refusing) -> None:
        self.customer_sync = self.gdpr = self.loyalty = service

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_refused(monkeypatch, capsys, error: Exception, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "_rpc", lambda args: Rpc(Refusing(error)))
    monkeypatch.setenv("COMPANION_ACTOR", "ops-ann")
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_marshmallow_messages_are_one_line_a_field_with_dotted_paths(monkeypatch, capsys):
    messages = {"shop_url": ["Not a valid URL."],
                "rules": {"0": {"key": ["Missing data for required field."],
                                "_schema": ["Repeats a scope, key and purpose."]}}}
    error = ValidationError(f"invalid store: {messages}", {"fields": messages})
    code, out, err = run_refused(monkeypatch, capsys, error, "consent-capture", "show",
                                 "--store", "s")
    assert code == EXIT_USAGE and out == ""
    assert err.splitlines() == ["error: rules.0: repeats a scope, key and purpose",
                                "error: rules.0.key: missing data for required field",
                                "error: shop_url: not a valid URL"]


def test_every_rpc_command_shows_a_refusal_the_same_way(monkeypatch, capsys):
    error = ValidationError("invalid request: email: must be exactly one email address",
                            {"fields": {"email": ["must be exactly one email address"]}})
    for argv in (["gdpr", "submit", "--store", "s", "--type", "access", "--email", "nope"],
                 ["gdpr", "list", "--store", "s"], ["keys", "list", "--store", "s"],
                 ["customers", "find", "--store", "s", "--name", "ada"],
                 ["stores", "list"], ["loyalty", "rewards", "c1", "--store", "s"]):
        code, _, err = run_refused(monkeypatch, capsys, error, *argv)
        assert (code, err) == (EXIT_USAGE, "error: email: must be exactly one email address\n"), argv


def test_a_coded_field_keeps_the_services_sentence(monkeypatch, capsys):
    error = ValidationError("page.size must be 1-500", {"fields": {"page.size": ["range"]}})
    code, _, err = run_refused(monkeypatch, capsys, error, "keys", "list", "--store", "s")
    assert (code, err) == (EXIT_USAGE, "error: page.size: must be 1-500\n")
    error = ValidationError("store_id is not a valid store id",
                            {"fields": {"store_id": ["invalid"]}})
    code, _, err = run_refused(monkeypatch, capsys, error, "keys", "list", "--store", "s")
    assert (code, err) == (EXIT_USAGE, "error: store_id: not a valid store id\n")
    error = ValidationError("unknown scope(s): root",
                            {"fields": {"scopes": ["choose from read, write, gdpr, admin"]}})
    code, _, err = run_refused(monkeypatch, capsys, error, "keys", "create", "--store", "s",
                               "--name", "n", "--scopes", "root")
    assert (code, err) == (EXIT_USAGE, "error: scopes: unknown scope(s): root (choose from "
                                       "read, write, gdpr, admin)\n")
    error = ValidationError("name deliveries with quarantine_ids, or replay all")
    code, _, err = run_refused(monkeypatch, capsys, error, "keys", "list", "--store", "s")
    assert (code, err) == (EXIT_USAGE, "error: name deliveries with quarantine_ids, or replay all\n")


def test_an_unnamed_marshmallow_error_is_read_back_from_its_text(monkeypatch, capsys):
    remote = RemoteError("ValidationError", "{'email': ['Not a valid email address.'], "
                                            "'address': {'city': ['Too long.']}}")
    code, _, err = run_refused(monkeypatch, capsys, remote, "stores", "list")
    assert code == EXIT_USAGE
    assert err.splitlines() == ["error: address.city: too long",
                                "error: email: not a valid email address"]
    # Text that is not a literal is shown as it came, never evaluated.
    remote = RemoteError("ValidationError", "__import__('os').getcwd()")
    code, _, err = run_refused(monkeypatch, capsys, remote, "stores", "list")
    assert (code, err) == (EXIT_USAGE, "error: __import__('os').getcwd()\n")


def test_flattening_handles_lists_of_nested_messages():
    assert flatten_field_messages({"items": [{"sku": ["required"]}, "too many"]}) == [
        ("items", ["too many"]), ("items.sku", ["required"])]
    assert validation_lines("invalid store: {'_schema': ['Unknown field.']}",
                            {"_schema": ["Unknown field."]}) == ["input: unknown field"]


# -- exit codes ---------------------------------------------------------------------------------
def test_exit_codes_are_the_documented_ones(monkeypatch, capsys):
    from nameko.exceptions import RpcTimeout, UnknownService

    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE) == (0, 1, 2, 3)
    cases = [(NotFound("no store nope"), EXIT_FAILED, "error: no store nope"),
             (RemoteError("KeyError", "'x'"), EXIT_FAILED, "error from the service"),
             (RpcTimeout("customer_sync"), EXIT_UNREACHABLE, "did not answer"),
             (UnknownService("customer_sync"), EXIT_UNREACHABLE, "is not running"),
             (ConnectionRefusedError(111, "Connection refused"), EXIT_UNREACHABLE,
              "cannot reach the services")]
    for error, expected, said in cases:
        code, _, err = run_refused(monkeypatch, capsys, error, "stores", "list")
        assert code == expected and said in err, (error, err)
    assert refused(capsys, "nonsense")[0] == EXIT_USAGE


def test_a_missing_secret_off_a_terminal_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("WOO_WEBHOOK_SECRET", raising=False)
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    code, err = refused(capsys, "stores", "add", "--store", "s", "--shop-url",
                        "https://shop.example")
    assert code == EXIT_USAGE and "set WOO_WEBHOOK_SECRET" in err


def test_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert " ".join(EPILOG.split()) in shown
    for code in ("0 ok", "1 refused or failed", "2 usage or validation", "3 services or broker"):
        assert code in shown
