"""The layering of DESIGN.md "Architecture", read from every import (function-level ones too) with ast:
pure chunks, storage apart, dependencies pointing down, no import cycles between modules, no giant modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "eacct"

# package -> the eacct packages it may import besides itself (None: any). Handlers (api.py) are the top
# layer of their package and may wire packages together, so they are checked against TOP_LAYER instead.
ALLOWED = {
    "chunks": set(),
    "storage": set(),
    "desktop_sync": {"chunks"},
    "members": {"_shared"},
    "netdisk": {"_shared", "members", "storage", "chunks"},
    "share": {"_shared", "members", "netdisk", "storage", "chunks"},
    "wechat": None,
}
# Top-level modules of eacct (app factory, config, db, errors, web, CLI …) and what they may import.
SHARED_MODULES = {"config", "db", "errors", "formats", "schemas", "secrets", "models", "throttle", "migrate", "web", "openapi", "app", "cli", "text",
                  "sqlite_driver"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "eacct" or m.startswith("eacct.")}


def area(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "_shared"
    if parts[1] in ALLOWED:
        return parts[1]
    return "_shared" if parts[1] in SHARED_MODULES else "_top"


def resolved(target: str, known: dict[str, Path]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def test_every_package_imports_only_the_layers_below_it():
    known = modules()
    problems = []
    for name, path in sorted(known.items()):
        own = area(name)
        if own not in ALLOWED or ALLOWED[own] is None or path.name == "api.py" and own not in ("chunks", "storage"):
            continue
        for target in sorted(imports_of(path, name)):
            other = area(target)
            if other != own and other not in ALLOWED[own]:
                problems.append(f"{name} imports {target} ({own} → {other})")
    assert problems == []


def test_shared_modules_import_no_domain_package():
    known = modules()
    problems = []
    for name, path in sorted(known.items()):
        if area(name) != "_shared" or name.split(".")[-1] in ("app", "cli", "web"):  # the wiring, on top
            continue
        for target in imports_of(path, name):
            if area(target) in ALLOWED and not name.endswith(".models"):
                problems.append(f"{name} imports {target}")
    assert problems == []


def test_no_import_cycles():
    known = modules()
    graph = {name: {resolved(t, known) for t in imports_of(path, name)} - {None, name} for name, path in known.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle of meaning.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (known[t].name == "__init__.py" and name.startswith(t + "."))}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_module_over_500_lines(path):
    assert path.read_text(encoding="utf-8").count("\n") <= MAX_LINES
