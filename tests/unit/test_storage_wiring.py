"""How the outbox relay and the reliable handler find the service's storage: by the attribute
name the service gives it (`app` or `storage` unless told another), never by searching its
dependencies for a type, and with an error that says what to declare when it is missing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.mongo import MongoStorage, declared_storage


def _storage(name: str) -> MongoStorage:
    provider = MongoStorage(lambda database, config: None)
    provider.attr_name = name  # what nameko sets when it binds the provider to a service
    return provider


def _container(*dependencies) -> SimpleNamespace:
    return SimpleNamespace(service_name="shop", dependencies=list(dependencies))


def _other(name: str) -> SimpleNamespace:
    return SimpleNamespace(attr_name=name)


@pytest.mark.parametrize("name", ["app", "storage"])
def test_the_conventional_names_need_no_declaration(name):
    storage = _storage(name)
    assert declared_storage(_container(storage, _other("outbox")), None, "relay") is storage


def test_a_named_attribute_is_taken_over_the_conventional_ones():
    effects, app = _storage("effects"), _storage("app")
    assert declared_storage(_container(effects, app), "effects", "relay") is effects


def test_a_missing_storage_says_what_to_declare():
    with pytest.raises(RuntimeError) as raised:
        declared_storage(_container(_other("outbox")), None, "the outbox relay")
    message = str(raised.value)
    assert message.startswith("shop: the outbox relay needs the service's MongoStorage")
    assert "'app' or 'storage'" in message and 'storage="..."' in message


def test_a_named_attribute_that_is_missing_is_named():
    with pytest.raises(RuntimeError, match="as attribute 'effects', which the service lacks"):
        declared_storage(_container(_storage("app")), "effects", "relay")


def test_two_conventional_names_are_not_guessed_between():
    with pytest.raises(RuntimeError, match="finds both 'app' and 'storage'"):
        declared_storage(_container(_storage("app"), _storage("storage")), None, "relay")


def test_an_attribute_of_another_kind_is_refused():
    with pytest.raises(RuntimeError, match="needs attribute 'app' to be a MongoStorage, but it "
                                           "is a SimpleNamespace"):
        declared_storage(_container(_other("app")), None, "relay")
