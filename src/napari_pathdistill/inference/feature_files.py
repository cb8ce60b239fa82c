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
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.lattice import fit_lattice, grid_step
from napari_pathdistill.inference.map_summary import MapSummary, read_summary

#: attrs that may name the slide a feature file was computed from (first existing one wins)
SLIDE_ATTRS = ("slide_path", "slide", "wsi_path")


class FeatureFileError(PathDistillError):
    """A file is not a usable feature HDF5 (not HDF5, no features/coords, wrong shapes, no tile size)."""


class NoMPPFeatureWarning(UserWarning):
    """A feature map is placed in level-0 pixels: neither the file nor its slide states um/px."""


class NonFiniteFeatureWarning(UserWarning):
    """Rows of a feature file hold NaN or inf: their tiles are left out of the map."""


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


def _attr(attrs: Any, key: str) -> Any:
    """A scalar attr (bytes decoded, 1-element arrays unwrapped) or None."""
    if key not in attrs:
        return None
    value = attrs[key]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else None
    return value.decode() if isinstance(value, bytes) else value


def is_feature_file(path: str | Path) -> bool:
    """Cheap check (no data read): an HDF5 with ``features`` and ``coords`` datasets. Never raises."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return isinstance(f.get("features"), h5py.Dataset) and isinstance(f.get("coords"), h5py.Dataset)
    except Exception:
        return False


def read_feature_file(path: str | Path) -> FeatureFile:
    """Read a feature HDF5 of our, CLAM's or TRIDENT's layout (see the module docstring).

    Raises:
        FeatureFileError: a missing path, a folder, a file that is no HDF5, an unreadable/truncated one, no
            features/coords, mismatched shapes, unknown tile size.
    """
    import h5py

    path = Path(path)
    _check_path(path)
    try:
        with h5py.File(path, "r") as f:
            if not (
                isinstance(f.get("features"), h5py.Dataset) and isinstance(f.get("coords"), h5py.Dataset)
            ):
                raise FeatureFileError(
                    f"{path.name} is not a feature file: it needs 'features' (N, D) and 'coords' (N, 2) "
                    f"datasets (found {sorted(f)})."
                )
            feats, coords = f["features"][()], f["coords"][()]
            fa, ca = dict(f.attrs), dict(f["coords"].attrs)
            frac = f["tissue_fraction"][()] if isinstance(f.get("tissue_fraction"), h5py.Dataset) else None
            summary = read_summary(f, len(coords) if coords.ndim else 0)  # a scalar: _check_shapes says so
    except FeatureFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise FeatureFileError(f"{path.name} cannot be read as HDF5 ({err}): truncated or not HDF5?") from err
    feats, coords = _check_shapes(path, feats, coords)
    if frac is None or frac.shape != (len(coords),):
        frac = np.full(len(coords), np.nan, np.float32)  # CLAM/TRIDENT store none
    keep = _finite_rows(path, feats)
    if keep is not None:
        feats, coords, frac = feats[keep], coords[keep], frac[keep]
        if summary is not None and len(summary.pcs) == len(keep):
            summary = dataclasses.replace(summary, pcs=summary.pcs[keep], clusters=summary.clusters[keep])
    source = (
        "pathdistill"
        if "spec" in fa or "tile_px" in fa
        else ("trident" if "patch_size_level0" in ca else "clam")
    )
    size = _patch_size(path, fa, ca, coords)
    step, origin = fit_lattice(coords, min(grid_step(coords) or size, size))
    return FeatureFile(
        features=feats,
        coords=coords,
        patch_size_level0=size,
        step=step,
        origin=origin,
        mpp=_level0_mpp(fa, ca, step if abs(step - size) < 1 else float(size)),
        slide_path=next((str(_attr(fa, k)) for k in SLIDE_ATTRS if _attr(fa, k)), None),
        model=(str(_attr(fa, "model")) if _attr(fa, "model") is not None else None),
        source=source,
        path=path,
        tissue_fraction=frac.astype(np.float32, copy=False),
        summary=summary if summary is not None and len(summary.pcs) == len(coords) else None,
        weights=(str(_attr(fa, "weights")) if _attr(fa, "weights") is not None else None),
    )


def _check_path(path: Path) -> None:
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


def _finite_rows(path: Path, feats: np.ndarray) -> np.ndarray | None:
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


def _check_shapes(path: Path, feats: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _patch_size(path: Path, fa: dict, ca: dict, coords: np.ndarray) -> int:
    for attrs in (fa, ca):
        if _attr(attrs, "patch_size_level0") is not None:
            return round(float(_attr(attrs, "patch_size_level0")))
    if _attr(ca, "patch_size") is not None:  # CLAM: patch_size at patch_level, times its downsample
        down = float(_attr(ca, "downsample") or 1.0) if int(_attr(ca, "patch_level") or 0) else 1.0
        return round(float(_attr(ca, "patch_size")) * down)
    step = grid_step(coords)
    if step is None:
        raise FeatureFileError(
            f"{path.name} does not state its tile size (attr patch_size_level0 or coords.attrs patch_size) and "
            "has a single tile, so it cannot be inferred from the grid."
        )
    return step


def _level0_mpp(fa: dict, ca: dict, size: float) -> float | None:
    mpp, tile_px = _attr(fa, "mpp"), _attr(fa, "tile_px")
    if mpp is not None and tile_px is not None and math.isfinite(float(mpp)):
        return float(mpp) * float(tile_px) / size  # ours: mpp is the tiles' um/px
    for attrs in (fa, ca):
        for key in ("level0_mpp", "slide_mpp"):
            if _attr(attrs, key) is not None and math.isfinite(float(_attr(attrs, key))):
                return float(_attr(attrs, key))
    mag = _attr(ca, "level0_magnification")
    if mag is not None and float(mag) > 0:
        return 10.0 / float(mag)  # TRIDENT: 20x ~ 0.5 um/px (approximate; the slide's own MPP wins)
    return None


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
