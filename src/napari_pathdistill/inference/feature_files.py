"""Feature HDF5 files (ours, CLAM, TRIDENT) read as one :class:`FeatureFile`, and their slide maps.

Pure core (no Qt/napari). Layouts (datasets ``features`` (N, D), (1, N, D) or (N, 1, D), ``coords`` (N, 2)
level-0 (x, y)):

* ours, written by ``inference.embed.embed_slide``: file attrs ``model``, ``spec``, ``tile_px``, ``mpp`` (tile
  um/px, NaN without slide MPP), ``patch_level`` (0), ``patch_size_level0``; level-0 um/px is
  ``mpp * tile_px / patch_size_level0``.
* CLAM (mahmoodlab/CLAM ``extract_features_fp.py`` -> ``utils/file_utils.save_hdf5``): ``features`` and
  ``coords`` only in ``h5_files/<slide>.h5``; the patch file's ``coords`` attrs (``patch_level``,
  ``patch_size``, ``downsample``, ``name``) are copied when present. Without them the tile side is the grid
  step of the coords.
* TRIDENT (mahmoodlab/TRIDENT ``trident/IO.py`` ``save_h5`` from ``Processor.run_patch_feature_extraction_job``):
  ``coords`` attrs ``patch_size``, ``patch_size_level0``, ``level0_magnification``, ``target_magnification``,
  ``overlap``, ``name``, ``savetodir``; no um/px (level-0 um/px ~ 10 / ``level0_magnification``).

Nothing is unpickled: only numeric datasets and scalar/string attrs are read.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.inference.feature_layouts import (
    FeatureFileError,
    NonFiniteFeatureWarning,
    attr,
    check_path,
    check_shapes,
    finite_rows,
    level0_mpp,
    level0_size,
    patch_size,
)
from napari_pathdistill.inference.h5_rows import read_rows
from napari_pathdistill.inference.lattice import fit_lattice, grid_step
from napari_pathdistill.inference.map_summary import MapSummary, read_summary

__all__ = [
    "SLIDE_ATTRS",
    "FeatureFile",
    "FeatureFileError",
    "NoMPPFeatureWarning",
    "NonFiniteFeatureWarning",
    "feature_grid",
    "is_damaged_hdf5",
    "is_feature_file",
    "read_feature_file",
    "slide_map_from_features",
]

#: attrs that may name the slide a feature file was computed from (first existing one wins)
SLIDE_ATTRS = ("slide_path", "slide", "wsi_path")


class NoMPPFeatureWarning(UserWarning):
    """A feature map is placed in level-0 pixels: neither the file nor its slide states um/px."""


@dataclass
class FeatureFile:
    """One slide's tile features read from an HDF5 file.

    Attributes:
        features: (N, D) float32.
        coords: (N, 2) int64 level-0 (x, y) top-left of each tile.
        patch_size_level0: tile side in level-0 px.
        mpp: level-0 um/px, None when unknown.
        slide_path: slide path stored in the file, or None.
        model: model name, or None.
        source: "pathdistill", "clam" or "trident".
        path: the file.
        step: grid step in level-0 px (float: ours is ``tile_px * mpp / slide_mpp``, e.g. 224.45), fitted to
            the coords; less than ``patch_size_level0`` when tiles overlap.
        origin: level-0 (x, y) of the lattice's cell (0, 0), in [-step/2, step/2).
        tissue_fraction: (N,) float32 tissue fraction of each tile (ours; NaN for CLAM/TRIDENT files).
        summary: the stored PCA / k-means of the rows (ours, ``inference.map_summary``), else None.
        weights: 16 hex digits naming the model's weights (ours: attr ``weights``), else None.
        level0_size: level-0 (width, height) of the slide the file was made from, where it says (TRIDENT's
            coords attrs ``level0_width`` / ``level0_height``), else None.
    """

    features: np.ndarray
    coords: np.ndarray
    patch_size_level0: int
    mpp: float | None
    slide_path: str | None
    model: str | None
    source: str
    path: Path
    step: float = 0.0
    origin: tuple[float, float] = (0.0, 0.0)
    tissue_fraction: np.ndarray | None = None
    summary: MapSummary | None = None
    weights: str | None = None
    level0_size: tuple[int, int] | None = None


def is_feature_file(path: str | Path) -> bool:
    """Cheap check (no data read): an HDF5 with ``features`` and ``coords`` datasets. Never raises."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return isinstance(f.get("features"), h5py.Dataset) and isinstance(f.get("coords"), h5py.Dataset)
    except Exception:
        return False


def is_damaged_hdf5(path: str | Path) -> bool:
    """An HDF5 file (its signature is there) that h5py cannot open: cut off by a failed copy or download, or
    corrupt. No program can read it, so the feature reader claims it (a ``.h5``) to say so. Never raises."""
    try:
        import h5py

        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r"):
            return False
    except Exception:
        return True


def read_feature_file(path: str | Path, *, features: bool = True) -> FeatureFile:
    """Read a feature HDF5 of our, CLAM's or TRIDENT's layout (see the module docstring).

    Args:
        path: the file.
        features: False: read everything but the feature rows (``features`` is then (N, 0), with no check for
            NaN / inf rows): the coords, attrs, tile grid and stored summary (~0.3 s for TRIDENT's 100k one-row
            coords chunks, where the rows take seconds), to place a map before its rows are read (the
            feature-file reader's deferred map).

    Raises:
        FeatureFileError: a missing path, a folder, a file that is no HDF5, an unreadable/truncated one, no
            features/coords, mismatched shapes, unknown tile size.
    """
    import h5py

    path = Path(path)
    check_path(path)
    try:
        with h5py.File(path, "r") as f:
            if not (
                isinstance(f.get("features"), h5py.Dataset) and isinstance(f.get("coords"), h5py.Dataset)
            ):
                raise FeatureFileError(
                    f"{path.name} is not a feature file: it needs 'features' (N, D) and 'coords' (N, 2) "
                    f"datasets (found {sorted(f)})."
                )
            feats = read_rows(f["features"]) if features else _no_columns(f["features"])
            coords = read_rows(f["coords"])  # row-chunked: read in large blocks
            fa, ca = dict(f.attrs), dict(f["coords"].attrs)
            frac = f["tissue_fraction"][()] if isinstance(f.get("tissue_fraction"), h5py.Dataset) else None
            summary = read_summary(f, len(coords) if coords.ndim else 0)  # a scalar: check_shapes says so
    except FeatureFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise FeatureFileError(f"{path.name} cannot be read as HDF5 ({err}): truncated or not HDF5?") from err
    feats, coords = check_shapes(path, feats, coords)
    if frac is None or frac.shape != (len(coords),):
        frac = np.full(len(coords), np.nan, np.float32)  # CLAM/TRIDENT store none
    keep = finite_rows(path, feats) if features else None
    if keep is not None:
        feats, coords, frac = feats[keep], coords[keep], frac[keep]
        if summary is not None and len(summary.pcs) == len(keep):
            summary = dataclasses.replace(summary, pcs=summary.pcs[keep], clusters=summary.clusters[keep])
    source = (
        "pathdistill"
        if "spec" in fa or "tile_px" in fa
        else ("trident" if "patch_size_level0" in ca else "clam")
    )
    size = patch_size(path, fa, ca, coords)
    step, origin = fit_lattice(coords, min(grid_step(coords) or size, size))
    return FeatureFile(
        features=feats,
        coords=coords,
        patch_size_level0=size,
        step=step,
        origin=origin,
        mpp=level0_mpp(fa, ca, step if abs(step - size) < 1 else float(size)),
        slide_path=next((str(attr(fa, k)) for k in SLIDE_ATTRS if attr(fa, k)), None),
        model=(str(attr(fa, "model")) if attr(fa, "model") is not None else None),
        source=source,
        path=path,
        tissue_fraction=frac.astype(np.float32, copy=False),
        summary=summary if summary is not None and len(summary.pcs) == len(coords) else None,
        weights=(str(attr(fa, "weights")) if attr(fa, "weights") is not None else None),
        level0_size=level0_size(ca),
    )


def _no_columns(dset: Any) -> np.ndarray:
    """An empty array of ``dset``'s shape less its last axis's length ((N, D) -> (N, 0)), nothing read."""
    shape = tuple(dset.shape)
    return np.empty((*shape[:-1], 0) if len(shape) >= 2 else shape, dset.dtype)


def feature_grid(ff: FeatureFile, slide_mpp: float | None = None) -> Any:
    """The :class:`~napari_pathdistill.wsi.tiling.TileGrid` of a feature file's tiles.

    The grid cell is the coords' step (``patch_size_level0``, or less with overlapping tiles), on the lattice
    fitted to the coords (``grid.origin`` its cell (0, 0), ``ff.origin``); tiles off it (CLAM's other tissue
    contours) are drawn in the nearest cell. ``grid.coords`` are the file's own level-0 coords, which the hover
    table and the GeoJSON export show.
    """
    from napari_pathdistill.wsi.tiling import TileGrid

    step = ff.step or float(ff.patch_size_level0)
    mpp = slide_mpp if slide_mpp is not None else ff.mpp
    return TileGrid(
        coords=ff.coords,
        tile_px=1,
        mpp=None
        if mpp is None
        else mpp * step,  # grid.slide_mpp == mpp * tile_px * step / size_level0 == mpp
        size_level0=step,
        level=0,
        tissue_fraction=(
            ff.tissue_fraction
            if ff.tissue_fraction is not None
            else np.full(len(ff.coords), np.nan, np.float32)
        ),
        slide_shape=(  # two cells past the last tile: a tile snapped up to half a cell still has one
            int(np.ceil(ff.coords[:, 1].max() + 2 * step)),
            int(np.ceil(ff.coords[:, 0].max() + 2 * step)),
        ),
        origin=(float(ff.origin[0]), float(ff.origin[1])),
        tile_level0=float(
            ff.patch_size_level0
        ),  # the GeoJSON export's squares, as `pathdistill qupath` writes
    )


def slide_map_from_features(ff: FeatureFile, k: int = 6, slide_mpp: float | None = None) -> Any:
    """The :class:`~napari_pathdistill.inference.slide_maps.SlideMap` of a feature file (PCA colours, k-means,
    index raster) with napari scale/translate in um (``slide_mpp``, else the file's um/px) or, without any
    um/px, in level-0 px with a :class:`NoMPPFeatureWarning`."""
    from napari_pathdistill.inference.embed import EmbeddingResult
    from napari_pathdistill.inference.slide_maps import build_slide_map

    grid = feature_grid(ff, slide_mpp)
    if grid.slide_mpp is None:
        warnings.warn(
            f"{ff.path.name}: no um/px in the file and no slide MPP given: the map is placed in level-0 pixels.",
            NoMPPFeatureWarning,
            stacklevel=2,
        )
    result = EmbeddingResult(ff.features, grid, ff.model or ff.source, ff.weights)
    smap = build_slide_map(result, k, summary=ff.summary)  # a stored summary: no PCA / k-means refit
    from napari_pathdistill.inference.similarity_map import prepared

    return prepared(dataclasses.replace(smap, features_file=ff.path))
