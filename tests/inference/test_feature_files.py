"""Feature HDF5 files of our, CLAM's and TRIDENT's layouts -> FeatureFile -> SlideMap aligned with the slide."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from _shared_data import SHARED_DATA
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.feature_files import (
    FeatureFileError,
    NoMPPFeatureWarning,
    is_feature_file,
    read_feature_file,
    slide_map_from_features,
)
from napari_pathdistill.wsi.pyramid import open_pyramid

SLIDE = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def ours(tmp_path_factory, tiny_vit_2um) -> Path:
    """A real ``embed_slide`` output of CMU-1-Small-Region (112 um tiles, 224 level-0 px)."""
    return embed_slide(SLIDE, tiny_vit_2um, tmp_path_factory.mktemp("feats"), num_workers=0)


def _write_like(src: Path, dst: Path, layout: str) -> Path:
    """The same features/coords written as CLAM's extract_features_fp or TRIDENT's feature extraction do."""
    with h5py.File(src, "r") as f:
        feats, coords, size = f["features"][()], f["coords"][()], int(f.attrs["patch_size_level0"])
    with h5py.File(dst, "w") as f:
        if layout == "clam":  # utils/file_utils.save_hdf5: (N, D) float32 features, (N, 2) int coords
            f.create_dataset("features", data=feats)
            c = f.create_dataset("coords", data=coords.astype(np.int32))
            c.attrs.update({"patch_level": 0, "patch_size": size, "downsample": [1.0, 1.0], "name": src.stem})
        else:  # trident/IO.save_h5: features, coords with the patcher's attrs on coords
            f.create_dataset("features", data=feats)
            c = f.create_dataset("coords", data=coords)
            c.attrs.update({
                "patch_size": 224, "patch_size_level0": size, "level0_magnification": 20,
                "target_magnification": 10, "overlap": 0, "name": src.stem, "savetodir": str(dst.parent),
            })  # fmt: skip
    return dst


def test_ours_round_trip_and_grid_alignment(ours, tiny_vit_2um):
    with h5py.File(ours, "r") as f:
        feats, coords = f["features"][()], f["coords"][()]
    ff = read_feature_file(ours)
    assert ff.source == "pathdistill" and ff.model == tiny_vit_2um.spec.name
    np.testing.assert_array_equal(ff.coords, coords)
    np.testing.assert_array_equal(ff.features, feats)
    with open_pyramid(SLIDE) as pyr:
        slide_mpp = pyr.mpp[1]
    assert ff.patch_size_level0 == round(112 / slide_mpp)
    assert ff.mpp == pytest.approx(slide_mpp, rel=1e-2)
    smap = slide_map_from_features(ff, k=3)
    centers = smap.tile_centers()  # (N, 2) (y, x) in um: tile i's cell centre is its level-0 box centre
    half = (ff.step - 1) / 2  # within one level-0 px (coords are rounded to px, the step is 224.45 px)
    np.testing.assert_allclose(centers[:, 1], (coords[:, 0] + half) * ff.mpp, atol=ff.mpp)
    np.testing.assert_allclose(centers[:, 0], (coords[:, 1] + half) * ff.mpp, atol=ff.mpp)
    r, c = np.round(coords[:, ::-1] / ff.step).astype(int).T
    np.testing.assert_array_equal(smap.index_image[r, c], np.arange(1, len(coords) + 1))
    assert smap.features_file == ours and set(np.unique(smap.clusters)) <= {1, 2, 3}
    # ours stores each tile's tissue fraction: the map's hover shows it (no NaN)
    assert (
        np.isfinite(ff.tissue_fraction).all()
        and ((ff.tissue_fraction >= 0) & (ff.tissue_fraction <= 1)).all()
    )
    np.testing.assert_array_equal(smap.grid.tissue_fraction, ff.tissue_fraction)


@pytest.mark.parametrize("layout", ["clam", "trident"])
def test_clam_and_trident_layouts(ours, tmp_path, layout):
    other = read_feature_file(_write_like(ours, tmp_path / f"{layout}.h5", layout))
    ref = read_feature_file(ours)
    assert other.source == layout
    np.testing.assert_array_equal(other.coords, ref.coords)
    np.testing.assert_array_equal(other.features, ref.features)
    assert other.patch_size_level0 == ref.patch_size_level0
    assert np.isnan(other.tissue_fraction).all()  # neither layout stores one
    if layout == "clam":  # CLAM states no um/px: the map is in px unless the slide's MPP is given
        assert other.mpp is None
        with pytest.warns(NoMPPFeatureWarning):
            slide_map_from_features(other)
    else:
        assert other.mpp == pytest.approx(0.5)  # 10 / level0_magnification
    a = slide_map_from_features(other, slide_mpp=ref.mpp)
    b = slide_map_from_features(ref)
    np.testing.assert_array_equal(a.index_image, b.index_image)
    assert a.scale == pytest.approx(b.scale) and a.translate == pytest.approx(b.translate)


def test_3d_features_and_offset_grid(ours, tmp_path):
    """TRIDENT/CLAM variants: (1, N, D) features; coords on a lattice that does not start at 0."""
    ref = read_feature_file(ours)
    p = tmp_path / "offset.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("features", data=ref.features[None])
        f.create_dataset("coords", data=ref.coords + np.array([37, 11]))
    ff = read_feature_file(p)  # no tile size attr: the coords' step
    assert ff.features.shape == ref.features.shape and ff.patch_size_level0 == ref.patch_size_level0
    smap = slide_map_from_features(ff, slide_mpp=ref.mpp)
    half = (ff.step - 1) / 2
    np.testing.assert_allclose(smap.tile_centers()[:, 1], (ff.coords[:, 0] + half) * ref.mpp, atol=ref.mpp)
    np.testing.assert_allclose(smap.tile_centers()[:, 0], (ff.coords[:, 1] + half) * ref.mpp, atol=ref.mpp)


def test_n_1_d_features(ours, tmp_path):
    """(N, 1, D) features: a model's (B, 1, D) token output appended by CLAM's save_hdf5 as is. It used to be
    refused ("features (53, 1, 48) and coords (53, 2) are not (N, D) and (N, 2)")."""
    ref = read_feature_file(ours)
    path = _write(tmp_path / "n1d.h5", features=ref.features[:, None], coords=ref.coords.astype(np.int32))
    ff = read_feature_file(path)
    np.testing.assert_array_equal(ff.features, ref.features)
    np.testing.assert_array_equal(ff.coords, ref.coords)


@pytest.mark.parametrize("shape", ["n_d", "1_n_d", "n_1_d"])
def test_reading_without_the_rows_keeps_everything_else(ours, tmp_path, shape):
    """``features=False`` (the reader's deferred map places its layers with it): the same coords, lattice, um/px,
    attrs and stored summary as the whole read, and (N, 0) features, for every features layout."""
    ref = read_feature_file(ours)
    feats = {"n_d": ref.features, "1_n_d": ref.features[None], "n_1_d": ref.features[:, None]}[shape]
    path = _write(tmp_path / "f.h5", features=feats, coords=ref.coords)
    with h5py.File(ours, "r") as src, h5py.File(path, "a") as dst:
        dst.attrs.update(dict(src.attrs))
        src.copy("map", dst)
    whole, head = read_feature_file(path), read_feature_file(path, features=False)
    assert head.features.shape == (len(ref.coords), 0) and whole.summary is not None
    np.testing.assert_array_equal(head.coords, whole.coords)
    np.testing.assert_array_equal(head.summary.clusters, whole.summary.clusters)  # type: ignore[union-attr]
    for key in ("patch_size_level0", "step", "origin", "mpp", "slide_path", "model", "source", "level0_size"):
        assert getattr(head, key) == getattr(whole, key), key


def test_bad_files_raise_clear_errors(tmp_path):
    not_h5 = tmp_path / "x.h5"
    not_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)  # HDF5 magic, then nothing: truncated
    with pytest.raises(FeatureFileError, match="cannot be read"):
        read_feature_file(not_h5)
    other = _write(tmp_path / "other.h5", image=np.zeros((4, 4)))
    assert not is_feature_file(other) and not is_feature_file(not_h5)
    with pytest.raises(FeatureFileError, match="not a feature file"):
        read_feature_file(other)
    bad = _write(tmp_path / "bad.h5", features=np.zeros((5, 8)), coords=np.zeros((4, 2)))
    with pytest.raises(FeatureFileError, match="not \\(N, D\\)"):
        read_feature_file(bad)
    one = _write(tmp_path / "one.h5", features=np.zeros((1, 8)), coords=np.zeros((1, 2)))
    with pytest.raises(FeatureFileError, match="tile size"):
        read_feature_file(one)
    # a valid HDF5 of scalar datasets: its shapes are the problem, not "truncated or not HDF5?"
    scalars = _write(tmp_path / "scalars.h5", features=np.float32(1), coords=np.float32(2))
    with pytest.raises(FeatureFileError, match=r"features \(\) and coords \(\) are not \(N, D\)"):
        read_feature_file(scalars)


def _write(path: Path, **datasets: np.ndarray) -> Path:
    """An HDF5 file holding ``datasets`` (name -> array), nothing else."""
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
    return path


def test_nan_or_inf_rows_are_left_out_with_a_warning(ours, tmp_path):
    """A TRIDENT file whose model overflowed on some tiles: the map shows the others (the PCA used to stop with
    numpy's "SVD did not converge"); a file of nothing but NaN is a clear error."""
    from napari_pathdistill.inference.feature_files import NonFiniteFeatureWarning

    path = _write_like(ours, tmp_path / "overflow.h5", "trident")
    with h5py.File(path, "r+") as f:
        feats, coords = f["features"][()], f["coords"][()]
        f["features"][3] = np.nan
        f["features"][5, 0] = np.inf
    with pytest.warns(NonFiniteFeatureWarning, match=r"2 of .* tiles have NaN or inf"):
        ff = read_feature_file(path)
    keep = np.ones(len(coords), bool)
    keep[[3, 5]] = False
    np.testing.assert_array_equal(ff.coords, coords[keep])
    np.testing.assert_array_equal(ff.features, feats[keep])
    smap = slide_map_from_features(ff, k=3)
    assert len(smap.features) == keep.sum() and np.isfinite(smap.pcs).all()
    with h5py.File(path, "r+") as f:
        f["features"][...] = np.nan
    with pytest.raises(FeatureFileError, match="NaN or inf"):
        read_feature_file(path)


def _clam_save_hdf5(path: Path, assets: dict[str, np.ndarray], mode: str, chunk_size: int = 32) -> None:
    """CLAM's ``utils/file_utils.save_hdf5`` as ``extract_features_fp.compute_w_loader`` calls it: one call per
    batch (``mode='w'`` first, then ``'a'``), datasets chunked (32, ...) with maxshape (None, ...), no attrs."""
    with h5py.File(path, mode) as f:
        for key, val in assets.items():
            if key not in f:
                shape = val.shape
                d = f.create_dataset(key, shape=shape, maxshape=(None, *shape[1:]),
                                     chunks=(chunk_size, *shape[1:]), dtype=val.dtype)  # fmt: skip
                d[:] = val
            else:
                d = f[key]
                d.resize(len(d) + len(val), axis=0)
                d[-len(val) :] = val


def _clam_contour_coords(boxes: list[tuple[int, int, int, int]], step: int) -> np.ndarray:
    """Level-0 coords as CLAM's ``WholeSlideImage.process_contour`` makes them (``create_patches_fp.py``): per
    tissue contour, ``np.arange`` from its bounding box's corner by the step, ``np.meshgrid(..., indexing='ij')``."""
    out = []
    for x0, y0, w, h in boxes:
        xx, yy = np.meshgrid(np.arange(x0, x0 + w, step), np.arange(y0, y0 + h, step), indexing="ij")
        out.append(np.array([xx.flatten(), yy.flatten()]).T)
    return np.concatenate(out)


@pytest.mark.parametrize("second", [(1300, 1603), (103, 1000)])
def test_clam_feature_file_of_two_contours(tmp_path, second):
    """CLAM's real h5_files/<slide>.h5 (no attrs; two tissue contours whose grids start at their bounding boxes:
    on no single lattice). It used to fit a 250.4 px step through both grids and stop with numpy's IndexError,
    or (x starts 3 px apart) take 3 px, the smallest difference of the x values, for the tile side; now the step
    is CLAM's 256, the larger contour's tiles sit exactly on their cells and the other one's within half a tile,
    each tile in its own cell."""
    boxes = [(100, 50, 900, 700), (*second, 800, 1200)]  # 4 x 3 and 4 x 5 tiles of 256 px on the CMU slide
    coords = _clam_contour_coords(boxes, 256).astype(np.int32)
    feats = np.random.default_rng(0).normal(size=(len(coords), 16)).astype(np.float32)
    path = tmp_path / "CMU-1-Small-Region.h5"
    for i, mode in zip(range(0, len(coords), 16), ["w", "a"], strict=True):  # two batches of the loader
        _clam_save_hdf5(path, {"features": feats[i : i + 16], "coords": coords[i : i + 16]}, mode)
    ff = read_feature_file(path)
    assert ff.source == "clam" and ff.patch_size_level0 == 256 and ff.step == 256.0
    smap = slide_map_from_features(ff, slide_mpp=0.499)
    assert np.count_nonzero(np.unique(smap.index_image)) == len(coords)  # no tile lost to another's cell
    off = smap.tile_centers() / 0.499 - (coords[:, ::-1] + 127.5)  # level-0 px from each tile's centre
    big = np.arange(len(coords)) >= 12  # the second contour: 20 tiles
    np.testing.assert_allclose(off[big], 0, atol=1e-6)
    assert np.abs(off[~big]).max() <= 128


def test_wide_slide_lattice_does_not_drift(tmp_path):
    """Our coords on a slide 600 tiles wide (134,700 px at 0.499 um/px, a 20x resection): 112 um tiles are
    224.449 px, rounded per tile as ``wsi.tiling.make_tile_grid`` does. The step used to be fitted with tile
    indices from ``round(x / 224)``, wrong past 250 columns: 5 of 3000 tiles shared a cell with a neighbour
    and the others drifted; now each tile's cell centre is within 1 px of its box centre."""
    size = 224 * 0.5 / 0.499
    xx, yy = np.meshgrid(np.arange(600), np.arange(5))
    coords = np.stack([np.round(xx.ravel() * size), np.round(yy.ravel() * size)], 1).astype(np.int64)
    path = _write(tmp_path / "wide.h5", features=np.ones((len(coords), 4), np.float32), coords=coords)
    with h5py.File(path, "r+") as f:
        f.attrs.update({"tile_px": 224, "mpp": 0.5, "patch_size_level0": round(size), "spec": "{}"})
    ff = read_feature_file(path)
    assert ff.step == pytest.approx(size, abs=1e-3) and ff.mpp == pytest.approx(0.499, abs=1e-4)
    smap = slide_map_from_features(ff, k=1)
    assert np.count_nonzero(np.unique(smap.index_image)) == len(coords)
    centre = smap.tile_centers() / ff.mpp - (coords[:, ::-1] + (size - 1) / 2)
    assert np.abs(centre).max() <= 1.0
