"""QuPath interop: tile results as a GeoJSON FeatureCollection QuPath imports (File > Import objects).

Each tile becomes a square ``Polygon`` in level-0 pixel coordinates (QuPath's image space), with
``properties.objectType`` (``"detection"`` by default, so thousands of tiles stay light in QuPath; or
``"annotation"``), ``properties.classification = {"name": ..., "color": [r, g, b]}`` and
``properties.measurements = {name: value}`` such as the cosine similarity: QuPath 0.4's GeoJSON, which QuPath
>= 0.4 reads (``PathObjectTypeAdapters``, ``GsonTools.PathClassTypeAdapter``; before 0.4 QuPath wrote classes
with ``colorRGB`` and measurements as a list of name/value objects). Three exports: k-means clusters of a slide's
features, the tiles most similar to a query tile, and the tiles whose similarity passes a threshold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.palette import cluster_rgb255
from napari_pathdistill.inference.tile_collection import TileCollection
from napari_pathdistill.metrics.features import cosine_to, kmeans_labels


def tiles_geojson(
    coords: np.ndarray,
    size_level0: float,
    classes: list[str],
    colors: dict[str, tuple[int, int, int]],
    *,
    measurements: dict[str, np.ndarray] | None = None,
    object_type: str = "detection",
) -> TileCollection:
    """A QuPath FeatureCollection of square tiles.

    Args:
        coords: (N, 2) level-0 (x, y) top-left corners.
        size_level0: tile side in level-0 pixels.
        classes: (N,) classification name per tile.
        colors: classification name -> (r, g, b) 0-255.
        measurements: name -> (N,) values, stored as QuPath measurements.
        object_type: ``"detection"`` or ``"annotation"``.

    Returns:
        The FeatureCollection: a read-only mapping equal to its GeoJSON dict that :func:`write_geojson` writes
        without building a dict per tile (:class:`~napari_pathdistill.inference.tile_collection.TileCollection`).
    """
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be detection or annotation, got {object_type!r}")
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if len(classes) != len(xy):
        raise ValueError(f"{len(classes)} class names for {len(xy)} tiles")
    if missing := set(classes) - set(colors):
        raise ValueError(f"no colour for the classes {sorted(missing)}")
    meas = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in (measurements or {}).items()}
    if any(len(v) != len(xy) for v in meas.values()):
        raise ValueError(f"measurements of another length than the {len(xy)} tiles")
    return TileCollection(xy, float(size_level0), list(classes), dict(colors), meas, object_type)


def write_geojson(collection: Mapping[str, Any], path: str | Path) -> Path:
    """Write a FeatureCollection (a :class:`TileCollection` or a plain dict) atomically (UTF-8 JSON); returns the
    path."""
    text = collection.text() if isinstance(collection, TileCollection) else json.dumps(collection)
    return atomic_write_text(path, text)


def read_features(h5_path: str | Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(features (N, D), coords (N, 2) level-0 xy, tile side in level-0 px) of an embedding HDF5 file.

    Read by :func:`~napari_pathdistill.inference.feature_files.read_feature_file` (ours, CLAM's and TRIDENT's
    layouts, its path checks; rows with NaN or inf features left out with a warning).

    Raises:
        FeatureFileError: a missing path, a folder, a file that is no HDF5, or no usable feature file.
    """
    from napari_pathdistill.inference.feature_files import read_feature_file

    ff = read_feature_file(h5_path)
    return ff.features, ff.coords, float(ff.patch_size_level0)


def cluster_collection(h5_path: str | Path, k: int, seed: int = 0) -> TileCollection:
    """k-means clusters of a slide's tiles as QuPath classes ``cluster 1..k``.

    Raises:
        PathDistillError: ``k`` is not between 1 and the number of tiles (no cluster is silently dropped or
            merged), or the file is unusable (:func:`read_features`).
    """
    feats, coords, size = read_features(h5_path)
    if not 1 <= k <= len(feats):
        raise PathDistillError(
            f"cannot make {k} clusters of the {len(feats)} tiles of {Path(h5_path).name}: "
            f"k must be between 1 and {len(feats)}."
        )
    return clusters_geojson(coords, size, kmeans_labels(feats, k, seed=seed))


def clusters_geojson(coords: np.ndarray, size_level0: float, labels: np.ndarray) -> TileCollection:
    """(N, 2) level-0 top-left corners and (N,) cluster labels 1..k -> classes ``cluster 1..k`` (coloured as
    napari's clusters layer: :func:`cluster_colours`)."""
    names = [f"cluster {int(c)}" for c in labels]
    return tiles_geojson(coords, size_level0, names, cluster_colours(int(np.max(labels, initial=1))))


def cluster_colours(k: int) -> dict[str, tuple[int, int, int]]:
    """QuPath class name ``cluster c`` -> 0-255 RGB for clusters 1..k: the palette of the Embed widget's clusters
    layer and legend (``inference.palette.cluster_rgb``)."""
    return {f"cluster {c}": rgb for c, rgb in enumerate(cluster_rgb255(k), start=1)}


def similar_collection(
    h5_path: str | Path, query: int, *, top_k: int | None = None, threshold: float | None = None
) -> TileCollection:
    """The query tile (class ``query``) and the tiles most similar to it (class ``similar``), by cosine.

    Args:
        h5_path: the embedding file.
        query: row of the query tile in the file (rows with NaN / inf features, which :func:`read_features`
            leaves out, are counted: row 5 is the file's row 5 whatever rows before it were dropped).
        top_k: keep the k most similar tiles, or
        threshold: keep every tile with cosine >= threshold.
    """
    feats, coords, size = read_features(h5_path)
    row = _kept_row(h5_path, query, coords)
    return similarity_collection(coords, size, cosine_to(feats, row), query=row, top_k=top_k,
                                 threshold=threshold)  # fmt: skip


def _kept_row(h5_path: str | Path, row: int, coords: np.ndarray) -> int:
    """The row among the read (finite) rows, whose level-0 ``coords`` (M, 2) are given, of the file's ``row``.

    Raises:
        PathDistillError: ``row`` is past the file's rows, or its features are NaN / inf (left out).
    """
    import h5py

    name = Path(h5_path).name
    with h5py.File(h5_path, "r") as f:
        n = len(f["coords"])
        if not 0 <= row < n:
            raise PathDistillError(f"query tile {row} is out of range: {name} has {n} tiles.")
        if n == len(coords):  # no row left out: rows are the file's
            return row
        xy, finite = np.asarray(f["coords"][row])[:2], bool(np.isfinite(f["features"][row]).all())
    hit = np.flatnonzero((np.asarray(coords)[:, :2] == xy).all(axis=1)) if finite else np.empty(0, np.int64)
    if not len(hit):
        raise PathDistillError(
            f"query tile {row} of {name} has NaN or inf features (left out of the export): choose another tile."
        )
    return int(hit[0])


def similarity_collection(
    coords: np.ndarray,
    size_level0: float,
    cosine: np.ndarray,
    *,
    query: int | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
) -> TileCollection:
    """Tiles similar to a query as classes ``query`` (gold) and ``similar`` (crimson), with their cosine.

    Args:
        coords: (N, 2) level-0 (x, y) top-left corners of the searched tiles.
        size_level0: tile side in level-0 pixels.
        cosine: (N,) cosine of each tile to the query.
        query: row of the query tile among them (None: the query lies on another slide).
        top_k: keep the k most similar tiles, or
        threshold: keep every tile with cosine >= threshold.
    """
    if (top_k is None) == (threshold is None):
        raise ValueError("give exactly one of top_k or threshold")
    cos = np.asarray(cosine)
    others = np.flatnonzero(np.arange(len(cos)) != (-1 if query is None else query))
    if top_k is not None:
        keep = others[np.argsort(-cos[others], kind="stable")[:top_k]]
    else:
        keep = others[cos[others] >= threshold]
    rows = keep if query is None else np.r_[query, keep]
    names = ["query"] * (query is not None) + ["similar"] * len(keep)
    colors = {"query": (255, 215, 0), "similar": (220, 20, 60)}
    return tiles_geojson(coords[rows], size_level0, names, colors, measurements={"cosine": cos[rows]})


def tile_at(coords: np.ndarray, size_level0: float, x: float, y: float) -> int:
    """Row of the tile containing level-0 point (x, y); raises PathDistillError when none does."""
    xy = np.asarray(coords, dtype=np.float64)
    inside = np.flatnonzero(
        (xy[:, 0] <= x) & (x < xy[:, 0] + size_level0) & (xy[:, 1] <= y) & (y < xy[:, 1] + size_level0)
    )
    if not len(inside):
        raise PathDistillError(f"no embedded tile contains level-0 point ({x:g}, {y:g}).")
    return int(inside[0])
