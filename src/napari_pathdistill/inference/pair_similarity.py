"""Cross-stain / cross-scanner similarity of two slides of the same tissue (pure core, no Qt).

1. Register slide B onto slide A on thumbnails at a common um/px (``wsi.registration.register_images``:
   rotation search + phase correlation + NCC refinement), or from paired landmarks (manual override):
   ``inference.pair_registration``.
2. Tile A's tissue; map each tile centre into B; cut the matching B tile at the same um/px, resampled through
   the registration when it turns or stretches the tissue (``pair_tiles``). A B tile that overhangs B's edge by
   at most ``max_overhang`` of its side (a few px: two scans of one field rarely match to the pixel) is moved
   inside; one that overhangs more is dropped.
3. Embed both tile sets with one model; per-tile cosine of matched tiles, and the pair's mean cosine and PLISM
   top-k retrieval accuracy from ``metrics.pairs.pair_metrics``, flagged when the pool of candidates is too
   small to mean anything (``metrics.pairs.topk_pool_note``).
4. B resampled into A's frame (``pair_registration.registered_view``), to judge the registration by eye.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import Cancelled, EmptyTissueError, RegistrationError
from napari_pathdistill.inference.embed import iter_embeddings, tile_geometry
from napari_pathdistill.inference.pair_registration import (
    CANCELLED,
    WORK_MAX_SIDE,
    WORK_MPP,
    WORK_SIDE,
    PairTransform,
    RegisteredView,
    iter_register_pair,
    iter_registered_view,
    pair_mpp,
    register_pair,
    registered_view,
    work_resolution,
)
from napari_pathdistill.inference.pair_tiles import match_tiles
from napari_pathdistill.metrics.pairs import pair_metrics, topk_chance, topk_pool_note
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress, raise_if_cancelled, relabel, reported
from napari_pathdistill.wsi.pyramid import Pyramid, open_pyramid
from napari_pathdistill.wsi.tiling import (
    TileGrid,
    check_tile_fits,
    detect_tissue,
    grid_to_image,
    make_tile_grid,
)
from napari_pathdistill.wsi.tissue import detection_side

__all__ = [
    "CANCELLED",
    "WORK_MAX_SIDE",
    "WORK_MPP",
    "WORK_SIDE",
    "PairSimilarity",
    "PairTransform",
    "RegisteredView",
    "iter_pair_similarity",
    "register_pair",
    "registered_view",
    "work_resolution",
]


@dataclass
class PairSimilarity:
    """Matched-tile similarity of slides A and B.

    Attributes:
        cosine: (N,) cosine of each matched tile pair.
        coords_a, coords_b: (N, 2) level-0 (x, y) of the tiles in A and B.
        mean_cosine: mean of ``cosine``.
        topk_accuracy: PLISM top-k accuracy; ``k`` is the k used.
        transform: A level-0 -> B level-0 transform and the registration (method, NCC) behind it.
        overlay, scale, translate: (rows, cols) cosine raster on A's tile grid (NaN off tissue) and its geometry
            in um (napari scale/translate for a slide layer in um).
        mpp_a: level-0 um/px of A used (the file's, or the fallback), to place the overlay on a layer in px.
        topk_chance: top-k accuracy of a random ranking over the pool (``metrics.pairs.topk_chance``).
        topk_note: why the top-k accuracy is not meaningful (pool too small), or None.
        moved_inside: B tiles that overhung B's edge by a few px and were moved inside it.
        dropped: A tiles whose B tile falls (mostly) outside B.
        registered: B resampled into A's frame with A's thumbnail, or None.
        b_resampled: B's tiles were resampled through the registration (it turns, shears or stretches A's tiles
            by more than ``pair_tiles.MAX_CORNER_PX`` at a corner); ``coords_b`` is then the top-left of the
            axis-aligned square around each B tile's centre.
    """

    cosine: np.ndarray
    coords_a: np.ndarray
    coords_b: np.ndarray
    mean_cosine: float
    topk_accuracy: float
    k: int
    transform: PairTransform
    overlay: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]
    mpp_a: float
    topk_chance: float = 0.0
    topk_note: str | None = None
    moved_inside: int = 0
    dropped: int = 0
    registered: RegisteredView | None = None
    b_resampled: bool = False


def _embed(
    model: EmbeddingModel,
    pyr: Pyramid,
    grid: TileGrid,
    stage: str,
    batch_size: int,
    cancel: threading.Event | None,
    read_fn: Callable[[Pyramid, TileGrid, Any], np.ndarray] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Embed ``grid``'s tiles (read by ``read_fn``, default ``read_tiles``), yielding Progress re-labelled
    ``stage`` (``0/N`` first: the status names the stage while the first batch goes through the model, tens of
    seconds for a large model on a CPU); returns the (N, D) features."""
    yield Progress(0, len(grid), stage)
    result = yield from relabel(
        iter_embeddings(model, pyr, grid, batch_size=batch_size, cancel=cancel, read_fn=read_fn), stage
    )
    if result is None:
        raise Cancelled(CANCELLED)
    return result.features


def _too_few_tiles(
    name_a: str, n_a: int, matched: int, min_tissue: float, doubt: str | None
) -> EmptyTissueError:
    """Why a pair has fewer than 2 matched tiles: slide A's tissue (``n_a`` tiles pass ``min_tissue``), or the
    registration that maps A's tiles outside B (its ``doubt`` when it has one)."""
    if n_a < 2:
        return EmptyTissueError(
            f"Slide A ({name_a}) has {n_a} tissue tile{'' if n_a == 1 else 's'} at min tissue {min_tissue:g} (2 "
            "needed): lower 'min tissue', or choose a slide A with tissue."
        )
    why = doubt[0].upper() + doubt[1:] if doubt else "Check the registration/landmarks."
    return EmptyTissueError(f"{matched} of slide A's {n_a} tissue tiles map inside B (2 needed). {why}")


def iter_pair_similarity(
    model: EmbeddingModel,
    slide_a: str | Path,
    slide_b: str | Path,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    tile_px: int | None = None,
    mpp: float | None = None,
    min_tissue: float = 0.5,
    top_k: int = 10,
    batch_size: int = 32,
    fallback_mpp: float | None = None,
    max_overhang: float = 0.03,
    view_size: int | None = 1024,
    strict_registration: bool = False,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | PairSimilarity]:
    """Register, tile, embed and compare two slides; yields Progress then one :class:`PairSimilarity`.

    Tiles are ``tile_px`` px at ``mpp`` um/px, by default the model's (``model.spec``). ``fallback_mpp`` is the
    level-0 um/px of a slide whose file states none (e.g. a plain JPEG); slides with their own MPP keep it
    (see ``wsi.open_pyramid``). ``max_overhang`` is the fraction of a tile side a B tile may overhang B and
    still be used (moved inside); ``view_size`` the longer side of :class:`RegisteredView` (None: none).
    A registration to doubt (``Registration.doubt``: poor NCC, or a stretch no rescan makes) is a
    :class:`RegistrationError` before any tile is embedded when ``strict_registration`` (a batch of pairs:
    the pair fails alone), else the result's ``transform.registration.doubt()`` says it (the widget shows it).
    """
    if Path(slide_a).resolve() == Path(slide_b).resolve():  # every tile would match itself: cosine 1, top-k 1
        raise RegistrationError(
            f"Slide A and slide B are the same file ({Path(slide_a).name}); choose two scans or stains of the same "
            "tissue."
        )
    tile_px, mpp = tile_geometry(model, tile_px, mpp)
    with (
        open_pyramid(slide_a, fallback_mpp=fallback_mpp) as pa,
        open_pyramid(slide_b, fallback_mpp=fallback_mpp) as pb,
    ):
        for pyr in (pa, pb):  # no MPP, or a tile larger than a slide, fails now, not after the registration
            pair_mpp(pyr)
            check_tile_fits(pyr, tile_px, mpp)
        reg, thumbnails = yield from iter_register_pair(pa, pb, landmarks=landmarks, cancel=cancel)
        if strict_registration and (doubt := reg.registration.doubt()):
            raise RegistrationError(doubt)
        stop = partial(raise_if_cancelled, cancel, CANCELLED)
        # detect_tissue's own thumbnail (its default 2048 px), read here block by block with progress
        side = detection_side(pa, 2048)
        thumb = yield from reported(lambda report: pa.thumbnail(side, stop, lambda d, n: report(d / n)),
                                    "tissue and tile grids")  # fmt: skip
        mask = detect_tissue(pa, thumbnail=thumb, check=stop)
        grid_a = make_tile_grid(pa, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue, mask=mask)
        stop()
        grid_b = make_tile_grid(pb, tile_px=tile_px, mpp=mpp, min_tissue=0.0)
        stop()
        n_a = len(grid_a)
        grid_a, grid_b, moved, read_b = match_tiles(pa, grid_a, pb, grid_b, reg.matrix, max_overhang)
        if len(grid_a) < 2:
            raise _too_few_tiles(pa.path.name, n_a, len(grid_a), min_tissue, reg.registration.doubt())
        fa = yield from _embed(model, pa, grid_a, "embedding A", batch_size, cancel)
        fb = yield from _embed(model, pb, grid_b, "embedding B", batch_size, cancel, read_b)
        view = None
        if view_size:  # on the registration's thumbnails (read again only for another size)
            view = yield from iter_registered_view(
                pa, pb, reg, view_size, thumbnails=thumbnails, cancel=cancel
            )
    raise_if_cancelled(cancel, CANCELLED)
    k = min(top_k, 2 * len(fa) - 1)
    metrics = pair_metrics(fa, fb, ks=(k,), device="cpu")
    na = fa / np.maximum(np.linalg.norm(fa, axis=1, keepdims=True), 1e-12)
    nb = fb / np.maximum(np.linalg.norm(fb, axis=1, keepdims=True), 1e-12)
    cos = (na * nb).sum(1).astype(np.float32)
    overlay, scale, translate = grid_to_image(grid_a, cos, fill=np.nan)
    yield PairSimilarity(cos, grid_a.coords, grid_b.coords, metrics.cosine, metrics.topk[k], k, reg, overlay,
                         scale, translate, float(grid_a.slide_mpp or 1.0), topk_chance(len(fa), k),
                         topk_pool_note(len(fa), k), moved, n_a - len(grid_a), view, read_b is not None)  # fmt: skip
