"""The layout's rules, checked statically: each DVC stage depends on every project module its stage
imports (so editing one re-runs the stage), and no library module imports a stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from metarec_tasks.stages import STAGES
from tests.helpers import REPO

PACKAGE = "metarec_tasks"


def module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules imported anywhere in the file, lazy (function-level) imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return found


def has_code(path: Path) -> bool:
    """A package `__init__` that is only a docstring changes no behaviour."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def closure(module: str) -> set[Path]:
    """Every project file that running `module` executes: its imports, theirs, and parent packages."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(imported_modules(path))
    return {p for p in map(module_file, seen) if p is not None and has_code(p)}


def stage_deps(stage: str) -> list[Path]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [REPO / dep for dep in spec["deps"] if not dep.startswith("$")]


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_cover_every_module_the_stage_imports(stage):
    deps = stage_deps(stage)
    uncovered = sorted(
        str(path.relative_to(REPO))
        for path in closure(f"{PACKAGE}.stages.{stage}")
        if not any(path == dep or dep in path.parents for dep in deps)
    )
    assert not uncovered, f"dvc.yaml stage {stage!r} must depend on {uncovered}"


def test_dvc_stages_are_the_stage_list():
    assert tuple(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]) == STAGES


def test_no_library_module_imports_a_stage():
    stages_dir = REPO / PACKAGE / "stages"
    offenders = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / PACKAGE).rglob("*.py")
        if stages_dir not in path.parents
        and path.parent.name != "orchestration"  # drivers run stages: that is their job
        and any(m.startswith(f"{PACKAGE}.stages.") for m in imported_modules(path))
    )
    assert not offenders, f"library modules import a stage: {offenders}"
