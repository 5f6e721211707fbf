"""The compose file cannot be run here (no Docker engine), so its shape is checked instead."""
from __future__ import annotations

from pathlib import Path

import yaml

from services.runner import SERVICES
from shared.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_compose_service_has_an_image_or_build_a_healthcheck_and_a_restart_policy():
    services = compose()["services"]
    assert {"rabbitmq", "mongo"} <= set(services)
    for name, spec in services.items():
        assert spec.get("image") or spec.get("build"), f"{name} has neither image nor build"
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert spec.get("restart"), f"{name} has no restart policy"


def test_every_runnable_service_is_deployed_with_its_environment_and_dependencies():
    services = compose()["services"]
    for name in SERVICES:
        assert name in services, f"{name} is missing from docker-compose.yml"
        spec = services[name]
        env = spec["environment"]
        assert env["AMQP_URI"].startswith("amqp://") and "@rabbitmq:5672" in env["AMQP_URI"]
        assert env["MONGO_URI"].startswith("mongodb://mongo:")
        assert spec["command"][-1] == name
        for dependency in ("rabbitmq", "mongo"):
            assert spec["depends_on"][dependency]["condition"] == "service_healthy"
        build = spec["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_compose_environment_names_are_documented_settings():
    known = {s.name for s in SETTINGS}
    for name, spec in compose()["services"].items():
        if name in SERVICES:
            assert set(spec["environment"]) <= known, f"{name} sets an undocumented variable"


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"
