"""Attention of two models over a slide region, streamed in batches and blended into two comparable maps.

:func:`iter_attention_pair` cuts overlapping tiles over the region (``inference.attention_region``), runs both
models on each batch (CLS->patch attention or Grad-CAM, ``inference.attention``), blends the raw maps on one
canvas per model and keeps only the two canvases and a few numbers per tile, so memory does not grow with the
tile count. Each finished map gets ONE normalisation for the whole region (each pixel's percentile rank in the
region), so tile borders do not show and teacher and student are put on the same [0, 1] footing. Either side may be any model:
a teacher, a student, another student, or a model's random initialisation (the baseline that says how much
agreement the architecture alone gives).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from napari_pathdistill.errors import Cancelled, EmptyTissueError
from napari_pathdistill.inference.attention import METHODS, check_head, raw_attention_maps
from napari_pathdistill.inference.attention_region import (
    Blender,
    RegionGrid,
    normalise_region,
    region_grid,
    resample,
)
from napari_pathdistill.metrics.agreement import attention_agreement, map_agreement, top_overlap
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.spec import ModelSpec, build_module
from napari_pathdistill.progress import Progress, cancel_scope, interruptible, raise_if_cancelled
from napari_pathdistill.wsi.pyramid import Pyramid, layer_factor, open_pyramid
from napari_pathdistill.wsi.tiling import TileGrid, detect_tissue, read_tiles, square_pixel_mpp

SIDES = ("teacher", "student")


@dataclass(frozen=True)
class MapSource:
    """What one map was computed with: model name, layer/mode and head (for layer names and reports)."""

    role: str
    model: str
    method: str
    head: int | None
    fed_mpp: float | None = None  #: um/px of the tiles as the model saw them (None: slide without um/px)
    own_mpp: float | None = None  #: the model's own um/px (its spec)

    def off_scale(self) -> float | None:
        """fed / own um/px when they differ by more than 5 % (e.g. 4.0 for the teacher of an XMAG student), else
        None: the map is then not the one the model makes at its own magnification."""
        if not self.fed_mpp or not self.own_mpp or abs(self.fed_mpp / self.own_mpp - 1) <= 0.05:
            return None
        return self.fed_mpp / self.own_mpp

    def label(self) -> str:
        """e.g. ``"student last-block attention, head 1: pathdistill-student"``: what the map is comes first, so
        a grid cell too narrow for the whole name still says it (Grad-CAM or attention, which head), and a model
        fed at another um/px than its own says so (``"..., at 2.00 um/px (own 0.50): h-optimus-0"``)."""
        head = "" if self.method == METHODS["cnn"] else f", head {'mean' if self.head is None else self.head}"
        scale = f", at {self.fed_mpp:.2f} um/px (own {self.own_mpp:.2f})" if self.off_scale() else ""
        return f"{self.role} {self.method}{head}{scale}: {self.model}"


@dataclass
class AttentionPair:
    """Two models' attention over one region, blended and normalised alike.

    Attributes:
        sources: (teacher, student) :class:`MapSource`.
        teacher_map, student_map: (rows, cols) float16 in [0, 1] (percentile rank of the pixel's blended
            attention in the region), NaN where no tile lies.
        difference: student_map - teacher_map, float16.
        percentiles: per side the (p1, p99) of the raw blended map (the model's own units).
        coords: (N, 2) tile top-left (x, y) level-0 px; tile_px_level0: their side.
        tile_r, tile_overlap: (N,) Pearson r and top-10 % overlap of each tile's two maps.
        overall_r, overall_overlap: the same over the two whole blended maps.
        hist_counts, hist_edges: histogram of ``tile_r`` over [-1, 1] (10 bins).
        scale, translate: napari geometry of the maps in slide-layer units.
        top_frac: the share of most attended pixels the overlaps compare.
        region_tiles: tissue tiles in the chosen region; more than ``len(coords)`` when "max tiles" kept only the
            ones nearest its centre.
        stride_level0: level-0 px between neighbouring tiles (``tile_px_level0`` without overlap).
    """

    sources: tuple[MapSource, MapSource]
    teacher_map: np.ndarray
    student_map: np.ndarray
    difference: np.ndarray
    percentiles: tuple[tuple[float, float], tuple[float, float]]
    coords: np.ndarray
    tile_px_level0: float
    tile_r: np.ndarray
    tile_overlap: np.ndarray
    overall_r: float
    overall_overlap: float
    hist_counts: np.ndarray
    hist_edges: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    top_frac: float = 0.1
    region_tiles: int = 0
    stride_level0: float = 0.0

    def feature_table(self) -> dict[str, np.ndarray]:
        """Per-tile columns (one row per tile) for a Points layer's ``features``."""
        return {"x": self.coords[:, 0], "y": self.coords[:, 1], "pearson_r": self.tile_r,
                "top10_overlap": self.tile_overlap}  # fmt: skip


def random_model(spec: ModelSpec, device: torch.device | str = "cpu", seed: int = 0) -> EmbeddingModel:
    """``spec``'s architecture and normalisation with seeded random weights (the no-training baseline)."""
    torch.manual_seed(seed)
    spec = dataclasses.replace(spec, name=f"{spec.name} (random init)", weights=None)
    return EmbeddingModel(spec, build_module(spec), device, amp="fp32")


def random_init(model: EmbeddingModel, seed: int = 0) -> EmbeddingModel:
    """:func:`random_model` of a loaded model's spec, on its device."""
    return random_model(model.spec, model.device, seed)


def source_of(
    role: str, model: EmbeddingModel, mode: str, head: int | None, field_um: float | None = None
) -> MapSource:
    """The :class:`MapSource` of ``model``'s map; ``field_um``: the tiles' side in um (None: unknown)."""
    cnn = model.spec.family == "cnn"
    fed = field_um / model.spec.tile_px if field_um else None
    method = METHODS["cnn" if cnn else mode]
    return MapSource(role, model.spec.name, method, None if cnn else head, fed, model.spec.mpp)


def _read(pyr: Pyramid, grids: dict[str, TileGrid], idx: range) -> dict[str, np.ndarray]:
    """Each side's tiles of ``idx``, read once per distinct grid."""
    out: dict[str, np.ndarray] = {}
    for k, grid in grids.items():
        same = [j for j in out if grids[j] is grid]
        out[k] = out[same[0]] if same else read_tiles(pyr, grid, idx)
    return out


def _batches(
    grids: dict[str, TileGrid], pyr: Pyramid, batch_size: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(first index, each side's (B, H, W, 3) uint8 tiles) per batch, the next batch read in a thread meanwhile."""
    n = len(next(iter(grids.values())))
    starts = list(range(0, n, batch_size))
    with ThreadPoolExecutor(1) as pool:

        def read(s: int) -> Future:
            return pool.submit(_read, pyr, grids, range(s, min(s + batch_size, n)))

        pending = read(starts[0]) if starts else None
        for k, s in enumerate(starts):
            tiles = pending.result()  # type: ignore[union-attr]
            pending = read(starts[k + 1]) if k + 1 < len(starts) else None
            yield s, tiles


def fit_tiles(tiles: np.ndarray, px: int) -> np.ndarray:
    """(B, H, W, 3) uint8 tiles resized to (B, px, px, 3) (bilinear, antialiased; unchanged when already that
    size): a safety net, each side's tiles are already read at its own px (:func:`grid_at`)."""
    if tiles.shape[1:3] == (px, px):
        return tiles
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, (px, px), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def grid_at(grid: TileGrid, pyr: Pyramid, px: int) -> TileGrid:
    """``grid``'s tiles (the same level-0 squares) read at ``px``: a model of another input size gets the slide's
    own pixels at its size (before, a 224 px teacher beside a 112 px student over the same field got the
    student's 112 px tile blown up: half the detail its own um/px holds)."""
    if px == grid.tile_px:
        return grid
    mpp = grid.mpp * grid.tile_px / px if grid.mpp else None
    return dataclasses.replace(
        grid, tile_px=px, mpp=mpp, level=pyr.best_level_for_downsample(grid.size_level0 / px)
    )


def _stream(models: dict[str, tuple[EmbeddingModel, int | None]], region: RegionGrid, pyr: Pyramid, mode: str,
            batch_size: int, frac: float, cancel: threading.Event | None
            ) -> Generator[Progress, None, tuple[Blender, np.ndarray, np.ndarray]]:  # fmt: skip
    """Blend both models' maps over the region; yields Progress, returns (blender, tile r, tile overlap)."""
    blend = Blender(region, SIDES)
    r, ov = np.full(len(region), np.nan), np.full(len(region), np.nan)
    grids = {k: grid_at(region.tiles, pyr, m.spec.tile_px) for k, (m, _h) in models.items()}
    for first, tiles in _batches(grids, pyr, batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Attention cancelled.")
        # a batch of the real teacher and student takes seconds on a CPU: Cancel stops it at its next Python call
        with cancel_scope(cancel, "Attention cancelled.", inherit=True), interruptible():
            maps = {k: resample(raw_attention_maps(m, fit_tiles(tiles[k], m.spec.tile_px), mode=mode, head=h),
                                region.cells) for k, (m, h) in models.items()}  # fmt: skip
        blend.add(first, maps)
        end = first + len(tiles["student"])
        r[first:end] = attention_agreement(maps["teacher"], maps["student"])
        ov[first:end] = top_overlap(maps["teacher"], maps["student"], frac)
        yield Progress(end, len(region), "attention")
    return blend, r, ov


def iter_attention_pair(
    teacher: EmbeddingModel,
    student: EmbeddingModel,
    slide: str | Path,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    max_tiles: int | None = None,
    mode: str = "last",
    heads: tuple[int | None, int | None] = (None, None),
    overlap: float = 0.5,
    batch_size: int = 8,
    min_tissue: float = 0.5,
    top_frac: float = 0.1,
    fallback_mpp: float | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | AttentionPair]:
    """Both models' attention over the tissue tiles of ``bbox`` (None: whole slide); Progress, then the pair.

    Tiles are cut at the student's ``tile_px``/``mpp`` with ``overlap``; both models see the same tissue, each
    at its own input size (each read at its own px: :func:`grid_at`), so a
    model whose own field differs (the teacher of an XMAG student: 112 um vs 448 um) sees the tissue at another
    um/px than its own; its :class:`MapSource` says so (``off_scale``, the layer name and the summary).
    ``heads`` = (teacher head, student head), None for the mean; checked before any tile is read. Memory: the
    two float32 canvases, a few numbers per tile and one batch of ``batch_size`` tiles in flight.
    ``fallback_mpp``: level-0 um/px of a slide whose file states none (its tiles are then cut at the student's
    um/px; the maps stay in level-0 px, as napari shows such a slide).
    """
    for model, head in zip((teacher, student), heads, strict=True):
        check_head(model, head)
    stop = partial(raise_if_cancelled, cancel, "Attention cancelled.")
    with open_pyramid(slide, fallback_mpp=fallback_mpp) as pyr:
        square_pixel_mpp(pyr)  # non-square pixels are refused before the detection, not after
        _check_on_slide(bbox, pyr.levels[0].shape)
        yield Progress(0, 0, "finding tissue")
        mask = detect_tissue(pyr, check=stop)  # Cancel reaches it between the blocks of the level it reads
        stop()
        region = region_grid(pyr, mask, bbox=bbox, tile_px=student.spec.tile_px, mpp=student.spec.mpp,
                             overlap=overlap, min_tissue=min_tissue, max_tiles=max_tiles)  # fmt: skip
        if len(region) == 0:
            raise EmptyTissueError(
                "No tissue tile in the chosen region: pan/zoom onto tissue or lower 'min tissue'."
            )
        # slide-layer units per level-0 px: um from the file's MPP, 1 (pixels) with an override or without any
        units = (
            (float(pyr.mpp[0]) * layer_factor(pyr), float(pyr.mpp[1]) * layer_factor(pyr))
            if pyr.mpp
            else None
        )
        models = {"teacher": (teacher, heads[0]), "student": (student, heads[1])}
        blend, r, ov = yield from _stream(models, region, pyr, mode, batch_size, top_frac, cancel)
    yield Progress(len(region), len(region), "normalising")
    field = student.spec.tile_px * student.spec.mpp if units is not None else None  # tiles cut in um, or px
    sources = (
        source_of("teacher", teacher, mode, heads[0], field),
        source_of("student", student, mode, heads[1], field),
    )
    yield _pair(region, blend, r, ov, units, sources, top_frac)


def _check_on_slide(bbox: tuple[float, float, float, float] | None, shape: tuple[int, int]) -> None:
    """Raise EmptyTissueError when ``bbox`` (x0, y0, x1, y1 level-0 px) holds none of a (h, w) slide: a view panned
    off the slide was told to lower 'min tissue' after the whole tissue detection, which could not help."""
    h, w = shape
    if bbox is not None and not (bbox[0] < w and bbox[2] > 0 and bbox[1] < h and bbox[3] > 0):
        raise EmptyTissueError(
            "The chosen region shows none of the slide: pan/zoom onto the slide, or choose the whole slide."
        )


def _pair(region: RegionGrid, blend: Blender, r: np.ndarray, ov: np.ndarray, units: tuple[float, float] | None,
          sources: tuple[MapSource, MapSource], top_frac: float) -> AttentionPair:  # fmt: skip
    raw_t, raw_s = blend.result("teacher"), blend.result("student")
    del blend
    t, t_lo, t_hi = normalise_region(raw_t)
    s, s_lo, s_hi = normalise_region(raw_s)
    overall_r, overall_ov = map_agreement(raw_t, raw_s, top_frac)
    counts, edges = np.histogram(np.clip(r[np.isfinite(r)], -1, 1), bins=10, range=(-1.0, 1.0))
    scale, translate = region.geometry(units)
    return AttentionPair(sources, t, s, (s.astype(np.float32) - t).astype(np.float16), ((t_lo, t_hi), (s_lo, s_hi)),
                         region.tiles.coords, region.tiles.size_level0, r, ov, overall_r, overall_ov, counts, edges,
                         scale, translate, top_frac, region.candidates,
                         region.cell_px * region.stride_cells)  # fmt: skip
