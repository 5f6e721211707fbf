"""Each part declares the settings it reads: the shared library in shared/config.py, each
service in services/<service>/settings.py, the operator tools in ops/settings.py. Checked on the
source, so a setting read by one service and declared by another (or by nobody) fails here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops import settings as ops_settings
from services import registry
from services.runner import OWN_WEB_ADDRESS
from shared.config import DECLARED_SETTINGS_KEY, SETTINGS, Config, Setting, from_nameko

ROOT = Path(__file__).resolve().parents[2]
# A setting read by name: `config.get("X")`, `settings.float("X")`, `setting="X"` (timers and
# periodic tasks); not `os.environ.get("X")`, a variable read past the settings on purpose.
READ = re.compile(r'(?:(?<!environ)\.(?:get|int|float|int_list)\(\s*|\bsetting=)'
                  r'"([A-Z][A-Z0-9_]+)"')


def _sources(folder: Path, skip: str = "settings.py") -> dict[Path, str]:
    return {path: path.read_text() for path in sorted(folder.rglob("*.py")) if path.name != skip}


def _mentions(sources: dict[Path, str], name: str) -> bool:
    word = re.compile(rf"\b{name}\b")
    return any(word.search(text) for text in sources.values())


def _names(settings: tuple[Setting, ...]) -> set[str]:
    return {s.name for s in settings}


@pytest.mark.parametrize("service", list(registry.SERVICES))
def test_a_service_declares_only_what_its_code_reads(service):
    sources = _sources(ROOT / "services" / service)
    # The runner reads a service's own web address for it (one process, several web servers).
    read_for_it = {OWN_WEB_ADDRESS[service]} if service in OWN_WEB_ADDRESS else set()
    declared = registry.settings_by_owner([service])[service]
    unread = [s.name for s in declared
              if s.name not in read_for_it and not _mentions(sources, s.name)]
    assert unread == [], f"services/{service}/settings.py declares what {service} never reads"
    assert read_for_it <= _names(declared), "the runner reads a setting the service lacks"


@pytest.mark.parametrize("service", list(registry.SERVICES))
def test_every_setting_a_service_reads_by_name_is_declared_by_it_or_shared(service):
    known = _names(registry.settings([service]))
    read = {(path.relative_to(ROOT).as_posix(), name)
            for path, text in _sources(ROOT / "services" / service).items()
            for name in READ.findall(text)}
    assert read, f"no setting read in services/{service}: the pattern is wrong"
    undeclared = sorted((path, name) for path, name in read if name not in known)
    assert undeclared == []


def test_the_shared_library_declares_only_what_it_or_the_runner_reads():
    # The runner (services/runner.py) applies the shared logging and web settings for every
    # service; nameko itself reads AMQP_URI and WEB_SERVER_ADDRESS from the container config.
    sources = {**_sources(ROOT / "shared", skip="config.py"),
               ROOT / "services" / "runner.py": (ROOT / "services" / "runner.py").read_text()}
    unread = [s.name for s in SETTINGS if not _mentions(sources, s.name)]
    assert unread == []


def test_the_operator_tools_declare_only_what_they_read_and_read_only_what_is_declared():
    sources = _sources(ROOT / "ops")
    assert [s.name for s in ops_settings.SETTINGS if not _mentions(sources, s.name)] == []
    read = {name for text in sources.values() for name in READ.findall(text)}
    assert read <= _names(ops_settings.every_setting())


def test_every_variable_has_one_owner_and_every_owner_a_module():
    owners = ops_settings.settings_by_owner()
    assert list(owners) == ["shared", *registry.SERVICES, "ops"]
    seen: dict[str, str] = {}
    for owner, declared in owners.items():
        assert declared, f"{owner} declares nothing"
        for setting in declared:
            assert setting.name not in seen, f"{setting.name}: {seen.get(setting.name)} and {owner}"
            seen[setting.name] = owner
    assert len(ops_settings.every_setting()) == len(seen)


def test_a_name_declared_twice_must_keep_one_default():
    same = {"a": (Setting("X", "1", "one"),), "b": (Setting("X", "1", "again"),)}
    assert registry.merge(same) == (Setting("X", "1", "one"),)
    with pytest.raises(ValueError, match="X is declared by a with default '1' and by b"):
        registry.merge({"a": (Setting("X", "1", "one"),), "b": (Setting("X", "2", "two"),)})


def test_settings_of_named_services_only():
    gdpr = registry.settings(["gdpr"])
    assert _names(SETTINGS) < _names(gdpr)
    assert "GDPR_SERVICES" in _names(gdpr) and "NOTIFY_POLL_SECONDS" not in _names(gdpr)
    assert _names(registry.settings()) == set().union(
        *(_names(s) for s in registry.settings_by_owner().values()))
    with pytest.raises(KeyError, match="unknown service 'billing'"):
        registry.settings(["billing"])


def test_a_config_knows_the_settings_it_was_built_with():
    assert Config({}).get("AMQP_URI").startswith("amqp://")
    with pytest.raises(KeyError, match="'NOTIFY_POLL_SECONDS'.*services/<service>/settings.py"):
        Config({}).get("NOTIFY_POLL_SECONDS")
    config = Config({"NOTIFY_POLL_SECONDS": "1"}, settings=registry.settings(["notifications"]))
    assert config.float("NOTIFY_POLL_SECONDS") == 1.0
    assert config.get("NOTIFY_COUPON_PREFIX") == "gift"


def test_a_container_config_rebuilds_the_same_config():
    config = Config({"GDPR_RETRY_SECONDS": "7"}, settings=registry.settings(["gdpr"]))
    # What the runner hands nameko, with a test's override and nameko's own keys beside.
    container_config = {**config.values(), "GDPR_PROCESS_SECONDS": "", "AMQP_SSL": None,
                        "SERVICE_CONTAINER_CLS": "x"}
    inside = from_nameko(container_config)
    assert inside.settings == config.settings
    assert inside.int("GDPR_RETRY_SECONDS") == 7
    assert inside.get("GDPR_PROCESS_SECONDS") == "10"  # emptied: its default
    with pytest.raises(KeyError):
        inside.get("SERVICE_CONTAINER_CLS")
    bare = from_nameko({"AMQP_URI": "amqp://elsewhere/", "GDPR_RETRY_SECONDS": "7"})
    assert bare.get("AMQP_URI") == "amqp://elsewhere/" and bare.settings == SETTINGS
    assert DECLARED_SETTINGS_KEY not in _names(registry.settings())
