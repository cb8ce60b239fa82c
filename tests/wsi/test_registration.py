"""Registration on the real cross-scanner OS-2 pair and a BIRL/ANHIR H&E vs IHC pair with landmarks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_pathdistill.wsi.registration import (
    RegistrationError,
    apply_affine,
    landmark_affine,
    register_images,
    target_registration_error,
)


def _landmarks(path):
    with open(path, newline="") as fh:
        return {row[""]: (float(row["X"]), float(row["Y"])) for row in csv.DictReader(fh)}


def test_os2_cross_scanner_pair_registers(os2_pair):
    ndpi, vsi = (tifffile.imread(p) for p in os2_pair)
    reg = register_images(ndpi, vsi, fixed_mpp=0.227, moving_mpp=0.346, work_mpp=4.0, angles=(0,))
    assert reg.ncc > 0.9
    # same 500 um field: the transform is close to the identity in micrometres
    assert np.allclose(reg.matrix[:2, :2], np.eye(2), atol=0.03)
    assert np.abs(reg.matrix[:2, 2]).max() < 15.0


def test_birl_he_vs_ihc_target_registration_error(shared_data):
    d = shared_data / "paired" / "birl_anhir" / "lesions_"
    fixed = np.asarray(Image.open(d / "Izd2-29-041-w35_HE.jpg").convert("RGB"))
    moving = np.asarray(Image.open(d / "Izd2-29-041-w35_proSPC.jpg").convert("RGB"))
    lf, lm = _landmarks(d / "Izd2-29-041-w35_HE.csv"), _landmarks(d / "Izd2-29-041-w35_proSPC.csv")
    keys = sorted(set(lf) & set(lm), key=int)
    fp, mp = np.array([lf[k] for k in keys]), np.array([lm[k] for k in keys])
    reg = register_images(fixed, moving, fixed_mpp=1.0, moving_mpp=1.0, work_mpp=4.0, transform="affine")
    tre = target_registration_error(reg.matrix, fp, mp)
    identity = target_registration_error(np.eye(3), fp, mp)
    best = target_registration_error(landmark_affine(fp, mp), fp, mp)
    assert identity.mean() > 50  # the sections are far apart before registration
    assert tre.mean() < 12.0 and tre.mean() < 1.5 * best.mean()
    manual = register_images(fixed, moving, fixed_mpp=1.0, moving_mpp=1.0, landmarks=(fp, mp))
    assert manual.method == "landmarks"
    assert target_registration_error(manual.matrix, fp, mp).mean() == pytest.approx(best.mean())


def test_landmark_affine_recovers_known_transform():
    rng = np.random.default_rng(0)
    m = np.array([[1.1, 0.2, 30.0], [-0.1, 0.9, -12.0], [0, 0, 1]])
    moving = rng.uniform(0, 500, (6, 2))
    fixed = moving @ m[:2, :2].T + m[:2, 2]
    assert np.allclose(landmark_affine(fixed, moving), m)
    with pytest.raises(RegistrationError, match=">= 3"):
        landmark_affine(fixed[:2], moving[:2])


@pytest.mark.parametrize("which", ["fixed", "moving"])
def test_collinear_landmarks_are_refused_not_fitted_to_a_singular_affine(which: str) -> None:
    """Three points on one line (clicked along a tissue edge) gave a singular matrix (both rows [1, 0, -10]): the
    run went on to a registered view squashed onto a line, with only a 'stretches B by 12.7x' doubt."""
    on_line = np.array([[0.0, 0.0], [100.0, 100.0], [200.0, 201.0]])
    spread = np.array([[10.0, 5.0], [110.0, 104.0], [30.0, 206.0]])
    fixed, moving = (on_line, spread) if which == "fixed" else (spread, on_line)
    with pytest.raises(RegistrationError, match=f"landmarks of the {which} slide lie on .*one line"):
        landmark_affine(fixed, moving)
    assert np.isfinite(landmark_affine(spread, spread + 3.0)).all()  # a real triangle still fits


def test_warp_rgb_identity_shift_and_outside(cmu_svs) -> None:
    """On a real thumbnail: the identity gives the image back; out -> in shifted by (+7, +3) px reads the
    pixels 7 right / 3 down; what falls outside is white and marked outside."""
    from napari_pathdistill.wsi import open_pyramid
    from napari_pathdistill.wsi.registration import warp_rgb

    with open_pyramid(cmu_svs) as pyr:
        img, _ = pyr.thumbnail(256)
    same, inside = warp_rgb(img, np.eye(3), img.shape[:2])
    np.testing.assert_array_equal(same, img)
    assert inside.all()
    shift = np.array([[1.0, 0, 7], [0, 1, 3], [0, 0, 1]])
    moved, inside = warp_rgb(img, shift, img.shape[:2])
    np.testing.assert_array_equal(moved[:-3, :-7], img[3:, 7:])
    assert not inside[:, -7:].any() and inside[:-3, :-7].all()
    assert (moved[:, -6:] == 255).all()


def test_checkerboard_alternates_the_two_images() -> None:
    from napari_pathdistill.wsi.registration import checkerboard

    a, b = np.zeros((40, 64, 3), np.uint8), np.full((40, 64, 3), 200, np.uint8)
    cb = checkerboard(a, b, squares=8)  # 8 squares of 8 px along the 64 px side
    assert (cb[:8, :8] == 0).all() and (cb[:8, 8:16] == 200).all() and (cb[8:16, :8] == 200).all()
    assert (cb[8:16, 8:16] == 0).all() and (cb == 200).mean() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="one shape"):
        checkerboard(a, b[:, :10])


def test_the_search_checks_for_a_stop_before_each_angle_and_each_evaluation(os2_pair):
    """Cancel reached the similarity run only after its registration (~30 s on a CPU): the search now calls
    ``check`` between its steps, and what ``check`` raises stops it."""
    ndpi, vsi = (tifffile.imread(p) for p in os2_pair)
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 30:  # past the 3 angles: inside the optimiser
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt, match="stop"):
        register_images(ndpi, vsi, fixed_mpp=0.227, moving_mpp=0.346, angles=(0, 90, 180), check=check)
    assert len(calls) == 30


@pytest.mark.parametrize(
    ("linear", "ncc", "why"),
    [
        (np.eye(2), 0.9, None),
        (np.array([[0.0, -1.0], [1.0, 0.0]]) * 1.1, 0.5, None),  # rotated, 10 % larger: a rescan can be
        (np.eye(2) * 2.4, 0.9, "stretches B by 2.40-2.40x"),
        (np.array([[1.0, 0.0], [0.0, 0.4]]), 0.9, "stretches B by 0.40-1.00x"),
        (np.eye(2), 0.1, "agree poorly after it (NCC 0.10 < 0.25)"),
        # just outside the range: rounded outwards, not to a bound (it read "0.80-0.99x (a rescan: 0.8-1.25x)")
        (np.diag([0.7996, 0.99]), 0.9, "stretches B by 0.79-0.99x"),
        (np.diag([1.0, 1.2504]), 0.9, "stretches B by 1.00-1.26x"),
    ],
)
def test_a_registration_no_rescan_makes_is_doubted(linear, ncc, why):
    from napari_pathdistill.wsi.registration import Registration

    matrix = np.eye(3)
    matrix[:2, :2] = linear
    doubt = Registration(matrix, ncc, "auto-affine", 4.0).doubt()
    assert (
        (doubt is None)
        if why is None
        else (why in doubt and doubt.startswith("the auto-affine registration"))
    )


def test_small_images_are_not_upsampled_to_work_mpp(os2_pair):
    """Thumbnails coarser than ``work_mpp`` were resampled finer before the search: 4x the pixels at 1 um/px
    for 2 um/px OS-2 thumbnails, 16x at 0.5 (each of the optimiser's hundreds of NCC evaluations grew with them:
    3-18x the time) and nothing gained. The search now works at the coarser image's um/px, same field."""
    from skimage.transform import rescale

    def thumb(path, mpp):
        img = tifffile.imread(path)[..., :3]
        f = 250 / max(img.shape[:2])
        small = rescale(img, f, channel_axis=-1, anti_aliasing=True, preserve_range=True).astype(np.uint8)
        return small, mpp * img.shape[1] / small.shape[1]

    (fa, ma), (fb, mb) = thumb(os2_pair[0], 0.227), thumb(os2_pair[1], 0.346)
    reg = register_images(fa, fb, fixed_mpp=ma, moving_mpp=mb, work_mpp=1.0, angles=(0,))
    assert reg.work_mpp == pytest.approx(max(ma, mb)) and max(ma, mb) == pytest.approx(2.0, abs=0.1)
    # the same 500 um field, as at full resolution (test_os2_cross_scanner_pair_registers)
    assert reg.ncc > 0.9 and np.allclose(reg.matrix[:2, :2], np.eye(2), atol=0.03)
    assert np.abs(reg.matrix[:2, 2]).max() < 15.0
    full = register_images(*(tifffile.imread(p) for p in os2_pair), fixed_mpp=0.227, moving_mpp=0.346,
                           work_mpp=4.0, angles=(0,))  # fmt: skip
    corners = np.array([[0.0, 0.0], [500.0, 0.0], [0.0, 500.0], [500.0, 500.0]])
    assert np.abs(apply_affine(reg.matrix, corners) - apply_affine(full.matrix, corners)).max() < 4.0
