"""The session's generated big slide: its size and the benchmark generator as a module (a plain helper module,
not conftest: ``from conftest import ...`` picks whichever conftest.py pytest imported last)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]

#: level-0 size of the session's generated big slide (tests/test_big_slide.py); the benchmark uses 40k x 30k
BIG_SLIDE_SHAPE = (4500, 6000)


def big_slide_module() -> ModuleType:
    """``benchmarks/_big_slide.py`` as a module (the generator and its paste layout)."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        return importlib.import_module("_big_slide")
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
