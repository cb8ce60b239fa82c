"""Registration step of the similarity pipeline on the real cross-scanner OS-2 pair (same 500 um field)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari_pathdistill.inference.embed", reason="inference core (issue 7) not merged yet")

from napari_pathdistill.errors import RegistrationError
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
