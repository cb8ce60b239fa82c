"""The checks and attributes of a feature HDF5 file's layout (ours, CLAM, TRIDENT): the path, the shapes and
the finite rows of ``features`` / ``coords``, and the tile side and level-0 um/px each layout states (see
``inference.feature_files``, which reads the files with these). Pure core; nothing is unpickled."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.lattice import grid_step


class FeatureFileError(PathDistillError):
    """A file is not a usable feature HDF5 (not HDF5, no features/coords, wrong shapes, no tile size)."""


class NonFiniteFeatureWarning(UserWarning):
    """Rows of a feature file hold NaN or inf: their tiles are left out of the map."""


def attr(attrs: Any, key: str) -> Any:
    """A scalar attr (bytes decoded, 1-element arrays unwrapped) or None."""
    if key not in attrs:
        return None
    value = attrs[key]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else None
    return value.decode() if isinstance(value, bytes) else value


def check_path(path: Path) -> None:
    """Refuse a missing path, a folder or a non-HDF5 file with one line saying which (before h5py would)."""
    import h5py

    if path.is_dir():
        raise FeatureFileError(f"{path} is a folder, not a feature file: give one slide's .h5 file in it.")
    if not path.exists():
        raise FeatureFileError(f"feature file not found: {path}")
    if not path.is_file():
        raise FeatureFileError(f"{path} is not a regular file (a FIFO or device); give a feature .h5 file.")
    try:
        hdf5 = h5py.is_hdf5(path)
    except OSError:  # unreadable: read_feature_file says why
        return
    if not hdf5:
        raise FeatureFileError(
            f"{path.name} is not an HDF5 file: give a feature .h5 written by `pathdistill embed`, CLAM or TRIDENT."
        )


def finite_rows(path: Path, feats: np.ndarray) -> np.ndarray | None:
    """None when every row of (N, D) ``feats`` is finite; else the (N,) mask of the finite ones, with a
    :class:`NonFiniteFeatureWarning` (a NaN row would otherwise stop the map's PCA with "SVD did not converge").

    Raises:
        FeatureFileError: no row is finite.
    """
    from napari_pathdistill.metrics.features import row_norms

    keep = np.isfinite(row_norms(feats))  # NaN and inf reach the row's norm; no (N, D) mask
    if keep.all():
        return None
    if not keep.any():
        raise FeatureFileError(f"{path.name}: every one of its {len(feats)} feature rows holds NaN or inf.")
    warnings.warn(
        f"{path.name}: {int((~keep).sum())} of {len(feats)} tiles have NaN or inf features (e.g. a float16 "
        "overflow in the model that wrote them); they are left out of the map.",
        NonFiniteFeatureWarning,
        stacklevel=3,
    )
    return keep


def check_shapes(path: Path, feats: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features and (N, 2) coords; (1, N, D) and (N, 1, D) features (a batch axis, or a model's (B, 1, D)
    token output saved as is) lose their axis of one."""
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    elif feats.ndim == 3 and feats.shape[1] == 1:
        feats = feats[:, 0]
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if feats.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2 or len(feats) != len(coords):
        raise FeatureFileError(
            f"{path.name}: features {feats.shape} and coords {coords.shape} are not (N, D) and (N, 2)."
        )
    if len(feats) == 0:
        raise FeatureFileError(f"{path.name} holds no tiles.")
    if feats.dtype.kind not in "fiu" or coords.dtype.kind not in "fiu":
        raise FeatureFileError(
            f"{path.name}: features/coords are not numeric ({feats.dtype}, {coords.dtype})."
        )
    return feats.astype(np.float32, copy=False), np.round(coords).astype(np.int64)


def patch_size(path: Path, fa: dict, ca: dict, coords: np.ndarray) -> int:
    for attrs in (fa, ca):
        if attr(attrs, "patch_size_level0") is not None:
            return round(float(attr(attrs, "patch_size_level0")))
    if attr(ca, "patch_size") is not None:  # CLAM: patch_size at patch_level, times its downsample
        down = float(attr(ca, "downsample") or 1.0) if int(attr(ca, "patch_level") or 0) else 1.0
        return round(float(attr(ca, "patch_size")) * down)
    step = grid_step(coords)
    if step is None:
        raise FeatureFileError(
            f"{path.name} does not state its tile size (attr patch_size_level0 or coords.attrs patch_size) and "
            "has a single tile, so it cannot be inferred from the grid."
        )
    return step


def level0_mpp(fa: dict, ca: dict, size: float) -> float | None:
    mpp, tile_px = attr(fa, "mpp"), attr(fa, "tile_px")
    if mpp is not None and tile_px is not None and math.isfinite(float(mpp)):
        return float(mpp) * float(tile_px) / size  # ours: mpp is the tiles' um/px
    for attrs in (fa, ca):
        for key in ("level0_mpp", "slide_mpp"):
            if attr(attrs, key) is not None and math.isfinite(float(attr(attrs, key))):
                return float(attr(attrs, key))
    mag = attr(ca, "level0_magnification")
    if mag is not None and float(mag) > 0:
        return 10.0 / float(mag)  # TRIDENT: 20x ~ 0.5 um/px (approximate; the slide's own MPP wins)
    return None


def level0_size(ca: dict) -> tuple[int, int] | None:
    """TRIDENT's level-0 (width, height) of the slide (coords attrs ``level0_width`` / ``level0_height``)."""
    width, height = attr(ca, "level0_width"), attr(ca, "level0_height")
    try:
        return (int(width), int(height)) if width is not None and height is not None else None
    except (TypeError, ValueError):  # TRIDENT's save_h5 writes a None as the string 'None'
        return None
