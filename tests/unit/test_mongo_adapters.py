"""The in-memory database is a development adapter: loaded only for its URI scheme, never by
the product's own imports, and refused by name where it is not installed."""
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from devdoubles import mongomock_adapter
from shared import mongo

ROOT = Path(__file__).resolve().parents[2]


def test_a_mongomock_uri_gets_the_shared_in_memory_server_and_a_real_uri_none():
    uri = "mongomock://adapters-test"
    try:
        assert mongo.connect(uri) is mongo.connect(uri)
        assert mongo.adapter(uri) is mongomock_adapter
        assert mongo.adapter("mongodb://db.example:27017") is None
    finally:
        mongomock_adapter.forget(uri)


def test_stored_times_read_back_aware_as_from_production_pymongo():
    collection = mongomock_adapter.client()["db"]["times"]
    collection.insert_one({"_id": 1, "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)})
    assert collection.find_one({"_id": 1})["at"] == datetime(2026, 1, 2, 3, 4, 5,
                                                             tzinfo=timezone.utc)
    assert collection.find_one({"_id": 1})["at"].utcoffset() is not None


def test_without_the_development_package_the_uri_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setitem(mongo.ADAPTERS, "mongomock", "devdoubles.not_installed")
    with pytest.raises(ValueError, match="MONGO_URI is mongomock://"):
        mongo.connect("mongomock://anything")


def test_the_product_imports_no_test_double():
    code = ("import sys, importlib; from services.registry import SERVICES, load_service; "
            "[load_service(path) for path in SERVICES.values()]; import services.runner; "
            "leaked = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mongomock', 'devdoubles', 'tests')); print(leaked); assert not leaked")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_runner_refuses_at_start_up_a_uri_whose_adapter_is_not_installed(monkeypatch, caplog):
    from services import runner

    monkeypatch.setitem(mongo.ADAPTERS, "mongomock", "devdoubles.not_installed")
    monkeypatch.setenv("MONGO_URI", "mongomock://")
    monkeypatch.setattr(runner, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(runner, "BrokerTroubleLog", lambda amqp_uri: lambda record: True)
    assert runner.main(["gdpr"]) == 2
    assert "bad configuration: MONGO_URI is mongomock://" in caplog.text
