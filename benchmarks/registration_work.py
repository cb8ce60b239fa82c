"""Registration time against the resolution it works at, on the real OS-2 cross-scanner pair.

Usage: ``python benchmarks/registration_work.py [--thumb 256] [--fine 1.0 0.5] [--data ../shared/data]``
(``--quick``: 96 px thumbnails, one finer resolution (2 um/px), 3 NCC repeats: a smoke run, tests/test_benchmarks.py)

Both scans (NDPI 0.227 um/px, VSI 0.346 um/px, one 500 um field) are reduced to ``--thumb`` px thumbnails
(about 2 um/px), as ``register_pair`` hands them to ``register_images``. Timed side by side in one process:

* ``native``: ``work_mpp`` = the thumbnails' um/px (the baseline);
* ``asked F``: ``work_mpp=F`` finer than the thumbnails: ``register_images`` works at the thumbnails' um/px
  instead (pixels resampled finer carry no information), so the ratio stays near 1;
* ``upsampled F``: the thumbnails resampled to F um/px BEFORE the call, i.e. what ``asked F`` cost when
  ``register_images`` upsampled to ``work_mpp`` itself.

Each line prints the time ratio to ``native`` and how far the matrix moves points of the field (um) from the
native one: upsampling costs time and buys no accuracy.

Then one overlap-NCC evaluation (the search's unit of work, hundreds per registration) on work images of 256 and
512 px: the earlier BLAS formula (``a @ b``, ``np.linalg.norm``: multi-threaded OpenBLAS dots, slow to wake up on
a busy CPU) against ``registration.overlap_ncc`` (``einsum``). Run it beside other work to see the difference;
the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.transform import rescale

from _data import DATA
from napari_pathdistill.wsi.registration import (
    Registration,
    apply_affine,
    overlap_ncc,
    register_images,
    work_to_um,
)

PAIR = Path("paired") / "openslide_OS-2_ndpi_vs_vsi"
GRID = np.stack(np.meshgrid(np.linspace(0, 500, 6), np.linspace(0, 500, 6)), -1).reshape(-1, 2)


def _thumb(path: Path, mpp: float, side: int) -> tuple[np.ndarray, float]:
    img = tifffile.imread(path)[..., :3]
    f = side / max(img.shape[:2])
    out = rescale(img, f, channel_axis=-1, anti_aliasing=True, preserve_range=True).astype(np.uint8)
    return out, mpp * img.shape[1] / out.shape[1]


def _timed(fixed, moving, mf: float, mm: float, work: float) -> tuple[float, Registration]:
    t0 = time.perf_counter()
    reg = register_images(fixed, moving, fixed_mpp=mf, moving_mpp=mm, work_mpp=work, angles=(0, 90))
    return time.perf_counter() - t0, reg


def _up(img: np.ndarray, mpp: float, to: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` resampled to ``to`` um/px, and the (3, 3) map of its um (pixel k at k * to) to ``img``'s."""
    out = rescale(img, mpp / to, channel_axis=-1, order=1, preserve_range=True).astype(np.uint8)
    return out, work_to_um(img.shape[:2], out.shape[:2], mpp) @ np.diag([1 / to, 1 / to, 1.0])


def _blas_ncc(fixed: np.ndarray, warped: np.ndarray) -> float:
    """The overlap NCC as it was written before (BLAS dot and norms), the baseline."""
    ok = ~np.isnan(warped)
    a, b = fixed[ok] - fixed[ok].mean(), warped[ok] - warped[ok].mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _per_call(fn, *args, repeats: int) -> float:
    fn(*args)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t0) / repeats


def ncc_evaluations(fa: np.ndarray, repeats: int) -> dict[str, float]:
    """Time one overlap NCC both ways on A's optical density at two work sizes (B: A shifted, NaN outside);
    returns the BLAS / einsum time ratio per size."""
    from napari_pathdistill.wsi.registration import density

    ratios = {}
    for side in (256, 512):
        f = rescale(density(fa), side / max(fa.shape[:2]), order=1)
        w = np.full_like(f, np.nan)
        w[5:, 3:] = f[:-5, :-3]
        assert abs(_blas_ncc(f, w) - overlap_ncc(f, w)) < 1e-9
        old, new = _per_call(_blas_ncc, f, w, repeats=repeats), _per_call(overlap_ncc, f, w, repeats=repeats)
        ratios[f"ncc {f.shape[1]}x{f.shape[0]}"] = old / new
        print(f"overlap NCC {f.shape[1]}x{f.shape[0]} px: BLAS {old * 1e3:.2f} ms, einsum {new * 1e3:.2f} ms, "
              f"x{old / new:.1f} faster")  # fmt: skip
    return ratios


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the comparison; returns each line's time ratio to ``native`` (``asked 1.0``, ``upsampled 1.0``, ...)
    and the BLAS / einsum ratio of each NCC size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thumb", type=int, default=256)
    ap.add_argument("--fine", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument("--ncc-repeats", type=int, default=50, help="timed calls per NCC formula and size")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data root (../shared/data)")
    ap.add_argument("--quick", action="store_true", help="--thumb 96 --fine 2.0 --ncc-repeats 3: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.thumb, args.fine, args.ncc_repeats = 96, [2.0], 3
    load_before = os.getloadavg()
    pair = args.data / PAIR
    (fa, ma), (fb, mb) = (
        _thumb(pair / "OS-2-ndpi.ome.tif", 0.227, args.thumb),
        _thumb(pair / "OS-2-vsi.ome.tif", 0.346, args.thumb),
    )
    native = max(ma, mb)
    base_t, base = _timed(fa, fb, ma, mb, native)
    print(f"native    {native:5.2f} um/px: {base_t:6.2f} s  (NCC {base.ncc:.3f})")
    ratios = {}
    for fine in args.fine:
        (ua, to_a), (ub, to_b) = _up(fa, ma, fine), _up(fb, mb, fine)
        for label, (a, b, pa, pb, fa_um, fb_um) in (
            ("asked", (fa, fb, ma, mb, np.eye(3), np.eye(3))),
            ("upsampled", (ua, ub, fine, fine, to_a, to_b)),
        ):
            t, reg = _timed(a, b, pa, pb, fine)
            matrix = fa_um @ reg.matrix @ np.linalg.inv(fb_um)  # in the thumbnails' um, as the native one
            moved = np.abs(apply_affine(matrix, GRID) - apply_affine(base.matrix, GRID)).max()
            ratios[f"{label} {fine:g}"] = t / base_t
            print(f"{label:9s} {fine:5.2f} um/px: worked at {reg.work_mpp:5.2f}, time x{t / base_t:5.1f}, "
                  f"points within {moved:.2f} um of native's (NCC {reg.ncc:.3f})")  # fmt: skip
    ratios |= ncc_evaluations(fa, args.ncc_repeats)
    after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}; {os.cpu_count()} CPUs")  # fmt: skip
    return ratios


if __name__ == "__main__":
    main()
