"""Similarity widget on a slide whose pixels are not quite square (within the 2 % that tiling accepts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill._qt.similarity_widget import SimilarityWidget
from napari_pathdistill.wsi.pyramid import open_pyramid

pytestmark = pytest.mark.napari

MPP_X, MPP_Y = 0.2271, 0.2271 * 1.015  # a 1.5 % anisotropy: tiled at the mean um/px (wsi.tiling)


def _anisotropic_ndpi(path: Path, ndpi: Path) -> Path:
    """OS-2's NDPI pixels with MPP-X 0.2271 and MPP-Y 1.5 % larger (an OME-TIFF)."""
    import tifffile

    with open_pyramid(ndpi) as pyr:
        rgb = np.ascontiguousarray(pyr.read_region((0, 0), 0, pyr.levels[0].shape[::-1])[..., :3])
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     metadata={"PhysicalSizeX": MPP_X, "PhysicalSizeY": MPP_Y})  # fmt: skip
    return path


def test_registered_b_covers_slide_a_with_non_square_pixels(
    make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for, tmp_path
):
    """The registered view was placed with A's MPP-Y and MPP-X, then mapped onto A's layer with their mean (the
    overlay's unit): on 1.5 % non-square pixels it stood 0.75 % too tall and 0.75 % too narrow (3.7 um at the
    far edge of the 500 um field; 190 um on a 25 mm slide). It now covers A's layer as the cosine overlay does."""
    viewer = make_napari_viewer()
    a = open_slide(viewer, _anisotropic_ndpi(tmp_path / "aniso.ome.tif", os2_pair[0]))
    b = open_slide(viewer, os2_pair[1])
    assert tuple(a.scale[-2:]) == pytest.approx((MPP_Y, MPP_X))
    widget = SimilarityWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.slide_a.value, widget.slide_b.value = a, b
    widget.mpp.value = 4.0
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None and res.registered is not None, widget.status.value
    registered = viewer.layers[f"{a.name} registered B"]
    thumb_px = np.asarray(a.scale[-2:]) * np.asarray(a.data[0].shape[:2]) / res.registered.a.shape[:2]
    lo, hi = (np.asarray(v)[-2:] for v in registered.extent.world)
    a_lo, a_hi = (np.asarray(v)[-2:] for v in a.extent.world)
    np.testing.assert_allclose(lo, a_lo, atol=0.6 * thumb_px.max())
    np.testing.assert_allclose(hi, a_hi, atol=0.6 * thumb_px.max())
    # the cosine overlay: the first tile's cell centre on that tile's centre, in A's level-0 px
    cosine = viewer.layers[f"{a.name} cosine to B"]
    side = res.scale[0] / res.mpp_a  # tile side in level-0 px
    centre_px = res.coords_a[0][::-1] + (side - 1) / 2  # (y, x)
    r, c = np.round(cosine.world_to_data(centre_px * np.asarray(a.scale[-2:]))).astype(int)
    assert res.overlay[r, c] == pytest.approx(res.cosine[0])
