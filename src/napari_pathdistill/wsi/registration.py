"""Automatic rigid / affine registration of two slides' low-resolution images, with a landmark override.

Both images are resampled to a common ``work_mpp`` and turned into an optical-density image (background 0,
stained tissue > 0, comparable across H&E and IHC). A coarse search over rotations with phase correlation
gives the initial pose; it is refined by maximising the normalised cross-correlation (NCC) of the warped
images with Powell's method (an intensity-based, ECC-like refinement). The result is a 3x3 affine matrix that
maps **moving** coordinates to **fixed** coordinates, in micrometres (or in level-0 pixels when a slide has no
MPP, pass ``mpp=1``). The search itself (density, resampling, rotation search, refinement) lives in
``wsi._registration_search``; its functions are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from skimage.filters import gaussian
from skimage.transform import AffineTransform, warp

from napari_pathdistill.errors import RegistrationError
from napari_pathdistill.wsi._registration_search import (
    coarse_pose,
    density,
    go_on,
    overlap_ncc,
    refine,
    resample,
    warp_moving,
    work_to_um,
)

__all__ = [
    "Registration",
    "RegistrationError",
    "checkerboard",
    "coarse_pose",
    "density",
    "landmark_affine",
    "overlap_ncc",
    "refine",
    "register_images",
    "target_registration_error",
    "warp_moving",
    "warp_rgb",
    "work_to_um",
]


#: least overlap NCC of a registration :meth:`Registration.doubt` trusts
MIN_NCC = 0.25
#: the affine scales (um per um) a registration of one section's scans may have
SCALE_RANGE = (0.8, 1.25)
#: the rotation search's share of the automatic registration's progress (each angle on B and on its mirror image:
#: 0.6 of 1.4 s on OS-2, 3.9 of 6.2 s on BIRL's lesion pair, half as much without the mirror; the refinement
#: takes the rest)
COARSE_SHARE = 0.6


@dataclass(frozen=True)
class Registration:
    """Result of a registration.

    Attributes:
        matrix: (3, 3) affine mapping moving (x, y) -> fixed (x, y), in micrometres of the two input images (their
            pixel i at i * um/px, pixel centres).
        ncc: NCC of the grey-level images on their overlap after warping, at ``work_mpp``.
        method: "auto-rigid", "auto-affine" or "landmarks".
        work_mpp: resolution (um/px) the automatic registration ran at.
    """

    matrix: np.ndarray
    ncc: float
    method: str
    work_mpp: float

    @property
    def mirrored(self) -> bool:
        """The moving image is the mirror image of the fixed one (the matrix turns and flips it)."""
        return bool(np.linalg.det(self.matrix[:2, :2]) < 0)

    def doubt(self) -> str | None:
        """Why this registration is not to be trusted, or None.

        Two scans or stains of one section differ in micrometres by a near-rigid motion: the affine's scales
        (singular values) stay within :data:`SCALE_RANGE` (BIRL-ANHIR's lesion and rat-kidney landmarks: 0.98-1.10,
        OS-2 NDPI vs VSI: 1.00) and the overlap NCC over :data:`MIN_NCC` (OS-2 0.99, BIRL H&E vs IHC 0.44-0.55);
        unrelated slides, or landmarks in another order, gave scales of 0.4-2.4 or an NCC of 0.05-0.15.
        """
        scales = np.linalg.svd(self.matrix[:2, :2], compute_uv=False)
        lo, hi = SCALE_RANGE
        why = []
        if self.ncc < MIN_NCC:
            why.append(f"the images agree poorly after it (NCC {self.ncc:.2f} < {MIN_NCC})")
        if scales.min() < lo or scales.max() > hi:
            # rounded outwards: a 0.7996x stretch read "0.80-0.99x (a rescan: 0.8-1.25x)", inside the range it broke
            least, most = (
                np.floor(round(scales.min() * 100, 6)) / 100,
                np.ceil(round(scales.max() * 100, 6)) / 100,
            )
            why.append(f"it stretches B by {least:.2f}-{most:.2f}x in um (a rescan: {lo}-{hi}x)")
        if not why:
            return None
        return (
            f"the {self.method} registration looks wrong: {' and '.join(why)}. Are A and B the same tissue? "
            "Check the registered view, or place landmarks (same order on both slides)."
        )


def register_images(
    fixed_rgb: np.ndarray,
    moving_rgb: np.ndarray,
    *,
    fixed_mpp: float,
    moving_mpp: float,
    work_mpp: float = 4.0,
    transform: str = "affine",
    angles=range(0, 360, 15),
    mirror: bool = True,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    check: Callable[[], None] = go_on,
    progress: Callable[[float], None] | None = None,
) -> Registration:
    """Register ``moving_rgb`` onto ``fixed_rgb``.

    Args:
        fixed_rgb: (H, W, 3) uint8 low-resolution image of the fixed slide (e.g. a thumbnail).
        moving_rgb: (H', W', 3) uint8 image of the moving slide.
        fixed_mpp: um per pixel of ``fixed_rgb`` (thumbnail downsample x slide MPP); its pixel (i, j) is at
            (i, j) * fixed_mpp um, as the moving image's.
        moving_mpp: um per pixel of ``moving_rgb``.
        work_mpp: common resolution of the automatic registration; never finer than the coarser image
            (``Registration.work_mpp`` says the one used): pixels resampled finer carry no information, only cost
            (256 px OS-2 thumbnails at 1.95 um/px took 3-18x longer at 1-0.5 um/px, for a matrix within 0.1 um:
            ``benchmarks/registration_work.py``).
        transform: "rigid" or "affine".
        angles: rotations (degrees) tried by the coarse search; ``(0,)`` for same-orientation scans.
        mirror: try each angle on the mirror image of ``moving_rgb`` too (a section laid face down, a scan
            flipped on export); :attr:`Registration.mirrored` says when the result flips it.
        landmarks: optional ``(fixed_um, moving_um)`` (n, 2) point pairs; when given they define the affine
            (manual override) and the automatic search is skipped.
        check: called between the search's steps; raises to stop it (``errors.Cancelled`` on Cancel).
        progress: called with the fraction of the search done (0..1, increasing): the rotation search by angle
            (the first :data:`COARSE_SHARE`), then the refinement's estimate (``_registration_search.refine``).

    Returns:
        The :class:`Registration` (matrix in micrometres).
    """
    work_mpp = max(work_mpp, fixed_mpp, moving_mpp)
    fixed_g, fixed_um = resample(density(fixed_rgb), fixed_mpp, work_mpp)
    moving_g, moving_um = resample(density(moving_rgb), moving_mpp, work_mpp)
    if landmarks is not None:
        m_um, method = landmark_affine(*landmarks), "landmarks"
        m_px = np.linalg.inv(fixed_um) @ m_um @ moving_um
    else:
        f_s, m_s = gaussian(fixed_g, 1.0), gaussian(moving_g, 1.0)
        if f_s.max() <= 0.05 or m_s.max() <= 0.05:
            raise RegistrationError("an image has no visible tissue at this resolution; lower work_mpp")
        pose = coarse_pose(f_s, m_s, angles, check, _share(progress, 0.0, COARSE_SHARE), mirror)
        m_px = refine(f_s, m_s, pose, transform == "affine", check, _share(progress, COARSE_SHARE, 1.0))
        m_um, method = fixed_um @ m_px @ np.linalg.inv(moving_um), f"auto-{transform}"
    score = overlap_ncc(fixed_g, warp_moving(moving_g, m_px, fixed_g.shape))
    return Registration(m_um, score, method, work_mpp)


def _share(progress: Callable[[float], None] | None, lo: float, hi: float) -> Callable[[float], None] | None:
    """``progress`` of a step that makes up ``lo``..``hi`` of the whole (None: None)."""
    return None if progress is None else (lambda f: progress(lo + (hi - lo) * f))


def landmark_affine(fixed_pts: np.ndarray, moving_pts: np.ndarray) -> np.ndarray:
    """Least-squares affine (3, 3) mapping moving (n, 2) points onto fixed (n, 2) points (n >= 3)."""
    fixed_pts, moving_pts = np.asarray(fixed_pts, float), np.asarray(moving_pts, float)
    if len(fixed_pts) < 3 or fixed_pts.shape != moving_pts.shape:
        raise RegistrationError(
            f"manual registration needs >= 3 matching landmark pairs (x, y), the same number on each slide in "
            f"the same order; got {len(fixed_pts)} on the fixed slide and {len(moving_pts)} on the moving one"
        )
    for pts, which in ((fixed_pts, "fixed"), (moving_pts, "moving")):
        if _flatness(pts) < MIN_LANDMARK_SPREAD:
            raise RegistrationError(
                f"the landmarks of the {which} slide lie on (or near) one line, which fixes no affine across it "
                "(3 collinear points gave a singular transform); add points off that line"
            )
    if hasattr(AffineTransform, "from_estimate"):  # scikit-image >= 0.26
        tf = AffineTransform.from_estimate(moving_pts, fixed_pts)
        ok = bool(tf)
    else:  # pragma: no cover - older scikit-image
        tf = AffineTransform()
        ok = tf.estimate(moving_pts, fixed_pts)
    if not ok or not np.isfinite(tf.params).all():
        raise RegistrationError("landmarks are degenerate (collinear?); add non-collinear points")
    return tf.params


#: the least width / length of a landmark set (:func:`_flatness`) from which an affine is fitted
MIN_LANDMARK_SPREAD = 0.02


def _flatness(pts: np.ndarray) -> float:
    """Width over length of (n, 2) points: the ratio of the singular values of the centred points (0: on a line)."""
    sv = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
    return float(sv[-1] / sv[0]) if sv[0] > 0 else 0.0


def apply_affine(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) affine to (n, 2) points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


def target_registration_error(
    matrix: np.ndarray, fixed_pts: np.ndarray, moving_pts: np.ndarray
) -> np.ndarray:
    """(n,) Euclidean distance between mapped moving landmarks and their fixed counterparts (same units)."""
    return np.linalg.norm(apply_affine(matrix, moving_pts) - np.asarray(fixed_pts, float), axis=1)


def warp_rgb(
    moving_rgb: np.ndarray, out_to_in: np.ndarray, shape: tuple[int, int], cval: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """Resample an (H', W', 3) uint8 image onto an output grid of ``shape`` (bilinear).

    Args:
        moving_rgb: the image to resample.
        out_to_in: (3, 3) affine mapping output pixel (x, y) -> input pixel (x, y) (pixel centres).
        shape: output (h, w).
        cval: value outside the input (255: glass white).

    Returns:
        ((h, w, 3) uint8 resampled image, (h, w) bool: True where the output pixel falls inside the input).
    """
    tf = AffineTransform(matrix=out_to_in)
    img = warp(moving_rgb[..., :3], tf, output_shape=shape, order=1, preserve_range=True, cval=float(cval))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), _inside(out_to_in, shape, moving_rgb.shape[:2])


def _inside(out_to_in: np.ndarray, shape: tuple[int, int], in_shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) bool: output pixels whose nearest input pixel exists (the input's pixel centres 0..W-1 cover
    -0.5..W-0.5), computed from the coordinates: what a nearest-neighbour warp of ones with 0 outside gives, which
    scikit-image does through scipy.ndimage (0.4-2 s on a 1024 px view, 10x the bilinear warp of the image)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    (a, b, c), (d, e, f) = out_to_in[0], out_to_in[1]
    x, y = a * xx + b * yy + c, d * xx + e * yy + f
    h_in, w_in = in_shape
    return (x >= -0.5) & (x <= w_in - 0.5) & (y >= -0.5) & (y <= h_in - 0.5)


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8) -> np.ndarray:
    """Checkerboard of two same-shape (h, w[, C]) images: ``squares`` squares along the longer side, the
    top-left square from ``a``; edges of tissue that continue across squares show a good registration."""
    if a.shape != b.shape:
        raise ValueError(f"checkerboard needs two images of one shape, got {a.shape} and {b.shape}")
    h, w = a.shape[:2]
    side = max(1, int(np.ceil(max(h, w) / max(1, squares))))
    yy, xx = np.meshgrid(np.arange(h) // side, np.arange(w) // side, indexing="ij")
    from_b = (yy + xx) % 2 == 1
    return np.where(from_b[..., None] if a.ndim == 3 else from_b, b, a)
