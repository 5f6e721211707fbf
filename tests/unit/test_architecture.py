"""The allowed import directions of docs/architecture.md, checked on the source.

Every import counts, including those inside functions and under `if TYPE_CHECKING:`: a
function-local import defers a dependency but does not remove it, so it must not hide a cycle
or a forbidden direction.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("shared", "ops", "services", "demo", "devdoubles")
PROJECT = (*PRODUCT, "tests", "bench")

# What shared/, the library every other package builds on, may never import.
ABOVE_SHARED = ("services", "ops", "demo", "devdoubles", "tests", "bench")

# Modules of services/ that every service and operator tool may import: they name the
# services, so they sit beside them rather than inside one.
SERVICES_COMMON = {
    "services",
    "services.__main__",  # starts the runner
    "services.registry",  # names every service
    "services.runner",  # runs any of them
}

# Imports from one service into another that are allowed for good: (importing module,
# imported module) -> why.
ALLOWED_CROSS_SERVICE: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(packages: tuple[str, ...] = PROJECT) -> dict[str, Path]:
    """Every project module under `packages`: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name a (possibly relative) `from ... import` names."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is a project module, or None for a third-party one."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `module` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(packages: tuple[str, ...] = PROJECT) -> dict[str, set[str]]:
    known = project_modules(PROJECT)
    return {module: imports_of(module, known[module], known)
            for module in known if module.split(".")[0] in packages}


def _top(module: str) -> str:
    return module.split(".")[0]


def _service(module: str) -> str | None:
    """The service a module belongs to (`services.loyalty.ledger` -> `loyalty`), if any."""
    parts = module.split(".")
    if parts[0] != "services" or module in SERVICES_COMMON or len(parts) < 2:
        return None
    return parts[1]


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the allowed directions, described."""
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _top(module) == "shared" and _top(target) in ABOVE_SHARED:
                problems.append(f"{module} imports {target}: shared/ is a leaf library")
            if _top(module) in PRODUCT and _top(target) == "tests":
                problems.append(f"{module} imports {target}: product code never names the tests")
            if _top(module) in ("shared", "services") and _top(target) == "demo":
                problems.append(f"{module} imports {target}: the product never needs the demo")
            if _top(module) == "services" and _top(target) == "devdoubles":
                problems.append(f"{module} imports {target}: test doubles stay out of the "
                                "product (shared.mongo loads one by URI scheme)")
            if _top(module) == "services" and _top(target) == "ops":
                problems.append(f"{module} imports {target}: operator tools sit above the services")
            own, other = _service(module), _service(target)
            if (own and other and own != other
                    and (module, target) not in ALLOWED_CROSS_SERVICE):
                problems.append(f"{module} imports {target}: services talk over the broker")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep graph never hits the recursion limit.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("import json\n"
                      "def later():\n"
                      "    from shared.config import Config\n"
                      "    from . import tls\n"
                      "    import shared.messaging.names\n")
    known = project_modules(PRODUCT)
    found = imports_of("shared.probe", source, known)
    assert found == {"shared.config", "shared.tls", "shared.messaging.names"}


def test_imports_go_only_in_the_allowed_directions() -> None:
    assert forbidden_imports(import_graph(PRODUCT)) == []


def test_allowed_exceptions_still_exist() -> None:
    """An exception no longer needed is removed from the list, so the list stays true."""
    graph = import_graph(PRODUCT)
    stale = [pair for pair in [*ALLOWED_CROSS_SERVICE]
             if pair[1] not in graph.get(pair[0], set())]
    assert stale == []


def test_no_import_cycles_among_product_modules() -> None:
    assert cycles(import_graph(PRODUCT)) == []
