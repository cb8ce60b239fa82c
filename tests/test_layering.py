"""The package's layering, read from the source: imports only run down, and no module imports itself back.

Layers, bottom to top: the root leaves (``errors``, ``progress``, ``atomic``, ``device``) -> ``metrics`` ->
``wsi`` -> ``models`` -> ``inference`` -> ``evaluation`` -> the front ends (``cli``, ``_qt``, ``_reader``,
``_sample_data``). Every ``import`` counts, including those inside functions (a lazy import is still an
arrow). ``metrics`` is a leaf that both ``inference`` and ``evaluation`` use; ``wsi`` and ``models`` do not know
each other.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import napari_pathdistill

PKG = "napari_pathdistill"
ROOT = Path(napari_pathdistill.__file__).parent
LEAVES = {"errors", "progress", "atomic", "device", "_native", "__init__"}
CORE = {"metrics", "wsi", "models", "inference", "evaluation"}
#: what each part may import besides itself and the root leaves
ALLOWED: dict[str, set[str]] = {
    "leaf": set(),
    "metrics": set(),
    "wsi": set(),
    "models": set(),
    "inference": {"metrics", "wsi", "models"},
    "evaluation": {"metrics", "wsi", "models", "inference"},
    "_reader": {"wsi", "_channel_layers"},
    "_channel_layers": set(),  # the reader's multiplex channel layers
    "_sample_data": {"wsi", "_reader"},
    "_feature_reader": {"wsi", "inference", "_reader", "_qt"},  # front end: map layers of feature HDF5 files
    "_native": set(),
    # the front ends use the whole core, never each other
    "cli": CORE | {"_reader"},
    "_qt": CORE | {"_reader", "_native"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"] if rel.name == "__init__" else list(rel.parts)
        out[".".join([PKG, *parts])] = path
    return out


def _part(module: str) -> str:
    """The layer of a module name: its first sub-package, or 'leaf' for the root leaf modules."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in LEAVES:
        return "leaf"
    return parts[1]


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every napari_pathdistill module that ``module`` imports, at any depth of its code."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PKG)}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith(PKG):
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found |= subs or {base}
    return {m for m in found if m != module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def test_layers_only_import_downwards() -> None:
    graph = _graph()
    assert f"{PKG}.metrics.pairs" in graph and f"{PKG}.progress" in graph
    bad = []
    for mod, deps in graph.items():
        part = _part(mod)
        assert part in ALLOWED, f"{mod}: part {part!r} has no place in the layering (add it to ALLOWED)"
        bad += [f"{mod} -> {d}" for d in deps if _part(d) not in {"leaf", part} | ALLOWED[part]]
    assert bad == [], "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    # a package __init__ re-exporting its own submodules is not a cycle of code
    real = [c for c in cycles if not any(_is_reexport(a, b) for a, b in itertools.pairwise(c))]
    assert real == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def _is_reexport(importer: str, imported: str) -> bool:
    """A package importing one of its own submodules (``models/__init__`` -> ``models.registry``)."""
    return imported.startswith(importer + ".")


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    """A function-level import is found (so a hidden cycle cannot pass)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from napari_pathdistill.models import registry\n    return registry\n")
    known = {f"{PKG}.models.registry", f"{PKG}.models"}
    assert _imports(f"{PKG}.wsi.m", src, known) == {f"{PKG}.models.registry"}
