"""The map summary stored in our feature files: PCA scores and k-means labels of the rows, so that re-opening a
file (the Embed widget's cache hit, the feature-file reader) shows its map without refitting anything.

Pure core (h5py, numpy). Layout: a group ``map`` beside ``features``/``coords`` with datasets ``pcs`` (N, p<=3)
float32 and ``clusters`` (N,) int32 (1..k), attrs ``k``, ``seed``, ``version``. It is written into the
``.partial`` file once every row is embedded, before ``outputs.finish_output`` renames it (or copies it without
undecodable rows: the summary is computed on the kept rows and copied as is), so a complete file carries it and
a killed run leaves no half-summarised complete file. CLAM/TRIDENT files and ours from before the summary have
none: their map is computed when they are opened, as before. A summary that does not match the file's rows
(other N, other version) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import NonFiniteFeaturesError

GROUP = "map"
VERSION = 1


@dataclass
class MapSummary:
    """PCA scores and k-means labels of a feature file's rows.

    Attributes:
        pcs: (N, p) float32 first principal components (p <= 3).
        clusters: (N,) int32 k-means labels in 1..k.
        k: the k the labels were computed for.
        seed: the k-means seed.
    """

    pcs: np.ndarray
    clusters: np.ndarray
    k: int
    seed: int = 0


def summarise(
    features: np.ndarray,
    k: int,
    seed: int = 0,
    pcs: np.ndarray | None = None,
    reference_axes: np.ndarray | None = None,
) -> MapSummary:
    """PCA (3 components) and k-means (``k`` capped at N) of (N, D) ``features``; ``pcs`` reuses known scores;
    computed ones are oriented along (q, D) ``reference_axes`` when given (``metrics.features.orient_scores``).

    Raises:
        NonFiniteFeaturesError: a row holds NaN or inf (the PCA would stop with "SVD did not converge").
    """
    from napari_pathdistill.metrics.features import (
        kmeans_labels,
        orient_scores,
        principal_components,
        row_norms,
    )

    norms = row_norms(features)
    bad = int((~np.isfinite(norms)).sum())  # NaN / inf reach a row's norm
    if bad:
        raise NonFiniteFeaturesError(
            f"{bad} of {len(features)} tiles got NaN or inf embeddings (a numerical overflow in the model, e.g. "
            "under float16 autocast): no map can be computed from them. Embed again in bfloat16 or float32."
        )
    k = max(1, min(int(k), len(features)))
    if pcs is None:
        pcs = principal_components(features, 3, dtype=np.float64)
        if reference_axes is not None:
            pcs = orient_scores(pcs, features, reference_axes)
    clusters = kmeans_labels(features, k, seed=seed, norms=norms)
    return MapSummary(np.asarray(pcs, np.float32), np.asarray(clusters, np.int32), k, seed)


def write_summary(f: Any, summary: MapSummary) -> None:
    """Store ``summary`` in the open h5py file ``f`` (replacing an earlier one)."""
    if GROUP in f:
        del f[GROUP]
    g = f.create_group(GROUP)
    g.create_dataset("pcs", data=summary.pcs.astype(np.float32))
    g.create_dataset("clusters", data=summary.clusters.astype(np.int32))
    g.attrs.update({"k": int(summary.k), "seed": int(summary.seed), "version": VERSION})


def read_summary(f: Any, n_rows: int) -> MapSummary | None:
    """The summary of the open h5py file ``f`` when it has one for its ``n_rows`` rows, else None."""
    g = f.get(GROUP)
    try:
        if g is None or int(g.attrs.get("version", -1)) != VERSION:
            return None
        pcs, clusters = g["pcs"][()], g["clusters"][()]
        k, seed = int(g.attrs["k"]), int(g.attrs.get("seed", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if pcs.ndim != 2 or len(pcs) != n_rows or pcs.shape[1] > 3 or clusters.shape != (n_rows,):
        return None
    return MapSummary(pcs.astype(np.float32, copy=False), clusters.astype(np.int32, copy=False), k, seed)


def for_k(summary: MapSummary | None, features: np.ndarray, k: int, seed: int = 0) -> MapSummary:
    """``summary`` when it is for ``k`` clusters (capped at N) and ``seed``; else the missing part computed (the
    stored PCA is kept, only k-means reruns)."""
    k = max(1, min(int(k), len(features)))
    if summary is not None and summary.k == k and summary.seed == seed:
        return summary
    return summarise(features, k, seed, pcs=None if summary is None else summary.pcs)


def summarise_partial(
    partial: Path,
    k: int,
    features: np.ndarray | None = None,
    seed: int = 0,
    reference_axes: np.ndarray | None = None,
) -> MapSummary | None:
    """Compute and store the summary of a fully written ``partial`` file, over the rows ``finish_output`` keeps.

    Args:
        partial: the ``.h5.partial`` file, every row written.
        k: clusters.
        features: its (N, D) rows already in memory (read from the file when None).
        reference_axes: (q, D) axes the PCA scores are oriented along (the live map's), or None.

    Returns:
        The stored summary; None when no row is kept (``finish_output`` then raises ``CorruptTileError``).

    Raises:
        NonFiniteFeaturesError: the model wrote NaN / inf rows; the file is moved to ``<name>.h5.nonfinite`` so
            that the next run embeds the slide again instead of resuming into the same error.
    """
    import h5py

    from napari_pathdistill.inference.disk_room import reserve_tail, summary_bytes

    with h5py.File(partial, "r+") as f:
        skipped = np.unique(f["skipped_rows"][()]) if "skipped_rows" in f else np.zeros(0, np.int64)
        if features is None:
            features = f["features"][()]
        if len(skipped):
            features = np.delete(features, skipped, axis=0)
        if not len(features):
            return None
        try:
            summary = summarise(features, k, seed, reference_axes=reference_axes)
        except NonFiniteFeaturesError as err:
            error = err
        else:
            reserve_tail(partial, summary_bytes(len(features)), len(features))
            write_summary(f, summary)
            return summary
    kept = partial.with_name(partial.name.removesuffix(".partial") + ".nonfinite")
    partial.replace(kept)
    raise NonFiniteFeaturesError(
        f"{error} The features are kept in {kept}; the next run embeds the slide again."
    )
