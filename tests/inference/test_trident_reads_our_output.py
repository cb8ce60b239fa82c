"""Our HDF5 as TRIDENT's readers take it: ``IO.read_coords`` (the ``coords`` dataset's attrs) feeding its slide
encoders (TITAN, GigaPath: ``attributes['patch_size_level0']``) and ``WSI.extract_patch_features`` (``patch_size``,
``level0_magnification``, ``target_magnification`` -> the patcher's level-0 patch side)."""

from __future__ import annotations

import h5py
import numpy as np

from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model


def _read_coords(path) -> tuple[dict, np.ndarray]:
    """``trident.IO.read_coords``."""
    with h5py.File(path, "r") as f:
        return dict(f["coords"].attrs), f["coords"][:]


def test_trident_slide_encoders_and_patcher_read_our_coords(cmu_svs, tmp_path) -> None:
    """Our files said "CLAM/TRIDENT layout" but kept ``patch_size_level0`` on the file only: TRIDENT's
    ``extract_slide_features`` passes ``dict(f['coords'].attrs)`` to the slide encoder and TITAN raised
    "Batch must contain 'attributes' with 'patch_size_level0'" (GigaPath a KeyError); its patch extraction fell
    back to CLAM's legacy attrs (KeyError 'patch_size'). Now ``coords`` carries TRIDENT's attrs, also after rows
    of undecodable tiles are dropped (``outputs`` copies the file)."""
    out = embed_slide(cmu_svs, tiny_model("vit"), tmp_path, mpp=2.0, min_tissue=0.5, num_workers=0)
    attrs, coords = _read_coords(out)
    with h5py.File(out, "r") as f:
        size, tile_px, mpp = int(f.attrs["patch_size_level0"]), int(f.attrs["tile_px"]), float(f.attrs["mpp"])
        np.testing.assert_array_equal(coords, f["coords"][()])
    assert attrs["patch_size_level0"] == size  # TITAN / GigaPath: the tile side in level-0 px
    assert attrs["patch_size"] == tile_px and attrs["overlap"] == 0 and attrs["name"] == cmu_svs.stem
    # the patcher's level-0 side, round(patch_size * level0_mag / target_mag), with TRIDENT's integer mags
    assert attrs["level0_magnification"] == 20 and attrs["target_magnification"] == round(10 / mpp)
    side = round(attrs["patch_size"] * attrs["level0_magnification"] / attrs["target_magnification"])
    assert abs(side - size) <= 0.01 * size


def test_a_slide_without_mpp_states_no_magnification(tcga_svs, tmp_path) -> None:
    """No MPP: tiles are level-0 px, and no magnification is made up (TRIDENT then asks the slide for one)."""
    out = embed_slide(tcga_svs, tiny_model("vit", tile_px=224), tmp_path, min_tissue=0.5, num_workers=0)
    attrs, _ = _read_coords(out)
    assert attrs["patch_size_level0"] == attrs["patch_size"] == 224
    assert "level0_magnification" not in attrs and "target_magnification" not in attrs
