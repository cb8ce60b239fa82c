"""Teacher-vs-student attention on the same tiles, stitched into slide-aligned mosaics (pure core, no Qt).

For a few tiles of a slide, :func:`iter_attention_pair` computes the teacher's and the student's CLS->patch
attention (or Grad-CAM for a CNN, via ``inference.attention.attention_maps``), resamples both to a common
``(g, g)`` grid, measures their per-tile agreement (Pearson correlation of the two maps) and stitches the maps
into mosaics placed on the slide with napari ``scale``/``translate`` in the slide layer's units.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_pathdistill.errors import Cancelled, EmptyTissueError
from napari_pathdistill.inference.attention import attention_maps
from napari_pathdistill.metrics.agreement import attention_agreement
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import TileGrid, detect_tissue, make_tile_grid, read_tiles


@dataclass
class AttentionPair:
    """Teacher and student attention on the same tiles.

    Attributes:
        coords: (B, 2) tile top-left (x, y) in level-0 px.
        teacher: (B, g, g) teacher maps in [0, 1].
        student: (B, g, g) student maps in [0, 1].
        agreement: (B,) Pearson correlation of each tile's two maps (NaN when a map is constant).
        teacher_mosaic, student_mosaic, difference: (rows * g, cols * g) float32 images (NaN outside tiles);
            difference = student - teacher.
        scale, translate: napari geometry of the mosaics in slide-layer units.
        tile_index: (rows, cols) int32 tile number + 1 per tile cell (0 = no tile), for a Labels layer.
        tile_scale, tile_translate: napari geometry of ``tile_index``.
    """

    coords: np.ndarray
    teacher: np.ndarray
    student: np.ndarray
    agreement: np.ndarray
    teacher_mosaic: np.ndarray
    student_mosaic: np.ndarray
    difference: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    tile_index: np.ndarray
    tile_scale: tuple[float, float]
    tile_translate: tuple[float, float]

    def feature_table(self) -> dict[str, np.ndarray]:
        """Columns for the Labels layer's ``features``; row i describes label i (row 0 = background)."""
        nan = [np.nan]
        return {
            "tile": np.arange(-1, len(self.coords)),
            "x": np.r_[nan, self.coords[:, 0]],
            "y": np.r_[nan, self.coords[:, 1]],
            "agreement": np.r_[nan, self.agreement],
            "teacher_max": np.r_[nan, self.teacher.reshape(len(self.coords), -1).max(1)],
            "student_max": np.r_[nan, self.student.reshape(len(self.coords), -1).max(1)],
        }


def resample_maps(maps: np.ndarray, g: int) -> np.ndarray:
    """(B, h, w) -> (B, g, g) by bilinear interpolation (maps of different patch grids become comparable)."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(g, g), mode="bilinear", align_corners=False)[:, 0].numpy()


def select_tiles(grid: TileGrid, bbox: tuple[float, float, float, float] | None, n: int) -> np.ndarray:
    """Indices of at most ``n`` tiles whose centres lie in ``bbox`` = (x0, y0, x1, y1) level-0 px.

    Tiles closest to the box centre come first; ``bbox=None`` means the whole slide.
    """
    centers = grid.coords + grid.size_level0 / 2
    if bbox is None:
        x0, y0 = centers.min(0)
        x1, y1 = centers.max(0)
    else:
        x0, y0, x1, y1 = bbox
    inside = np.flatnonzero(
        (centers[:, 0] >= x0) & (centers[:, 0] <= x1) & (centers[:, 1] >= y0) & (centers[:, 1] <= y1)
    )
    mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    order = np.argsort(np.linalg.norm(centers[inside] - mid, axis=1), kind="stable")
    return inside[order[:n]]


def stitch(
    grid: TileGrid, idx: np.ndarray, maps: np.ndarray, slide_mpp: float | None
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Place (B, g, g) tile maps on a mosaic; returns (image, scale, translate) in slide-layer units.

    Tiles sit on the regular grid (spacing ``size_level0``); cells without a chosen tile are NaN.
    """
    g = maps.shape[-1]
    step = grid.size_level0
    origin = grid.coords[idx].min(0)
    cells = np.rint((grid.coords[idx] - origin) / step).astype(int)  # (B, 2) (col, row)
    rows, cols = cells[:, 1].max() + 1, cells[:, 0].max() + 1
    mosaic = np.full((rows * g, cols * g), np.nan, dtype=np.float32)
    for (c, r), m in zip(cells, maps, strict=True):
        mosaic[r * g : (r + 1) * g, c * g : (c + 1) * g] = m
    unit = slide_mpp if slide_mpp is not None else 1.0
    px = step / g  # level-0 px per mosaic pixel
    # level-0 pixel p is centred at world p * unit (napari convention); mosaic pixel 0 spans origin..origin+px
    translate = (float((origin[1] - 0.5 + px / 2) * unit), float((origin[0] - 0.5 + px / 2) * unit))
    return mosaic, (px * unit, px * unit), translate


def iter_attention_pair(
    teacher: EmbeddingModel,
    student: EmbeddingModel,
    slide: str | Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    n_tiles: int = 16,
    mode: str = "last",
    head: int | None = None,
    grid_size: int = 16,
    min_tissue: float = 0.5,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | AttentionPair]:
    """Attention of both models on up to ``n_tiles`` tissue tiles in ``bbox``; yields Progress then the pair.

    Tiles are cut at the student's ``tile_px``/``mpp``; both models see the same pixels.
    """
    with open_pyramid(slide) as pyr:
        grid = make_tile_grid(pyr, tile_px=student.spec.tile_px, mpp=student.spec.mpp, min_tissue=min_tissue,
                              mask=detect_tissue(pyr))  # fmt: skip
        idx = select_tiles(grid, bbox, n_tiles) if len(grid.coords) else np.zeros(0, int)
        if len(idx) == 0:
            raise EmptyTissueError(
                "No tissue tile in the chosen region: zoom onto tissue or lower 'min tissue'."
            )
        slide_mpp = float(pyr.mpp[1]) if pyr.mpp is not None else None
        tiles = read_tiles(pyr, grid, idx.tolist())
    maps = {}
    for step, (key, model) in enumerate((("teacher", teacher), ("student", student))):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Attention cancelled.")
        yield Progress(step, 2, f"{key} attention")
        raw = attention_maps(model, tiles, mode=mode, head=head)
        maps[key] = resample_maps(raw, grid_size)
    yield Progress(2, 2, "stitching")
    t, s = maps["teacher"], maps["student"]
    tm, scale, translate = stitch(grid, idx, t, slide_mpp)
    sm = stitch(grid, idx, s, slide_mpp)[0]
    numbers = np.arange(1, len(idx) + 1, dtype=np.float32)[:, None, None]
    cells, cell_scale, cell_translate = stitch(grid, idx, numbers, slide_mpp)
    yield AttentionPair(
        grid.coords[idx], t, s, attention_agreement(t, s), tm, sm, sm - tm, scale, translate,
        np.nan_to_num(cells).astype(np.int32), cell_scale, cell_translate,
    )  # fmt: skip
