"""The packages form floors and every import points down: a change on one floor never needs a change below it.

    core                                   settings, logging, db, Temporal client, object store, model facts, paths
    budsim · registry · runtime · gateway  each on core alone
    control                                payloads, stores, planning, policies (above budsim and registry)
    clusters                               backends (no dev stack)
    activities → workflows                 (workflows never import the API)
    api · worker · devstack · cli · bench  the entry points
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"core", "budsim", "registry", "runtime", "gateway", "control", "clusters", "activities", "workflows", "api",
        "worker", "devstack", "cli", "bench", "monitoring"}
FOUNDATION = {"core"}
LIBRARIES = FOUNDATION | {"budsim", "registry"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "monitoring": FOUNDATION,  # alert rules and Grafana dashboards, generated from their sources
    "budsim": FOUNDATION,
    "registry": FOUNDATION,
    "runtime": FOUNDATION,
    "gateway": FOUNDATION,
    "control": LIBRARIES,
    "clusters": LIBRARIES | {"control"},
    "activities": LIBRARIES | {"control", "clusters"},
    "workflows": LIBRARIES | {"control", "activities"},
    "api": LIBRARIES | {"control", "clusters", "workflows"},
    "worker": LIBRARIES | {"control", "clusters", "activities", "workflows"},
    "devstack": LIBRARIES | {"control", "clusters", "runtime"},
    "cli": OURS - {"bench"},
    "bench": OURS,
}


def imports_of(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at the top or inside a function (both are arrows)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def arrows() -> list[tuple[str, str]]:
    pairs = []
    for package in sorted(ALLOWED):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            pairs.extend((module, target) for target in sorted(imports_of(path)))
    return pairs


def test_every_package_has_a_floor():
    on_disk = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"tests"}
    assert on_disk == set(ALLOWED), "a new package needs its floor in ALLOWED"


def test_no_import_points_up():
    upward = []
    for module, target in arrows():
        source, destination = module.split(".")[0], target.split(".")[0]
        if destination != source and destination not in ALLOWED[source]:
            upward.append(f"{module} -> {target}")
    assert upward == []


@pytest.mark.parametrize("source, forbidden", [("clusters", "devstack"), ("workflows", "api"), ("core", "control")])
def test_the_named_arrows_are_absent(source, forbidden):
    assert [f"{m} -> {t}" for m, t in arrows() if m.startswith(source + ".") and t.startswith(forbidden)] == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk must catch a function-level import too (the old core/bootstrap.py imported workflows that way)."""
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from workflows.ids import register_model_workflow_id\n")
    assert imports_of(module) == {"workflows.ids"}
