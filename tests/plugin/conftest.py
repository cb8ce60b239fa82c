"""Fixtures for the WSI tests: real slide pixels and pyramidal TIFFs written with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _wsi_files import write_sparse_tiff


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
