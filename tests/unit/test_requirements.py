"""The production image installs requirements.txt alone: everything the code it ships imports
must come from that set, and what only tests, the demo and the in-memory database need stays
in requirements-dev.txt."""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (not following `-r`)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[_normal(name)] = version.strip()
    return found


def shipped_packages() -> list[str]:
    """The project's packages deploy/Dockerfile copies into the image."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    return re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE)


def installed_closure(names: set[str]) -> set[str]:
    """`names` and every distribution they require, as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_normal(requirement.name))
    return seen


def third_party_imports(package: str) -> dict[str, str]:
    """top-level module -> a file importing it, over one shipped package."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and not (ROOT / top).is_dir():
                    found.setdefault(top, path.relative_to(ROOT).as_posix())
    return found


def test_the_image_installs_the_products_set_and_ships_no_development_code() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.findall(r"pip install -r (\S+)", dockerfile) == ["requirements.txt"]
    assert sorted(shipped_packages()) == ["ops", "services", "shared"]


def test_what_the_shipped_code_imports_comes_from_the_products_requirements() -> None:
    runtime = installed_closure(set(pinned(ROOT / "requirements.txt")))
    providers = metadata.packages_distributions()
    missing = []
    for package in shipped_packages():
        for module, where in third_party_imports(package).items():
            if not {_normal(d) for d in providers.get(module, [])} & runtime:
                missing.append(f"{module} (imported by {where})")
    assert missing == []


def test_development_packages_stay_out_of_the_products_set() -> None:
    product = pinned(ROOT / "requirements.txt")
    development = pinned(ROOT / "requirements-dev.txt")
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in lines
    assert set(product) & set(development) == set()
    for name in ("mongomock", "pytest", "hypothesis", "aiosmtpd", "selenium", "testcontainers"):
        assert name in development and name not in installed_closure(set(product))
