"""Slide-level embedding maps for the Embed widget: tiles -> embeddings -> PCA colours, k-means clusters.

Pure core (no Qt/napari). One generator, :func:`iter_slide_map`, yields :class:`Progress` while it embeds and
finally one :class:`SlideMap` holding everything the widget turns into layers, already rasterised on the tile
grid with napari ``scale``/``translate`` in the units of the slide layer (see ``wsi.grid_to_image``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_pathdistill.errors import Cancelled, EmptyTissueError
from napari_pathdistill.inference.embed import EmbeddingResult, iter_embeddings, tile_geometry
from napari_pathdistill.inference.map_summary import MapSummary, for_k
from napari_pathdistill.metrics.features import scores_rgb
from napari_pathdistill.progress import Progress, relabel
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import TileGrid, detect_tissue, grid_to_image, make_tile_grid
from napari_pathdistill.wsi.tissue_grid import background_row

if TYPE_CHECKING:  # torch-free at import: reading feature files needs no model
    import pandas as pd

    from napari_pathdistill.models.embedding_model import EmbeddingModel


@dataclass
class SlideMap:
    """Embedding map of one slide.

    Attributes:
        features: (N, D) float32 tile embeddings.
        grid: the tile grid (N tiles).
        rgb: (N, 3) PCA colours in [0, 1].
        clusters: (N,) int k-means labels in 1..k.
        pcs: (N, P) first principal components (P <= 3).
        index_image: (rows, cols) int32 tile index + 1 per grid cell, 0 = no tile.
        scale: napari scale (y, x) of the rasterised maps, in slide-layer units per grid cell.
        translate: napari translate (y, x) of the rasterised maps.
        model_name: the model that made the embeddings.
        features_file: the HDF5 feature file the features were read from or written to (None: in memory only).
        weights: 16 hex digits naming the weights that made the embeddings (None: unknown, e.g. a CLAM file);
            two checkpoints of one model name are told apart by it.
    """

    features: np.ndarray
    grid: TileGrid
    rgb: np.ndarray
    clusters: np.ndarray
    pcs: np.ndarray
    index_image: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    model_name: str
    features_file: Path | None = None
    weights: str | None = None

    def raster(self, values: np.ndarray, fill: float = 0) -> np.ndarray:
        """Per-tile values (N,) or (N, C) -> (rows, cols[, C]) image on the grid (same scale/translate)."""
        return grid_to_image(self.grid, values, fill=fill)[0]

    @property
    def n_clusters(self) -> int:
        """K, the largest cluster id (clusters are 1..K)."""
        return max(1, int(self.clusters.max())) if len(self.clusters) else 1

    def cluster_labels(self) -> np.ndarray:
        """(N,) int64 label of each tile in the clusters layer: ``i * K + c`` for tile i of cluster c (1..K).

        Unique per tile, so napari's hover finds the tile's row of :meth:`feature_table` (its ``index`` column),
        and ``(label - 1) % K + 1 == c``, so a cyclic colormap of K colours paints each tile in its cluster's
        colour without a per-tile colour table (a direct colormap of 100k labels costs napari seconds per
        redraw).
        """
        return np.arange(len(self.clusters), dtype=np.int64) * self.n_clusters + self.clusters

    def cluster_label_image(self) -> np.ndarray:
        """(rows, cols) int32 raster of :meth:`cluster_labels` (0 where there is no tile)."""
        values = np.r_[0, self.cluster_labels()].astype(np.int32)
        return values[self.index_image]

    def feature_table(self) -> pd.DataFrame:
        """The clusters layer's ``features`` (a pandas DataFrame): row 0 = background, row i + 1 = tile i; the
        ``index`` column holds each row's label value (:meth:`cluster_labels`), which napari looks hovered labels
        up by. ``tile``, ``x``, ``y`` (level-0 px) and ``cluster`` are shown exactly on hover (``tile: 0, x: 3136,
        y: 0``) and row 0 names nothing: they, ``tissue_fraction`` and ``pc1..pc3`` are
        ``wsi.tissue_grid.background_row`` columns (integers as categoricals, floats as float64, row 0 missing)."""
        import pandas as pd

        cols: dict[str, Any] = {"index": np.r_[0, self.cluster_labels()]}
        xy = np.asarray(self.grid.coords, np.int64)
        per_tile = {"tile": np.arange(len(self.grid)), "x": xy[:, 0], "y": xy[:, 1], "cluster": self.clusters,
                    "tissue_fraction": self.grid.tissue_fraction}  # fmt: skip
        per_tile.update({f"pc{j + 1}": self.pcs[:, j] for j in range(self.pcs.shape[1])})
        cols.update({name: background_row(values) for name, values in per_tile.items()})
        return pd.DataFrame(cols)

    def tile_at(self, row: float, col: float) -> int | None:
        """Index of the tile under a grid-image position (napari data coordinates, pixel centres at integers)."""
        r, c = int(np.floor(row + 0.5)), int(np.floor(col + 0.5))
        rows, cols = self.index_image.shape
        if not (0 <= r < rows and 0 <= c < cols):
            return None
        value = int(self.index_image[r, c])
        return value - 1 if value > 0 else None

    def tile_centers(self, scale: Any = None, translate: Any = None) -> np.ndarray:
        """(N, 2) centres (y, x) of the tiles in world units: of the map raster placed at ``scale`` /
        ``translate`` (a map layer's, wherever its slide layer was moved), by default at the map's own placement
        (slide-layer units as our reader opens the slide)."""
        sy, sx = self.scale if scale is None else scale
        ty, tx = self.translate if translate is None else translate
        rr, cc = np.nonzero(self.index_image)
        centers = np.zeros((len(self.clusters), 2))
        idx = self.index_image[rr, cc] - 1
        centers[idx, 0] = ty + rr * sy  # napari: pixel r is centred at t + r * s
        centers[idx, 1] = tx + cc * sx
        return centers


def build_slide_map(
    result: EmbeddingResult, k: int, seed: int = 0, summary: MapSummary | None = None
) -> SlideMap:
    """Turn an :class:`EmbeddingResult` into a :class:`SlideMap` (PCA colours, k-means, index raster).

    Args:
        result: the features and their grid.
        k: clusters (capped at N).
        seed: k-means seed.
        summary: PCA scores / k-means labels stored with the features (``inference.map_summary``): reused
            instead of refitted (k-means reruns when it was for another k).
    """
    feats, grid = result.features, result.grid
    n = len(feats)
    index_image, scale, translate = grid_to_image(grid, np.arange(1, n + 1, dtype=np.int32), fill=0)
    summary = for_k(summary, feats, k, seed)  # PCA once: colours and the pc1..pc3 columns
    return SlideMap(
        features=feats,
        grid=grid,
        rgb=scores_rgb(summary.pcs.astype(np.float64)),
        clusters=summary.clusters,
        pcs=summary.pcs,
        index_image=index_image.astype(np.int32),
        scale=tuple(scale),  # type: ignore[arg-type]
        translate=tuple(translate),  # type: ignore[arg-type]
        model_name=result.model_name,
        weights=result.weights,
    )


def iter_slide_map(
    model: EmbeddingModel,
    slide: str | Path,
    *,
    tile_px: int | None = None,
    mpp: float | None = None,
    min_tissue: float = 0.5,
    batch_size: int = 32,
    k: int = 8,
    max_tiles: int | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | SlideMap]:
    """Detect tissue, tile, embed and summarise one slide; yields Progress, then one SlideMap.

    Tiles are ``tile_px`` px at ``mpp`` um/px, by default the model's (``model.spec``, see
    :func:`~napari_pathdistill.inference.embed.tile_geometry`).

    Raises:
        WSIError: the slide cannot be read.
        EmptyTissueError: no tile has at least ``min_tissue`` tissue.
        Cancelled: ``cancel`` was set.
    """
    tile_px, mpp = tile_geometry(model, tile_px, mpp)
    with open_pyramid(slide) as pyramid:
        yield Progress(0, 0, "tissue detection")
        grid = make_tile_grid(
            pyramid, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue, mask=detect_tissue(pyramid)
        )
        if len(grid.coords) == 0:
            raise EmptyTissueError(
                f"No {tile_px}px tile of {Path(slide).name} has >= {min_tissue:.0%} tissue; "
                "lower 'min tissue' or check the tissue mask with the Tissue widget."
            )
        if max_tiles is not None and len(grid.coords) > max_tiles:
            grid = grid.subset(np.arange(max_tiles))
        result = yield from relabel(
            iter_embeddings(model, pyramid, grid, batch_size=batch_size, cancel=cancel)
        )
    if (cancel is not None and cancel.is_set()) or result is None:
        raise Cancelled("Embedding cancelled.")
    yield Progress(0, 0, "PCA and k-means")
    yield build_slide_map(result, k)
