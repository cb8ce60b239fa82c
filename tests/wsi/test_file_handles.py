"""A slide dropped without ``close()`` (napari removes its layer and lets the dask arrays go) releases its file:
the descriptors the tifffile and DICOM backends read tiles through are closed when the backend is collected."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

import numpy as np
import pytest

from _dicom_files import write_dicom_wsi
from _wsi_files import write_pyramid_tiff
from napari_pathdistill._reader import read_slide

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


def _open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    target, n = str(path.resolve()), 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            n += os.readlink(f"/proc/self/fd/{fd}") == target
    return n


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:300, 0:420]
    return np.stack([(xx * 7 + yy) % 251, (yy * 5) % 253, (xx * 3) % 241], -1).astype(np.uint8)


def _slide(kind: str, tmp_path: Path) -> Path:
    if kind == "tifffile":
        path = tmp_path / "pyramid.tif"
        write_pyramid_tiff(path, _image(), levels=2, tile=64)
        return path
    # no ImageType: OpenSlide refuses it, the pydicom backend reads it
    return write_dicom_wsi(tmp_path / "volume.dcm", _image(), (64, 64), image_type=None)


@pytest.mark.parametrize("kind", ["tifffile", "dicom"])
def test_a_dropped_slide_layer_closes_its_file(kind: str, tmp_path: Path) -> None:
    path = _slide(kind, tmp_path)
    for _ in range(3):  # a user opening and removing the slide again and again
        [(levels, kwargs, _)] = read_slide(str(path))
        assert kwargs["metadata"]["pathdistill"]["backend"] == kind
        assert np.asarray(levels[0][:64, :64]).shape == (64, 64, 3)  # tiles were read through the descriptor
        assert _open_descriptors(path) >= 1
        del levels, kwargs
        gc.collect()
        assert _open_descriptors(path) == 0
