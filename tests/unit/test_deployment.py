"""The compose file cannot be run here (no Docker engine), so its shape is checked instead."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.registry import SERVICES
from ops.settings import every_setting, settings_by_owner

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_compose_service_has_an_image_or_build_a_healthcheck_and_a_restart_policy():
    services = compose()["services"]
    assert {"rabbitmq", "mongo"} <= set(services)
    for name, spec in services.items():
        assert spec.get("image") or spec.get("build"), f"{name} has neither image nor build"
        if name not in ONE_SHOT:
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
    known = {s.name for s in every_setting()}
    for name, spec in compose()["services"].items():
        if name in SERVICES:
            assert set(spec["environment"]) <= known, f"{name} sets an undocumented variable"


def test_the_configuration_page_holds_the_table_the_code_declares():
    from ops.config_docs import END, START, settings_table
    from ops.generated_docs import held_block

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert held_block(page, START, END) == settings_table(), (
        "run `python -m ops.config_docs` to regenerate docs/configuration.md")
    missing = [s.name for s in every_setting() if f"| `{s.name}` | " not in page]
    assert not missing, f"docs/configuration.md does not document: {missing}"


def test_the_settings_table_gives_every_variable_its_default_and_meaning():
    from ops.config_docs import settings_table

    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")
            for line in settings_table().splitlines() if line.startswith("| `")}
    assert list(rows) == [s.name for s in every_setting()]
    for setting in every_setting():
        _, default, meaning = rows[setting.name]
        assert default == (f"`{setting.default}`" if setting.default else "(empty)")
        assert meaning == f"{setting.description} |" and setting.description.strip()


def test_each_owners_variables_are_under_its_heading():
    from ops.config_docs import heading, settings_table

    text = settings_table()
    for owner, declared in settings_by_owner().items():
        section = text.split(f"### {heading(owner)}\n", 1)[1].split("\n### ", 1)[0]
        rows = [line.split(" | ")[0].strip("| `") for line in section.splitlines()
                if line.startswith("| `")]
        assert rows == [s.name for s in declared], owner


# -- the whole deployment: compose files, .env.example, production files ----------------------
import re  # noqa: E402

PRODUCTION = ROOT / "deploy" / "docker-compose.production.yml"
# Jobs that run once and exit (a healthcheck means nothing for them); services wait for them
# with `service_completed_successfully`.
ONE_SHOT = {"broker-users", "mongo-init"}
DEPLOYED = set(SERVICES) | {"gateway"}


def production() -> dict:
    return yaml.safe_load(PRODUCTION.read_text())


def _named_volumes(spec: dict) -> set[str]:
    names = set()
    for mount in spec.get("volumes", []):
        source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
        if source and not source.startswith((".", "/")):
            names.add(source)
    return names


@pytest.mark.parametrize("load", [compose, production], ids=["local", "production"])
def test_every_container_is_healthchecked_restarted_and_its_volumes_declared(load):
    doc = load()
    declared = set(doc.get("volumes") or {})
    for name, spec in doc["services"].items():
        assert spec.get("restart"), f"{name} has no restart policy"
        if name not in ONE_SHOT:
            assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        missing = _named_volumes(spec) - declared
        assert not missing, f"{name} mounts undeclared volumes {missing}"
    for job in ONE_SHOT & set(doc["services"]):
        waiting = [n for n, s in doc["services"].items()
                   if s.get("depends_on", {}).get(job, {}).get("condition")
                   == "service_completed_successfully"]
        assert waiting, f"nothing waits for {job}"


@pytest.mark.parametrize("load", [compose, production], ids=["local", "production"])
def test_every_service_and_the_gateway_run_under_their_own_broker_user(load):
    services = load()["services"]
    for name in DEPLOYED:
        spec = services[name]
        assert spec["command"] == ["python", "-m", "services", name]
        assert spec["image"] == "woo-companion:latest"
        uri = spec["environment"]["AMQP_URI"]
        # Each host of a failover list logs in as the service itself, in the companion vhost.
        for part in uri.split(";"):
            assert re.match(rf"amqps?://{name}:\$\{{BROKER_PASSWORD_{name.upper()}:\?", part), part
            assert part.endswith("/companion")
        assert "9102" in [str(p) for p in spec.get("expose", [])], f"{name}: metrics port"
        assert spec["depends_on"]["broker-users"]["condition"] == "service_completed_successfully"
        test = spec["healthcheck"]["test"]
        assert test[-1] == name or "/health/ready" in test[-1]
    users = services["broker-users"]
    # users and permissions first, then every consumer's queue (before any service publishes)
    assert users["command"] == ["sh", "-c", "python -m ops.broker_permissions apply && "
                                            "python -m ops.topology"]
    assert users["environment"]["AMQP_URI"].endswith("/companion")
    assert {k for k in users["environment"] if k.startswith("BROKER_PASSWORD_")} == {
        f"BROKER_PASSWORD_{n.upper()}" for n in DEPLOYED | {"operator"}}


@pytest.mark.parametrize("load", [compose, production], ids=["local", "production"])
def test_customer_sync_is_deployed_as_a_door_and_its_appliers(load):
    """The door only receives (INBOX_APPLY=applier); the applier runs as customer_sync's broker
    user against its database, probed on its metrics port (it answers no RPC)."""
    services = load()["services"]
    door, applier = services["customer_sync"], services["customer_sync_applier"]
    assert door["environment"]["INBOX_APPLY"] == "applier"
    assert applier["command"] == ["python", "-m", "services", "customer_sync_applier"]
    assert applier["environment"]["AMQP_URI"] == door["environment"]["AMQP_URI"]
    assert applier["environment"]["MONGO_URI"] == door["environment"]["MONGO_URI"]
    assert "INBOX_APPLY" not in applier["environment"]  # an applier always applies
    assert "9102" in [str(p) for p in applier["expose"]]
    assert "127.0.0.1:9102/health/ready" in applier["healthcheck"]["test"][-1]
    assert applier["depends_on"]["broker-users"]["condition"] == "service_completed_successfully"
    assert applier["restart"]


def test_every_variable_compose_reads_is_in_env_example_with_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {}
    for i, line in enumerate(lines):
        match = re.match(r"([A-Z][A-Z0-9_]*)=", line)
        if match:
            documented[match.group(1)] = i > 0 and lines[i - 1].startswith("#")
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    assert used - set(documented) == set(), "compose reads variables .env.example lacks"
    assert all(documented[name] for name in used), "each variable needs a comment above it"
    assert not any("=" in l and re.search(r"(?i)password=.{1,}", l)
                   and "change-me" not in l for l in lines), "a real-looking secret"


def test_production_is_clustered_replicated_and_tls():
    services = production()["services"]
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "peer_discovery_backend = classic_config" in conf
    nodes = re.findall(r"classic_config\.nodes\.\d+ = rabbit@(\S+)", conf)
    assert sorted(nodes) == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    assert {services[n]["hostname"] for n in nodes} == set(nodes)
    members = [n for n in services if n.startswith("mongo-") and n != "mongo-init"]
    assert len(members) == 3 and all("--replSet" in services[m]["command"] for m in members)
    init = (ROOT / "deploy" / "mongo" / "init-replica-set.js").read_text()
    assert all(f'"{m}:27017"' in init for m in members)
    for name in DEPLOYED:
        env = services[name]["environment"]
        assert env["AMQP_QUEUE_TYPE"] == "quorum"
        assert env["AMQP_URI"].startswith("amqps://") and env["AMQP_SSL_CA_FILE"]
        assert "replicaSet=rs0" in env["MONGO_URI"] and env["MONGO_TLS_CA_FILE"]
        assert str(services[name]["deploy"]["replicas"]).startswith("${")
        assert set(env) - {"AMQP_URI"} <= {s.name for s in every_setting()} or name == "gateway"


def test_makefile_has_up_down_logs_that_check_for_docker():
    makefile = (ROOT / "Makefile").read_text()
    assert "up -d --build" in makefile
    for target in ("up", "down", "logs"):
        assert re.search(rf"^{target}: docker-check", makefile, re.M), target
    assert "command -v docker" in makefile


def test_the_readme_and_the_operations_page_point_to_the_deployment_guide():
    assert "(deploy/README.md)" in (ROOT / "README.md").read_text()
    assert "(../deploy/README.md)" in (ROOT / "docs" / "operations.md").read_text()
    guide = (ROOT / "deploy" / "README.md").read_text()
    for topic in ("quorum", "replica set", "broker_permissions", "AMQP_SSL_CA_FILE",
                  "MONGO_TLS_CA_FILE", "replicas"):
        assert topic in guide, topic


def test_the_event_pages_catalogue_is_the_one_the_code_declares():
    from ops.events_docs import END, PAGE, START, catalogue_table
    from ops.generated_docs import held_block

    assert PAGE == ROOT / "docs" / "events.md"
    held = held_block(PAGE.read_text(), START, END)
    assert held == catalogue_table(), "run `python -m ops.events_docs` to regenerate it"


def test_regenerating_rewrites_only_the_marked_block(tmp_path):
    from ops.events_docs import END, START
    from ops.generated_docs import rewrite_block

    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nprose before\n\n{START}\n| old |\n{END}\n\nprose after\n")
    assert rewrite_block(page, START, END, f"{START}\n| new |\n{END}") is True
    assert page.read_text() == f"# Title\n\nprose before\n\n{START}\n| new |\n{END}\n\nprose after\n"
    assert rewrite_block(page, START, END, f"{START}\n| new |\n{END}") is False
    page.write_text("# Title\n\nno markers\n")
    with pytest.raises(ValueError, match="markers"):
        rewrite_block(page, START, END, f"{START}\n{END}")
    assert page.read_text() == "# Title\n\nno markers\n"
