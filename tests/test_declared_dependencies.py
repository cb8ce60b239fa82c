"""Every third-party module the packages import is a declared dependency (pyproject.toml: the base list or an
extra), not something another dependency happens to bring along today."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
OWN = {"napari_pathdistill", "pathdistill_train"}
#: modules whose distribution is not installed in every test environment
KNOWN = {"fastslide": "fastslide", "distributed": "distributed"}
#: imported only when present, never required: torch's own dependency on Linux (see napari_pathdistill._native)
UNDECLARED_OK = {"triton"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module -> the source files importing it (at module level or inside functions)."""
    found: dict[str, set[str]] = {}
    for folder in ("src", "training"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "dev":
            reqs += [r for r in items if not r.startswith("napari-pathdistill[")]
    return {_norm(Requirement(r).name) for r in reqs}


def test_every_imported_package_is_declared() -> None:
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module, files in _imported_modules().items():
        if module in UNDECLARED_OK:
            continue
        names = {_norm(d) for d in dists.get(module, [])} or {_norm(KNOWN.get(module, module))}
        if not names & declared:
            missing[module] = (sorted(names), sorted(files)[:3])
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
