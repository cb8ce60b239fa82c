"""Registration of a slide pair for the similarity run (pure core, no Qt): A's level-0 px -> B's, on thumbnails
at a common um/px (``wsi.registration.register_images``) or from paired landmarks, and B resampled into A's frame
to judge it by eye (:func:`registered_view`). ``inference.pair_similarity`` runs it before tiling the pair.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial

import numpy as np

from napari_pathdistill.errors import RegistrationError
from napari_pathdistill.progress import Progress, raise_if_cancelled, reported
from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.registration import Registration, apply_affine, register_images, warp_rgb
from napari_pathdistill.wsi.tissue_grid import mask_placement


def pair_mpp(pyr: Pyramid) -> float:
    """The slide's level-0 um/px (mean of MPP-Y and MPP-X); a slide without one is a :class:`RegistrationError`."""
    if pyr.mpp is None:
        raise RegistrationError(
            f"{pyr.path.name} has no um/px (MPP); similarity needs both slides' physical scale: set the slide "
            "um/px override."
        )
    return float(np.mean(pyr.mpp))


@dataclass(frozen=True)
class PairTransform:
    """Level-0 (x, y) of slide A -> level-0 (x, y) of slide B, from a ``wsi.registration.Registration``."""

    matrix: np.ndarray
    registration: Registration

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) points of A -> (N, 2) points of B."""
        return apply_affine(self.matrix, xy)


#: (image (h, w, 3) uint8, downsample) of ``Pyramid.thumbnail``; the registration's are at most this many px
Thumbnail = tuple[np.ndarray, float]
THUMB_SIDE = 1024
#: the two thumbnail reads' share of the registration's progress (on a slide without a level near the
#: thumbnail's size the read is long: it goes block by block)
READ_SHARE = 0.1


def register_pair(
    a: Pyramid,
    b: Pyramid,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    work_mpp: float | None = None,
    cancel: threading.Event | None = None,
    thumbnails: tuple[Thumbnail, Thumbnail] | None = None,
    progress: Callable[[float], None] | None = None,
) -> PairTransform:
    """Register B (moving) onto A (fixed) on thumbnails with ``wsi.registration.register_images``.

    Args:
        a, b: the two slides (both need an MPP).
        landmarks: optional ((M, 2), (M, 2)) paired level-0 (x, y) points in A and B: manual override.
        work_mpp: common um/px of the automatic registration; None: :func:`work_resolution`.
        cancel: set -> :class:`Cancelled` between the search's steps (it takes tens of seconds on a CPU).
        thumbnails: A's and B's :data:`THUMB_SIDE` thumbnails when already read (:func:`iter_register_pair`).
        progress: the search's progress (``register_images``).
    """
    ma, mb = pair_mpp(a), pair_mpp(b)
    stop = partial(raise_if_cancelled, cancel, CANCELLED)
    if thumbnails is None:
        thumbnails = a.thumbnail(THUMB_SIDE, stop), b.thumbnail(THUMB_SIDE, stop)
    (ta, da), (tb, db) = thumbnails
    if work_mpp is None:
        work_mpp = work_resolution(a, b, thumb_mpp=max(da * ma, db * mb))
    # reg.matrix maps B's thumbnail um -> A's (pixel j at j * thumbnail um/px); tiles need A level-0 px -> B's
    to_a, to_b = _thumb_um_to_level0(ta, a, da * ma), _thumb_um_to_level0(tb, b, db * mb)
    lm_um = None
    if landmarks is not None:
        lm_um = (
            apply_affine(np.linalg.inv(to_a), landmarks[0]),
            apply_affine(np.linalg.inv(to_b), landmarks[1]),
        )
    reg = register_images(ta, tb, fixed_mpp=da * ma, moving_mpp=db * mb, work_mpp=work_mpp, landmarks=lm_um,
                          check=stop, progress=progress)  # fmt: skip
    return PairTransform(to_b @ np.linalg.inv(reg.matrix) @ np.linalg.inv(to_a), reg)


def iter_register_pair(
    a: Pyramid,
    b: Pyramid,
    *,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, tuple[PairTransform, tuple[Thumbnail, Thumbnail]]]:
    """:func:`register_pair` yielding its progress (stage ``"registration"``, 0..100: the thumbnails' block
    reads, the rotation search's angles, the refinement's estimate); returns the transform and the thumbnails it
    read (for :func:`iter_registered_view`). Cancel stops it at the next block, angle or evaluation."""

    def run(report: Callable[[float], None]) -> tuple[PairTransform, tuple[Thumbnail, Thumbnail]]:
        stop = partial(raise_if_cancelled, cancel, CANCELLED)
        read = (a.thumbnail(THUMB_SIDE, stop, lambda d, n: report(READ_SHARE * d / n)),
                b.thumbnail(THUMB_SIDE, stop, lambda d, n: report(READ_SHARE * (1 + d / n))))  # fmt: skip

        def search(f: float) -> None:
            report(2 * READ_SHARE + (1 - 2 * READ_SHARE) * f)

        t = register_pair(a, b, landmarks=landmarks, cancel=cancel, thumbnails=read, progress=search)
        return t, read

    return (yield from reported(run, "registration"))


def _thumb_um_to_level0(thumb: np.ndarray, pyr: Pyramid, thumb_mpp: float) -> np.ndarray:
    """(3, 3) um of a thumbnail (its pixel j at ``j * thumb_mpp``) -> level-0 px (x, y) of its slide."""
    return _thumb_to_level0(thumb.shape[:2], pyr.levels[0].shape) @ np.diag(
        [1 / thumb_mpp, 1 / thumb_mpp, 1.0]
    )


#: what Cancel of a similarity run raises, at whichever step it is seen
CANCELLED = "Similarity cancelled."
#: the automatic registration's um/px for slides, the least side (px) the larger slide keeps there, and the most
WORK_MPP, WORK_SIDE, WORK_MAX_SIDE = 4.0, 256, 512


def work_resolution(a: Pyramid, b: Pyramid, thumb_mpp: float) -> float:
    """um/px of the automatic registration: :data:`WORK_MPP` for slides (mm wide), finer for a small field, so
    the larger slide keeps :data:`WORK_SIDE` px (a 580 um field at 4 um/px, 146 px, registered 35 px off the
    BIRL rat-kidney landmarks, 8 px at 2.3 um/px), never finer than the thumbnails (``thumb_mpp``), and coarser
    for a slide over 2 mm, so that it keeps at most :data:`WORK_MAX_SIDE` px: a 4.4 mm field against a turned
    5.6 mm copy registered on 1024 px thumbnails (5.4 um/px) took 89 s here for 2.8 um off the known transform,
    on 512 px 18 s for 2.9 um (the search's cost grows with the pixels, its accuracy no longer)."""
    side_um = max(max(a.levels[0].shape) * pair_mpp(a), max(b.levels[0].shape) * pair_mpp(b))
    return max(thumb_mpp, min(WORK_MPP, side_um / WORK_SIDE), side_um / WORK_MAX_SIDE)


@dataclass
class RegisteredView:
    """Slide B resampled into slide A's frame, on A's thumbnail grid (to judge a registration by eye).

    Attributes:
        a: (h, w, 3) uint8 thumbnail of A.
        b_in_a: (h, w, 3) uint8 B warped onto the same pixels (white outside B).
        inside: (h, w) bool, True where the pixel maps inside B.
        scale, translate: napari placement of both images in the cosine overlay's units: A's level-0 px times
            its mean um/px (``PairSimilarity.mpp_a``) on both axes, as the tiles are cut. A layer with A's own
            (MPP-Y, MPP-X) places them through that unit (``_qt._layers.on_slide_layer``); with A's MPP-Y and
            MPP-X here, a slide of non-square pixels (up to 2 % accepted) had its view 0.75 % too tall and too
            narrow at 1.5 %.
    """

    a: np.ndarray
    b_in_a: np.ndarray
    inside: np.ndarray
    scale: tuple[float, float]
    translate: tuple[float, float]


def _thumb_to_level0(shape: tuple[int, int], slide_shape: tuple[int, int]) -> np.ndarray:
    """(3, 3) thumbnail pixel (x, y) -> level-0 pixel (x, y): pixel j's centre is (j + 0.5) ds - 0.5."""
    dy, dx = slide_shape[0] / shape[0], slide_shape[1] / shape[1]
    return np.array([[dx, 0, dx / 2 - 0.5], [0, dy, dy / 2 - 0.5], [0, 0, 1.0]])


#: rows of the registered view resampled between two looks at Cancel (and two progress steps)
VIEW_STRIP_ROWS = 64


def iter_registered_view(
    a: Pyramid,
    b: Pyramid,
    transform: PairTransform,
    max_size: int = THUMB_SIDE,
    *,
    thumbnails: tuple[Thumbnail, Thumbnail] | None = None,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, RegisteredView]:
    """Resample B into A's frame on A's thumbnail grid with ``transform`` (A level-0 -> B level-0), yielding
    Progress (stage ``"registered view"``, one step per :data:`VIEW_STRIP_ROWS` rows); returns the view.

    ``thumbnails``: the registration's (:func:`iter_register_pair`), used when ``max_size`` is theirs
    (:data:`THUMB_SIDE`); otherwise both slides are read again (stage ``"registered view: thumbnails"``).
    Cancel (:class:`Cancelled`) is seen between blocks of a read and between strips.
    """
    stop = partial(raise_if_cancelled, cancel, CANCELLED)
    if thumbnails is None or max_size != THUMB_SIDE:
        thumbnails = yield from reported(
            lambda report: (a.thumbnail(max_size, stop, lambda d, n: report(d / n / 2)),
                            b.thumbnail(max_size, stop, lambda d, n: report(0.5 + d / n / 2))),
            "registered view: thumbnails",
        )  # fmt: skip
    ta, tb = thumbnails[0][0][..., :3], thumbnails[1][0][..., :3]
    (h, w), sa = ta.shape[:2], a.levels[0].shape
    out_to_in = (
        np.linalg.inv(_thumb_to_level0(tb.shape[:2], b.levels[0].shape))
        @ transform.matrix
        @ _thumb_to_level0((h, w), sa)
    )
    b_in_a, inside = np.empty((h, w, 3), np.uint8), np.empty((h, w), bool)
    starts = range(0, h, VIEW_STRIP_ROWS)
    yield Progress(0, len(starts), "registered view")
    for i, r0 in enumerate(starts):
        stop()
        r1 = min(h, r0 + VIEW_STRIP_ROWS)
        below = np.array([[1.0, 0, 0], [0, 1, r0], [0, 0, 1]])  # strip pixel (x, y) -> view pixel (x, y + r0)
        b_in_a[r0:r1], inside[r0:r1] = warp_rgb(tb, out_to_in @ below, (r1 - r0, w))
        yield Progress(i + 1, len(starts), "registered view")
    mpp = pair_mpp(a)  # the overlay's unit (PairSimilarity.mpp_a), on both axes: see RegisteredView
    scale, translate = mask_placement((h, w), sa, (mpp, mpp))
    return RegisteredView(np.ascontiguousarray(ta), b_in_a, inside, scale, translate)


def registered_view(
    a: Pyramid, b: Pyramid, transform: PairTransform, max_size: int = THUMB_SIDE
) -> RegisteredView:
    """:func:`iter_registered_view` run to its end (reads both thumbnails)."""
    steps = iter_registered_view(a, b, transform, max_size)
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value
