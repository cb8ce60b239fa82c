"""Dense patch-token embedding maps of a slide: one colour per ViT patch token instead of one per tile (no Qt).

A 224 px tile of a patch-14 ViT gives 16 x 16 patch tokens (the prefix tokens, CLS and registers, are
dropped). The tokens of a random sample of tiles (``n_fit_tokens`` tokens) fit a 3-component PCA; every tile's
tokens are then projected to 3 scores as soon as they are computed (on the model's device) and summed into a
(H, W, 3) raster on the patch grid with a (H, W) count, so memory is bounded by the raster (about 17 bytes per
patch cell), never by N tiles x 256 tokens x D. With ``stride_px`` < tile px the tiles overlap; a patch cell
seen by several tiles gets the mean of their scores (= the score of their mean token, PCA being linear).
Colours: each score scaled between its 1st and 99th percentile over the tissue cells (robust to outlier tokens).

Use: run ``iter_dense_map(model, slide, *, tile_px=None, mpp=None, min_tissue=0.5, stride_px=None,
batch_size=32, max_tiles=None, n_fit_tokens=32_768, cancel=None) -> Iterator[Progress | DenseMap]`` in a
TaskRunner, then on the main thread ``napari_pathdistill._qt.dense_map.show_dense_map(viewer, result,
slide_layer.name, slide_layer.units) -> napari.layers.Image``. The tokens, their PCA and the summing canvas
are in ``inference.dense_tokens``.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import Cancelled, CorruptTileWarning, EmptyTissueError, PathDistillError
from napari_pathdistill.inference.dense_tokens import TokenCanvas, fit_pca, map_tiles, patch_size
from napari_pathdistill.inference.embed import tile_geometry
from napari_pathdistill.inference.feature_writer import slide_attrs
from napari_pathdistill.inference.outputs import skipped_message
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress
from napari_pathdistill.wsi.pyramid import Pyramid, layer_factor, open_pyramid, scale_placement
from napari_pathdistill.wsi.tiling import TileGrid, detect_tissue, make_tile_grid, tissue_fractions

#: tokens the PCA is fitted on by default (128 tiles of 16 x 16 tokens; 200 MB at D = 1536)
N_FIT_TOKENS = 32_768
#: percentiles of each score mapped to colour 0 and 255
COLOUR_PERCENTILES = (1.0, 99.0)
#: its name before it moved to inference.dense_tokens (tests/metrics/test_kmeans.py uses it)
_fit_pca = fit_pca


@dataclass
class DenseMap:
    """Patch-token embedding map of one slide.

    Attributes:
        rgb: (H, W, 3) uint8 colours of the patch cells (0 outside ``valid``).
        scores: (H, W, 3) float32 mean PCA scores per cell (0 outside ``valid``).
        valid: (H, W) bool, cells covered by at least one tile.
        counts: (H, W) uint16 tiles covering each cell (1 without overlap, up to 4 with half-tile stride).
        scale: napari scale (y, x) of the rasters in slide-layer units (um with MPP, else level-0 px) per cell.
        translate: napari translate (y, x) of the rasters: cell (0, 0) is centred on the first token's area.
        model_name: the model that made the tokens.
        patch_grid: (gh, gw) patch tokens per tile.
        stride_cells: patch cells between neighbouring tiles (``gh`` without overlap).
        grid: the tiles (N); ``grid.coords`` level-0 (x, y) top-left.
        offsets: (N, 2) int (row, col) of each tile's first cell in the rasters.
        pca_mean: (D,) float32 token mean of the PCA.
        pca_components: (3, D) float32 principal axes (zero rows when fewer than 3 exist).
        colour_limits: (2, 3) float32 score mapped to 0 (row 0) and to 255 (row 1), per channel.
        attrs: what the map was computed from, under the keys of a tile-level feature file's attrs
            (``inference.feature_writer.slide_attrs``: ``slide_path``, ``model``, ``weights``, ``tile_px``,
            ``mpp``, ``min_tissue``, ...) plus ``stride_px`` (model px between neighbouring tiles).
        skipped: (S,) int indices into ``grid`` of the tiles that could not be decoded (not on the map).
    """

    rgb: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    counts: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    model_name: str
    patch_grid: tuple[int, int]
    stride_cells: int
    grid: TileGrid
    offsets: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    colour_limits: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def project(self, tokens: np.ndarray) -> np.ndarray:
        """(..., D) patch tokens -> (..., 3) PCA scores with this map's PCA."""
        return (np.asarray(tokens, np.float32) - self.pca_mean) @ self.pca_components.T

    def patch_at(self, row: float, col: float) -> tuple[int, int, int] | None:
        """(tile index, patch row, patch col) under a raster position (napari data coordinates, cell centres at
        integers): where tiles overlap, the decoded tile whose centre is nearest; None outside the mapped cells."""
        r, c = int(np.floor(row + 0.5)), int(np.floor(col + 0.5))
        (h, w), (gh, gw) = self.valid.shape, self.patch_grid
        if not (0 <= r < h and 0 <= c < w and self.valid[r, c]):
            return None
        lo, hi = np.searchsorted(self.offsets[:, 0], [r - gh + 1, r + 1])  # offsets are row-major
        d = np.array([r, c]) - self.offsets[lo:hi]
        inside = np.flatnonzero((d >= 0).all(1) & (d[:, 0] < gh) & (d[:, 1] < gw))
        inside = inside[~np.isin(lo + inside, self.skipped)]
        if not len(inside):
            return None
        near = inside[np.argmin(np.abs(d[inside] - (np.array([gh, gw]) - 1) / 2).max(1))]
        return lo + int(near), int(d[near, 0]), int(d[near, 1])


def dense_grid(
    pyramid: Pyramid, tile_px: int, mpp: float, min_tissue: float, stride_px: int
) -> tuple[TileGrid, np.ndarray, tuple[int, int]]:
    """Tissue tiles on a lattice of stride ``stride_px`` model px: (grid of the N kept tiles, (N, 2) int lattice
    (row, col) of each, (rows, cols) of the whole lattice). ``stride_px == tile_px`` gives ``make_tile_grid``'s
    tiles (those of the tile-level map)."""
    mask = detect_tissue(pyramid) if min_tissue > 0 else None
    base = make_tile_grid(pyramid, tile_px=tile_px, mpp=mpp, min_tissue=0)  # geometry only
    size, step = base.size_level0, base.size_level0 * stride_px / tile_px
    h0, w0 = base.slide_shape
    rows, cols = int((h0 - size) // step) + 1, int((w0 - size) // step) + 1
    lattice = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    coords = np.round(lattice[:, ::-1] * step).astype(np.int64)
    frac = tissue_fractions(mask, coords, size) if mask is not None else np.ones(len(coords))
    keep = frac >= min_tissue
    grid = dataclasses.replace(base, coords=coords, tissue_fraction=frac).subset(keep)
    return grid, lattice[keep], (rows, cols)


def _check_stride(stride_px: int | None, tile_px: int, patch: int, name: str) -> int:
    """The stride in model px (``tile_px`` when None), a multiple of the patch size in (0, tile_px], on tiles
    whose side is a multiple of the patch size of the model ``name``."""
    if tile_px % patch:
        low = tile_px // patch * patch
        raise PathDistillError(
            f"tile {tile_px} px is not a multiple of the patch size of {name} ({patch} px): its patch tokens "
            f"would not cover the tile. Use e.g. {low} or {low + patch} px tiles (um/px sets the magnification)."
        )
    stride = tile_px if stride_px is None else int(stride_px)
    if not 0 < stride <= tile_px or stride % patch:
        half = max(1, tile_px // patch // 2) * patch
        raise PathDistillError(
            f"stride {stride} px and tile {tile_px} px must be multiples of the patch size ({patch} px), with "
            f"stride <= tile, so that the patch grids of overlapping tiles align (e.g. {half} px, about half a "
            "tile)."
        )
    return stride


def colour_scores(scores: np.ndarray, valid: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) scores -> ((H, W, 3) uint8, (2, 3) limits): each channel's 1st-99th percentile (over at most
    1M random ``valid`` cells) -> 0-255, clipped; constant channels are 128, cells outside ``valid`` 0."""
    idx = np.flatnonzero(valid)
    if len(idx) > 1_000_000:
        idx = np.random.default_rng(seed).choice(idx, 1_000_000, replace=False)
    sample = scores.reshape(-1, 3)[idx]
    limits = np.percentile(sample, COLOUR_PERCENTILES, axis=0) if len(idx) else np.zeros((2, 3))
    limits = limits.astype(np.float32)
    span = limits[1] - limits[0]
    rgb = np.zeros(scores.shape, np.uint8)
    for r in range(0, len(scores), 1024):  # row blocks: no float64 copy of a whole-slide raster
        s = (scores[r : r + 1024] - limits[0]) / np.where(span > 0, span, 1)
        s = np.where(span > 0, np.clip(s, 0, 1), 0.5)
        rgb[r : r + 1024] = np.rint(s * 255).astype(np.uint8) * valid[r : r + 1024, :, None]
    return rgb, limits


def iter_dense_map(
    model: EmbeddingModel,
    slide: str | Path,
    *,
    tile_px: int | None = None,
    mpp: float | None = None,
    min_tissue: float = 0.5,
    stride_px: int | None = None,
    batch_size: int = 32,
    max_tiles: int | None = None,
    n_fit_tokens: int = N_FIT_TOKENS,
    fallback_mpp: float | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | DenseMap]:
    """Detect tissue, tile, map patch tokens; yields ``Progress(done, N, "patch tokens")``, then one DenseMap.

    Args:
        model, slide: a ViT (its patch tokens; CLS and register tokens are dropped) and the slide file.
        tile_px, mpp: tile side (model px) and um/px; None: the model's (see ``inference.embed.tile_geometry``).
        min_tissue: minimum tissue fraction of a tile (0 keeps the whole lattice).
        stride_px: model px between neighbouring tiles, a multiple of the patch size <= ``tile_px``; None:
            ``tile_px`` (no overlap, the tile-level map's tiles). Half a tile: each cell seen by up to 4 tiles.
        batch_size, max_tiles: tiles per forward pass; only the first ``max_tiles`` tiles (row-major).
        n_fit_tokens: tokens of the random tiles (seeded) the PCA is fitted on.
        fallback_mpp: level-0 um/px of a slide whose file states none (tiles cut at ``mpp``; the map placed in
            level-0 px, as napari shows such a slide: ``wsi.pyramid.layer_factor``).
        cancel: set it to stop; the generator then raises ``Cancelled``.

    Raises:
        PathDistillError: not a ViT, or a stride that is not a multiple of the patch size.
        WSIError: the slide cannot be read.
        EmptyTissueError: no tile has at least ``min_tissue`` tissue.
        Cancelled: ``cancel`` was set.
    """
    tile_px, mpp = tile_geometry(model, tile_px, mpp)
    patch = patch_size(model)
    stride = _check_stride(stride_px, tile_px, patch, model.spec.name)
    with open_pyramid(slide, fallback_mpp=fallback_mpp) as pyramid:
        to_layer = layer_factor(pyramid)
        attrs = {**slide_attrs(pyramid, model, tile_px, mpp, min_tissue), "stride_px": stride}
        yield Progress(0, 0, "tissue detection")
        grid, lattice, shape = dense_grid(pyramid, tile_px, mpp, min_tissue, stride)
        if len(grid.coords) == 0:
            raise EmptyTissueError(
                f"No {tile_px}px tile of {Path(slide).name} has >= {min_tissue:.0%} tissue; "
                "lower 'min tissue' or check the tissue mask with the Tissue widget."
            )
        if max_tiles is not None and len(grid.coords) > max_tiles:
            grid, lattice = grid.subset(np.arange(max_tiles)), lattice[:max_tiles]
        g, k = tile_px // patch, stride // patch
        canvas = TokenCanvas(((shape[0] - 1) * k + g, (shape[1] - 1) * k + g))
        offsets = lattice * k
        skipped: list[int] = []
        pca = yield from map_tiles(model, pyramid, grid, offsets, canvas, batch_size, n_fit_tokens, cancel,
                                   skipped)  # fmt: skip
    if pca is None:
        raise Cancelled("Dense map cancelled.")
    if skipped:  # relayed to a notification by the widget's TaskRunner
        then = "the patch-token map is transparent where no other tile covers them"
        warnings.warn(
            f"{Path(slide).name}: {skipped_message(len(skipped), then)}", CorruptTileWarning, stacklevel=2
        )
    yield Progress(len(grid), len(grid), "colours")
    dense = _finish(canvas, grid, offsets, pca, model.spec.name, (g, k))
    scale, translate = scale_placement(dense.scale, dense.translate, to_layer)
    yield dataclasses.replace(dense, scale=scale, translate=translate, attrs=attrs, skipped=np.sort(skipped))


def _finish(
    canvas: TokenCanvas, grid: TileGrid, offsets: np.ndarray, pca: tuple[np.ndarray, np.ndarray], name: str,
    cells: tuple[int, int],
) -> DenseMap:  # fmt: skip
    """Mean scores, colours and napari geometry of a filled canvas; ``cells`` = (patches per tile side,
    stride in patches)."""
    valid, scores = canvas.counts > 0, canvas.sums
    scores /= np.maximum(canvas.counts, 1)[..., None]  # in place: the sums become the mean scores
    rgb, limits = colour_scores(scores, valid)
    g, k = cells
    cell, px = grid.size_level0 / g, grid.slide_mpp or 1.0
    t = (cell - 1) / 2 * px  # level-0 pixel i is centred at i * px; cell 0 spans pixels [0, cell)
    return DenseMap(rgb, scores, valid, canvas.counts, (cell * px, cell * px), (t, t), name, (g, g), k, grid,
                    offsets, pca[0], pca[1], limits)  # fmt: skip
