"""Cross-stain / cross-scanner similarity of two slides of the same tissue (pure core, no Qt).

1. Register slide B onto slide A on thumbnails resampled to a common um/px (phase correlation, i.e. a
   translation at that resolution plus the exact scale from the two MPPs), or, when landmarks are given, a
   least-squares affine transform from paired landmarks (manual override).
2. Tile A's tissue; map each tile centre into B; cut the matching B tile at the same um/px.
3. Embed both tile sets with one model; per-tile cosine of matched tiles, and the pair's mean cosine and PLISM
   top-k retrieval accuracy from ``evaluation.robustness.pair_metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from skimage.color import rgb2gray
from skimage.registration import phase_cross_correlation
from skimage.transform import AffineTransform, rescale

from napari_pathdistill.errors import Cancelled, EmptyTissueError, RegistrationError
from napari_pathdistill.evaluation.robustness import pair_metrics
from napari_pathdistill.inference.embed import iter_embeddings
from napari_pathdistill.inference.progress import Progress
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.wsi.pyramid import Pyramid, open_pyramid
from napari_pathdistill.wsi.tiling import TileGrid, detect_tissue, grid_to_image, make_tile_grid


@dataclass
class Registration:
    """Level-0 (x, y) of slide A -> level-0 (x, y) of slide B as a 3x3 homogeneous matrix."""

    matrix: np.ndarray
    method: str

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) points of A -> (N, 2) points of B."""
        return AffineTransform(matrix=self.matrix)(np.asarray(xy, dtype=np.float64))


def _mpp(pyr: Pyramid) -> float:
    if pyr.mpp is None:
        raise RegistrationError(
            f"{pyr.path.name} has no um/px (MPP); similarity needs both slides' physical scale."
        )
    return float(np.mean(pyr.mpp))


def _thumb_at(pyr: Pyramid, um_per_px: float) -> np.ndarray:
    """Grey, inverted (tissue bright) thumbnail of ``pyr`` resampled to ``um_per_px``."""
    img, ds = pyr.thumbnail(max_size=2048)
    factor = ds * _mpp(pyr) / um_per_px
    return 1.0 - rescale(rgb2gray(img), factor, anti_aliasing=factor < 1)


def register_pair(
    a: Pyramid, b: Pyramid, *, um_per_px: float = 4.0, landmarks: tuple[np.ndarray, np.ndarray] | None = None
) -> Registration:
    """Register slide B to slide A.

    Args:
        a, b: the two slides.
        um_per_px: common resolution of the thumbnails used for automatic registration.
        landmarks: optional ((M, 2), (M, 2)) paired level-0 (x, y) points in A and B, M >= 3: they override
            the automatic result with a least-squares affine transform.
    """
    if landmarks is not None:
        src, dst = (np.asarray(p, dtype=np.float64) for p in landmarks)
        if src.shape != dst.shape or len(src) < 3:
            raise RegistrationError(
                f"Landmarks need the same number (>= 3) of points on both slides, got {len(src)} and {len(dst)}."
            )
        tform = AffineTransform()
        if not tform.estimate(src, dst):
            raise RegistrationError(
                "Landmarks are degenerate (collinear?); place them spread over the tissue."
            )
        return Registration(tform.params, "landmarks")
    ma, mb = _mpp(a), _mpp(b)
    ta, tb = _thumb_at(a, um_per_px), _thumb_at(b, um_per_px)
    h, w = max(ta.shape[0], tb.shape[0]), max(ta.shape[1], tb.shape[1])
    pa, pb = (np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]))) for t in (ta, tb))
    shift, _, _ = phase_cross_correlation(pa, pb)  # pb shifted by `shift` matches pa: B(p - shift) = A(p)
    to_common_a = np.diag([ma / um_per_px, ma / um_per_px, 1.0])
    move = np.array([[1, 0, -shift[1]], [0, 1, -shift[0]], [0, 0, 1.0]])
    to_b = np.diag([um_per_px / mb, um_per_px / mb, 1.0])
    return Registration(to_b @ move @ to_common_a, "phase correlation")


@dataclass
class PairSimilarity:
    """Matched-tile similarity of slides A and B.

    Attributes:
        cosine: (N,) cosine of each matched tile pair.
        coords_a, coords_b: (N, 2) level-0 (x, y) of the tiles in A and B.
        mean_cosine: mean of ``cosine``.
        topk_accuracy: PLISM top-k accuracy; ``k`` is the k used.
        registration: the transform used.
        overlay, scale, translate: (rows, cols) cosine raster on A's tile grid (NaN off tissue) and its geometry.
    """

    cosine: np.ndarray
    coords_a: np.ndarray
    coords_b: np.ndarray
    mean_cosine: float
    topk_accuracy: float
    k: int
    registration: Registration
    overlay: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]


def _matched_grid(
    grid_a: TileGrid, grid_b: TileGrid, reg: Registration, pyr_b: Pyramid
) -> tuple[TileGrid, TileGrid]:
    """Grids of A tiles whose mapped B tile lies fully inside B, and those B tiles."""
    centers = reg.apply(grid_a.coords + grid_a.size_level0 / 2)
    tl = np.rint(centers - grid_b.size_level0 / 2).astype(np.int64)
    h, w = pyr_b.levels[0].shape
    ok = (
        (tl[:, 0] >= 0)
        & (tl[:, 1] >= 0)
        & (tl[:, 0] + grid_b.size_level0 <= w)
        & (tl[:, 1] + grid_b.size_level0 <= h)
    )
    sub_a = replace(grid_a, coords=grid_a.coords[ok], tissue_fraction=grid_a.tissue_fraction[ok])
    sub_b = replace(grid_b, coords=tl[ok], tissue_fraction=np.ones(int(ok.sum())))
    return sub_a, sub_b


def _embed(
    model: EmbeddingModel, pyr: Pyramid, grid: TileGrid, stage: str, batch_size: int, cancel
) -> Iterator:
    for item in iter_embeddings(model, pyr, grid, batch_size=batch_size, cancel=cancel):
        if isinstance(item, Progress):
            yield Progress(item.done, item.total, stage)
        else:
            return item.features
    raise Cancelled("Similarity cancelled.")


def iter_pair_similarity(
    model: EmbeddingModel,
    slide_a: str | Path,
    slide_b: str | Path,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    tile_px: int = 224,
    mpp: float = 0.5,
    min_tissue: float = 0.5,
    top_k: int = 10,
    batch_size: int = 32,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | PairSimilarity]:
    """Register, tile, embed and compare two slides; yields Progress then one :class:`PairSimilarity`."""
    with open_pyramid(slide_a) as pa, open_pyramid(slide_b) as pb:
        yield Progress(0, 0, "registration")
        reg = register_pair(pa, pb, landmarks=landmarks)
        grid_a = make_tile_grid(pa, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue, mask=detect_tissue(pa))
        grid_b = make_tile_grid(pb, tile_px=tile_px, mpp=mpp, min_tissue=0.0)
        grid_a, grid_b = _matched_grid(grid_a, grid_b, reg, pb)
        if len(grid_a.coords) < 2:
            raise EmptyTissueError(
                "Fewer than 2 tissue tiles of A map inside B: check the registration/landmarks."
            )
        fa = yield from _embed(model, pa, grid_a, "embedding A", batch_size, cancel)
        fb = yield from _embed(model, pb, grid_b, "embedding B", batch_size, cancel)
    if cancel is not None and cancel.is_set():
        raise Cancelled("Similarity cancelled.")
    k = min(top_k, 2 * len(fa) - 1)
    metrics = pair_metrics(fa, fb, ks=(k,), device="cpu")
    na = fa / np.maximum(np.linalg.norm(fa, axis=1, keepdims=True), 1e-12)
    nb = fb / np.maximum(np.linalg.norm(fb, axis=1, keepdims=True), 1e-12)
    cos = (na * nb).sum(1).astype(np.float32)
    overlay, scale, translate = grid_to_image(grid_a, cos, fill=np.nan)
    yield PairSimilarity(cos, grid_a.coords, grid_b.coords, metrics.cosine, metrics.topk[k], k, reg, overlay,
                         tuple(scale), tuple(translate))  # fmt: skip
