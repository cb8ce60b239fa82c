"""``pathdistill embed --format h5,clam`` on a real slide: CLAM's ``h5_files/<slide>.h5`` and ``pt_files/<slide>.pt``
(as mahmoodlab/CLAM's ``extract_features_fp.py`` writes them and ``Generic_MIL_Dataset`` loads them) equal our
HDF5, are kept on a rerun while they are its copies, are never written from an interrupted slide, and our own
feature-file reader opens the CLAM HDF5 on its slide."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.clam_output import write_clam
from napari_pathdistill.inference.cohort import CohortOptions, embed_one

SLIDE_ID = "CMU-1-Small-Region"


@pytest.fixture(scope="module")
def model(saved_tiny_vit):
    return saved_tiny_vit


def _opts(out, **kw) -> CohortOptions:
    return CohortOptions(
        model="unused", out_dir=str(out), mpp=4.0, min_tissue=0.0, formats=("h5", "clam"), **kw
    )


def _identity(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _ours(h5: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with h5py.File(h5, "r") as f:
        return f["features"][()], f["coords"][()], dict(f.attrs)


def _assert_copies_of(h5: Path, out: Path) -> None:
    """CLAM's two files under ``out`` hold ``h5``'s features and coords, in its row order."""
    feats, coords, attrs = _ours(h5)
    with h5py.File(out / "h5_files" / f"{SLIDE_ID}.h5", "r") as c:
        assert sorted(c) == ["coords", "features"]
        assert c["features"].dtype == np.float32 and c["coords"].dtype == np.int32  # as extract_features_fp
        np.testing.assert_array_equal(c["features"][()], feats)
        np.testing.assert_array_equal(c["coords"][()], coords)
        ca = dict(c["coords"].attrs)  # create_patches_fp's attrs: Whole_Slide_Bag_FP reads level and size
        assert ca["patch_size"] == attrs["patch_size_level0"] and ca["patch_level"] == 0
        assert list(ca["downsample"]) == [1.0, 1.0] and ca["name"] == SLIDE_ID
        assert c.attrs["model"] == attrs["model"] and c.attrs["slide_path"] == attrs["slide_path"]
    # Generic_MIL_Dataset: torch.load(os.path.join(data_dir, 'pt_files', f'{slide_id}.pt')), here without pickle
    tensor = torch.load(out / "pt_files" / f"{SLIDE_ID}.pt", weights_only=True)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), feats)


def test_the_clam_layout_holds_the_hdf5_s_features(cmu_svs, model, tmp_path) -> None:
    done = embed_one(cmu_svs, model, _opts(tmp_path))
    assert done.ok and not done.skipped, done.error
    h5 = tmp_path / f"{SLIDE_ID}.h5"
    assert done.outputs == tuple(
        map(str, (h5, tmp_path / "h5_files" / f"{SLIDE_ID}.h5", tmp_path / "pt_files" / f"{SLIDE_ID}.pt"))
    )
    assert done.tiles == 24
    _assert_copies_of(h5, tmp_path)


def test_our_feature_reader_opens_the_clam_hdf5_on_its_slide(cmu_svs, model, tmp_path) -> None:
    from napari_pathdistill._feature_reader import get_feature_reader
    from napari_pathdistill.inference.feature_files import read_feature_file
    from napari_pathdistill.inference.feature_match import slide_mismatch
    from napari_pathdistill.wsi import open_pyramid

    _, clam_h5, _ = embed_one(cmu_svs, model, _opts(tmp_path)).outputs
    ours, ff = read_feature_file(tmp_path / f"{SLIDE_ID}.h5"), read_feature_file(clam_h5)
    assert get_feature_reader(clam_h5) is not None  # napari offers our reader for the dropped file
    assert ff.source == "clam" and ff.slide_path == str(cmu_svs.resolve()) and ff.model == ours.model
    np.testing.assert_array_equal(ff.features, ours.features)
    np.testing.assert_array_equal(ff.coords, ours.coords)
    assert ff.patch_size_level0 == ours.patch_size_level0 and ff.step == pytest.approx(ours.step)
    assert ff.mpp == pytest.approx(ours.mpp, rel=1e-3)  # level0_mpp: placed in um also without its slide
    with open_pyramid(cmu_svs) as pyr:
        assert slide_mismatch(ff, cmu_svs.name, pyr.dimensions, pyr.mpp[1]) is None


def test_a_rerun_keeps_the_clam_copies_and_rewrites_others(cmu_svs, model, tmp_path) -> None:
    """A kept slide's copies are not written again (a 1,000-slide rerun would rewrite every finished one); a
    copy that is not the HDF5's (other rows, another shape, older than a recomputed HDF5) is."""
    first = embed_one(cmu_svs, model, _opts(tmp_path))
    h5, clam_h5, pt = first.outputs
    before = _identity(clam_h5), _identity(pt)
    again = embed_one(cmu_svs, model, _opts(tmp_path))
    assert again.ok and again.skipped and again.outputs == first.outputs
    assert (_identity(clam_h5), _identity(pt)) == before  # an atomic rewrite would be a new file
    feats, _, _ = _ours(Path(h5))
    torch.save(torch.from_numpy(feats[:-1]), pt)  # another shape (an older embedding's copy), newer than h5
    with h5py.File(clam_h5, "a") as c:
        c["features"][-1] += 1.0  # same shape, another last row
    kept = embed_one(cmu_svs, model, _opts(tmp_path))
    assert kept.skipped and _identity(clam_h5) != before[0] and _identity(pt) != before[1]
    _assert_copies_of(Path(h5), tmp_path)
    before = _identity(clam_h5), _identity(pt)
    redone = embed_one(cmu_svs, model, _opts(tmp_path, overwrite=True))  # a newer HDF5: copies follow it
    assert redone.ok and not redone.skipped
    assert _identity(clam_h5) != before[0] and _identity(pt) != before[1]
    _assert_copies_of(Path(h5), tmp_path)


def test_an_interrupted_slide_gets_no_clam_output(cmu_svs, model, tmp_path) -> None:
    """Ctrl-C after the first written chunk (16 of 24 tiles): the partial HDF5 stays for the rerun, and no CLAM
    file exists (``extract_features_fp`` would take a slide with a ``.pt`` as done); the rerun resumes the
    slide and then writes them."""

    def ctrl_c(p) -> None:
        if p.stage == "embedding":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_one(cmu_svs, model, _opts(tmp_path, batch_size=4), progress=ctrl_c)
    partial = tmp_path / f"{SLIDE_ID}.h5.partial"
    assert partial.is_file() and not (tmp_path / f"{SLIDE_ID}.h5").exists()
    assert not (tmp_path / "h5_files").exists() and not (tmp_path / "pt_files").exists()
    with pytest.raises(PathDistillError, match=r"is not a complete embedding \(16 of 24 tiles\)"):
        write_clam(partial, tmp_path)
    assert not (tmp_path / "h5_files").exists() and not (tmp_path / "pt_files").exists()
    stages: list[str] = []
    resumed = embed_one(
        cmu_svs, model, _opts(tmp_path, batch_size=4), progress=lambda p: stages.append(p.stage)
    )
    assert resumed.ok and stages[0] == "resumed", resumed.error
    _assert_copies_of(tmp_path / f"{SLIDE_ID}.h5", tmp_path)
