"""The automatic registration's search (``wsi.registration.register_images``): optical density at a common
um/px, a coarse rotation search with phase correlation, and Powell's refinement of the overlap NCC.

Images are (H, W) float optical density (background 0); matrices map **moving** pixel (x, y) -> **fixed** pixel
(x, y) of the work images, except :func:`work_to_um`'s, which maps work pixels to the micrometres of an input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from skimage.registration import phase_cross_correlation
from skimage.transform import AffineTransform, rescale, warp


def density(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float optical density summed over channels (background ~ 0)."""
    return (-np.log((rgb.astype(np.float64) + 1.0) / 256.0)).sum(-1)


def resample(img: np.ndarray, mpp: float, work_mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` at ``work_mpp`` and the (3, 3) map of its pixels (x, y) to the micrometres of ``img``."""
    out = rescale(img, mpp / work_mpp, order=1, anti_aliasing=mpp < work_mpp, channel_axis=None)
    return out, work_to_um(img.shape[:2], out.shape[:2], mpp)


def work_to_um(in_shape: tuple[int, ...], out_shape: tuple[int, ...], mpp: float) -> np.ndarray:
    """(3, 3) pixel (x, y) of an image resized from ``in_shape`` to ``out_shape`` -> micrometres of the input,
    whose pixel i is at ``i * mpp``. A resize maps output pixel k to input pixel ``(k + 0.5) f - 0.5`` (f = in /
    out on each axis, pixel edges aligned): ``k * work_mpp`` alone put every point ``(work_mpp - mpp) / 2`` off, an
    offset that a rotation between the slides does not cancel (5 um on a slide turned by 170 degrees)."""
    fy, fx = in_shape[0] / out_shape[0], in_shape[1] / out_shape[1]
    return np.array([[fx * mpp, 0, (fx - 1) / 2 * mpp], [0, fy * mpp, (fy - 1) / 2 * mpp], [0, 0, 1.0]])


def go_on() -> None:
    """The default ``check``: never stops."""


def _pad_to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def warp_moving(moving: np.ndarray, matrix_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warp a (H, W[, C]) moving image into the fixed frame of ``shape`` (outside = NaN)."""
    inv = AffineTransform(matrix=np.linalg.inv(matrix_px))
    return warp(moving.astype(np.float64), inv, output_shape=shape, order=1, cval=np.nan)


def overlap_ncc(fixed: np.ndarray, warped: np.ndarray) -> float:
    """NCC over pixels where the warped image is defined (NaN outside).

    Sums of products by ``einsum``, not BLAS (``a @ b``, ``norm``): OpenBLAS splits a dot of 10,000+ elements
    over threads, and with the CPU shared (napari, other work) each of the search's hundreds of evaluations
    waited on their wake-ups, 3-40x slower here (``benchmarks/registration_work.py``)."""
    ok = ~np.isnan(warped)
    if ok.sum() < 16:
        return -1.0
    a, b = fixed[ok], warped[ok]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt(np.einsum("i,i", a, a) * np.einsum("i,i", b, b))
    return float(np.einsum("i,i", a, b) / den) if den > 0 else -1.0


def _rotation_about(center: np.ndarray, angle_deg: float) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    tr, back = np.eye(3), np.eye(3)
    tr[:2, 2], back[:2, 2] = -center, center
    return back @ r @ tr


def mirror_x(shape: tuple[int, ...]) -> np.ndarray:
    """(3, 3) pixel (x, y) -> (W - 1 - x, y) of an image of ``shape`` (H, W): its mirror image onto itself."""
    return np.array([[-1.0, 0.0, shape[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def coarse_pose(
    fixed: np.ndarray,
    moving: np.ndarray,
    angles,
    check: Callable[[], None] = go_on,
    progress: Callable[[float], None] | None = None,
    mirror: bool = True,
) -> np.ndarray:
    """Best rotation (about the moving centre) + phase-correlation translation, by overlap NCC; with ``mirror``
    each angle is tried on the mirror image of ``moving`` too (a section laid face down on its glass, a scan
    flipped on export: no rotation maps it onto ``fixed``). ``check()`` is called before each pose (it raises
    to stop, e.g. on Cancel), ``progress`` after it with the fraction of the poses done."""
    shape = tuple(np.maximum(fixed.shape, moving.shape) * 2)
    f = _pad_to(fixed, shape)
    centre = np.array(moving.shape[::-1]) / 2.0
    best, best_m = -2.0, np.eye(3)
    flips = (np.eye(3), mirror_x(moving.shape)) if mirror else (np.eye(3),)
    poses = [(ang, flip) for flip in flips for ang in angles]
    for i, (ang, flip) in enumerate(poses):
        if progress is not None and i:
            progress(i / len(poses))
        check()
        rot = _rotation_about(centre, ang) @ flip
        m_rot = np.nan_to_num(warp_moving(moving, rot, shape))
        shift = phase_cross_correlation(f, m_rot, normalization=None)[0]
        m = np.eye(3)
        m[:2, 2] = shift[::-1]
        m = m @ rot
        score = overlap_ncc(fixed, warp_moving(moving, m, fixed.shape))
        if score > best:
            best, best_m = score, m
    return best_m


#: the refinement's most evaluations, and about how many it makes (OS-2 NDPI vs VSI 393, BIRL lesion H&E vs IHC
#: 918, rat kidney 1,853, a 4.4 mm TCGA field turned by 170 degrees 1,261): the scale of its progress estimate
MAX_EVALS, TYPICAL_EVALS = 3000, 700


def refine(
    fixed: np.ndarray,
    moving: np.ndarray,
    init: np.ndarray,
    affine: bool,
    check: Callable[[], None] = go_on,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Maximise overlap NCC over rigid (angle, tx, ty) or affine (6) parameters around ``init``; ``check()`` is
    called before each of the optimiser's evaluations (up to :data:`MAX_EVALS`: it raises to stop), ``progress``
    with an estimate of the fraction done, ``1 - exp(-evaluations / TYPICAL_EVALS)`` (Powell's method stops when
    the NCC no longer improves: how many evaluations that takes is not known in advance)."""
    evals = 0

    def cost(p: np.ndarray) -> float:
        nonlocal evals
        if progress is not None and evals:
            progress(1.0 - np.exp(-evals / TYPICAL_EVALS))
        evals += 1
        check()
        return -overlap_ncc(fixed, warp_moving(moving, matrix(p), fixed.shape))

    centre = np.array(fixed.shape[::-1]) / 2.0

    def matrix(p: np.ndarray) -> np.ndarray:
        if affine:
            d = np.array([[1 + p[0], p[1], p[4]], [p[2], 1 + p[3], p[5]], [0, 0, 1]])
        else:
            d = _rotation_about(centre, p[0])
            d[:2, 2] += p[1:3]
        return d @ init

    x0 = np.zeros(6 if affine else 3)
    res = minimize(
        cost,
        x0,
        method="Powell",
        options={"xtol": 1e-3, "ftol": 1e-5, "maxfev": MAX_EVALS},
    )
    return matrix(res.x)
