"""How a provider finds its peers in the service: by the attribute names the service gives
them, every one of them (or, where told, any one of them), with an error that names the
service, who needs them and what is missing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.container import named_dependencies


def _provider(name: str) -> SimpleNamespace:
    return SimpleNamespace(attr_name=name)  # nameko sets attr_name when it binds a provider


def _container(*names: str) -> SimpleNamespace:
    return SimpleNamespace(service_name="shop",
                           dependencies=[_provider(name) for name in names])


def test_the_named_providers_are_answered_by_name_and_no_others():
    container = _container("app", "outbox", "background")
    found = named_dependencies(container, ("outbox", "app"), "InboxWorkers")
    assert set(found) == {"app", "outbox"}
    assert all(found[name].attr_name == name for name in found)


def test_every_missing_name_is_named_with_the_service_and_who_needs_it():
    with pytest.raises(RuntimeError) as raised:
        named_dependencies(_container("app"), ("app", "outbox", "clock"), "InboxWorkers")
    assert str(raised.value) == ("shop: InboxWorkers needs dependency providers as attributes "
                                 "'outbox' and 'clock', which the service lacks")


def test_one_of_answers_those_found_and_fails_only_when_none_is_there():
    assert set(named_dependencies(_container("storage"), ("app", "storage"), "relay",
                                  one_of=True)) == {"storage"}
    with pytest.raises(RuntimeError) as raised:
        named_dependencies(_container("outbox"), ("app", "storage"), "the relay", one_of=True,
                           what="the service's MongoStorage", advice="declare it")
    assert str(raised.value) == ("shop: the relay needs the service's MongoStorage as attribute "
                                 "'app' or 'storage', which the service lacks; declare it")


def test_no_names_need_nothing():
    assert named_dependencies(_container(), (), "PeriodicTasks") == {}
