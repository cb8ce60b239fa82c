"""The pure core never imports Qt or napari; the tissue widget never imports torch."""

from __future__ import annotations

import pkgutil

import napari_pathdistill
from _fresh_process import run_code

CORE_PACKAGES = ("wsi", "models", "inference", "evaluation")
FORBIDDEN = ("napari", "qtpy", "PySide6", "PyQt5", "PyQt6", "magicgui", "vispy")


def _core_modules() -> list[str]:
    names = []
    for pkg in CORE_PACKAGES:
        name = f"napari_pathdistill.{pkg}"
        names.append(name)
        module = __import__(name, fromlist=["__path__"])
        names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{name}.")]
    return names


def _imported_after(imports: list[str], watch: tuple[str, ...]) -> list[str]:
    """Import ``imports`` in a fresh interpreter; return which of ``watch`` got imported.

    A module whose import fails because another not-yet-merged ``napari_pathdistill`` module is missing is
    skipped (reported on stderr); any other import error fails the test.
    """
    code = (
        "import importlib, sys\n"
        f"for m in {imports!r}:\n"
        "    try:\n        importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if not (e.name or '').startswith('napari_pathdistill'): raise\n"
        "        print('skipped', m, e, file=sys.stderr)\n"
        f"print(','.join(sorted({{n.split('.')[0] for n in sys.modules}} & set({watch!r}))))"
    )
    out = run_code(code)
    return [n for n in out.stdout.strip().split(",") if n]


def test_core_imports_no_gui() -> None:
    modules = _core_modules()
    assert "napari_pathdistill.wsi.tiling" in modules
    assert _imported_after(modules, FORBIDDEN) == []
    assert napari_pathdistill.__version__


def test_tissue_widget_imports_no_torch() -> None:
    assert (
        _imported_after(["napari_pathdistill._qt.tissue_widget", "napari_pathdistill._reader"], ("torch",))
        == []
    )
