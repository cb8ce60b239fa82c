"""``iter_plism_extract`` / ``pathdistill eval plism-extract`` on small HDF5 files in PLISM's layout.

PLISM's files (as plismbench reads them, ``engine/extract/extract_from_h5.py::H5Dataset``): one
``<stain>_<scanner>_to_GMH_S60.tif.h5`` per slide, one dataset per tile named ``<prefix>_<i>_<j>_<k>``
holding the (H, W, 3) uint8 tile. plismbench's features.npy: the tile id's three integers, then the
features, rows sorted by columns 1 and 2 (``engine/extract/utils.py``).
"""

from __future__ import annotations

import json
import threading

import h5py
import numpy as np
import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.evaluation.features_io import discover_plism
from napari_pathdistill.evaluation.plism_extract import iter_plism_extract
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress, drain

TILE_IDS = ["tile_0_448_0", "tile_0_0_224", "tile_0_224_0", "tile_0_0_0", "tile_0_224_224", "tile_0_448_224"]


def write_plism_h5(root, stains=("GM", "HR"), scanners=("AT2", "S60"), px=56, seed=0):
    """Small PLISM-layout tile files; the same tissue (tiles) per slide, shifted in colour per stain/scanner."""
    rng = np.random.default_rng(seed)
    tissue = rng.integers(0, 200, size=(len(TILE_IDS), px, px, 3))
    root.mkdir(parents=True, exist_ok=True)
    for i, stain in enumerate(stains):
        for j, scanner in enumerate(scanners):
            with h5py.File(root / f"{stain}_{scanner}_to_GMH_S60.tif.h5", "w") as f:
                for tile_id, tile in zip(TILE_IDS, tissue):
                    f[tile_id] = np.clip(tile + 20 * i + 7 * j, 0, 255).astype(np.uint8)
    return tissue


def test_features_in_plismbench_layout_sorted_and_equal_to_the_model(tmp_path):
    write_plism_h5(tmp_path / "plism")
    model = tiny_model("vit", tile_px=56)
    items = list(
        iter_plism_extract(tmp_path / "plism", model, tmp_path / "out", extractor="tiny", batch_size=4)
    )
    paths = items[-1]
    assert len(paths) == 4 and any(isinstance(i, Progress) and i.stage.endswith(".h5") for i in items)
    arr = np.load(tmp_path / "out" / "tiny" / "GM_AT2_to_GMH_S60.tif" / "features.npy")
    assert arr.dtype == np.float32 and arr.shape == (6, 3 + model.dim)
    assert arr[:, 1:3].tolist() == [[0, 0], [0, 224], [224, 0], [224, 224], [448, 0], [448, 224]]
    with h5py.File(tmp_path / "plism" / "GM_AT2_to_GMH_S60.tif.h5") as f:
        tile = f["tile_0_224_224"][()]
    np.testing.assert_allclose(arr[3, 3:], model.embed(tile[None])[0], atol=1e-5)
    assert discover_plism(tmp_path / "out" / "tiny")[0].slide == "GM_AT2_to_GMH_S60.tif"


def test_resume_skips_written_slides_and_cancel_keeps_them(tmp_path):
    write_plism_h5(tmp_path / "plism")
    model = tiny_model("vit", tile_px=56)
    cancel = threading.Event()
    gen = iter_plism_extract(
        tmp_path / "plism", model, tmp_path / "out", extractor="m", batch_size=2, cancel=cancel
    )
    with pytest.raises(Cancelled):
        for item in gen:
            if isinstance(item, Progress) and item.stage == "slide 2/4":
                cancel.set()
    written = sorted((tmp_path / "out" / "m").glob("*/features.npy"))
    assert len(written) == 1
    mtime = written[0].stat().st_mtime_ns
    drain(iter_plism_extract(tmp_path / "plism", model, tmp_path / "out", extractor="m"))
    assert len(list((tmp_path / "out" / "m").glob("*/features.npy"))) == 4
    assert written[0].stat().st_mtime_ns == mtime  # resumed: the finished slide was not redone


def test_another_checkpoint_of_the_same_name_is_extracted_again(tmp_path):
    """Two checkpoints of one model name (a student's epochs) into one --export-dir: the second run skipped every
    slide and its robustness was the first checkpoint's. A slide is now skipped only for the same weights."""
    write_plism_h5(tmp_path / "plism", stains=("GM",), scanners=("AT2", "S60"))
    first, second = tiny_model("vit", tile_px=56, seed=0), tiny_model("vit", tile_px=56, seed=1)
    assert first.spec.name == second.spec.name and first.weights_id != second.weights_id
    out = tmp_path / "out" / "m" / "GM_AT2_to_GMH_S60.tif" / "features.npy"
    drain(iter_plism_extract(tmp_path / "plism", first, tmp_path / "out", extractor="m"))
    mtime = out.stat().st_mtime_ns
    drain(iter_plism_extract(tmp_path / "plism", first, tmp_path / "out", extractor="m"))
    assert out.stat().st_mtime_ns == mtime  # the same weights: resumed
    drain(iter_plism_extract(tmp_path / "plism", second, tmp_path / "out", extractor="m"))
    with h5py.File(tmp_path / "plism" / "GM_AT2_to_GMH_S60.tif.h5") as f:
        tile = f["tile_0_0_0"][()]
    np.testing.assert_allclose(np.load(out)[0, 3:], second.embed(tile[None])[0], atol=1e-5)
    assert json.loads(out.with_name("pathdistill.json").read_text())["weights"] == second.weights_id


def test_a_run_killed_between_features_and_stamp_is_not_kept_for_another_model(tmp_path, monkeypatch):
    """The stamp was written after features.npy: killed between the two, the file had no stamp, so the next
    run, with another checkpoint of the name, kept it as its own. A pending stamp now goes first."""
    import napari_pathdistill.evaluation.plism_extract as pe

    write_plism_h5(tmp_path / "plism", stains=("GM",), scanners=("AT2",))
    first, second = tiny_model("vit", tile_px=56, seed=0), tiny_model("vit", tile_px=56, seed=1)
    out = tmp_path / "out" / "m" / "GM_AT2_to_GMH_S60.tif" / "features.npy"
    real = pe.atomic_write_text

    def killed_before_the_final_stamp(path, text):
        if '"pending"' not in text:
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(pe, "atomic_write_text", killed_before_the_final_stamp)
    with pytest.raises(KeyboardInterrupt):
        drain(iter_plism_extract(tmp_path / "plism", first, tmp_path / "out", extractor="m"))
    assert out.is_file()  # first's features, written whole, not yet stamped as done
    monkeypatch.setattr(pe, "atomic_write_text", real)
    drain(iter_plism_extract(tmp_path / "plism", second, tmp_path / "out", extractor="m"))
    with h5py.File(tmp_path / "plism" / "GM_AT2_to_GMH_S60.tif.h5") as f:
        tile = f["tile_0_0_0"][()]
    np.testing.assert_allclose(np.load(out)[0, 3:], second.embed(tile[None])[0], atol=1e-5)
    assert json.loads(out.with_name("pathdistill.json").read_text()) == {
        "model": second.spec.name, "weights": second.weights_id, "embedding_dtype": "float32"}  # fmt: skip


def test_features_of_another_autocast_dtype_are_extracted_again(tmp_path):
    """The record held model and weights only: a CUDA run's bfloat16 features resumed a CPU run's float32 ones
    (found reviewing the pair store's same fix)."""
    import torch

    write_plism_h5(tmp_path / "plism", stains=("GM",), scanners=("AT2",))
    fp32, bf16 = tiny_model("vit", tile_px=56), tiny_model("vit", tile_px=56)
    bf16.amp_dtype = torch.bfloat16  # as on CUDA (autocast on the CPU here)
    out = tmp_path / "out" / "m" / "GM_AT2_to_GMH_S60.tif" / "features.npy"
    drain(iter_plism_extract(tmp_path / "plism", fp32, tmp_path / "out", extractor="m"))
    mtime = out.stat().st_mtime_ns
    drain(iter_plism_extract(tmp_path / "plism", bf16, tmp_path / "out", extractor="m"))
    assert out.stat().st_mtime_ns != mtime
    assert json.loads(out.with_name("pathdistill.json").read_text())["embedding_dtype"] == "bfloat16"


def test_bad_tile_files_are_clear_errors(tmp_path):
    model = tiny_model("vit", tile_px=56)
    with pytest.raises(EvaluationError, match="no PLISM tile files"):
        drain(iter_plism_extract(tmp_path, model, tmp_path / "out"))
    with h5py.File(tmp_path / "GM_AT2_to_GMH_S60.tif.h5", "w") as f:
        f["tile_1_2"] = np.zeros((56, 56, 3), np.uint8)
    with pytest.raises(EvaluationError, match="three integers"):
        drain(iter_plism_extract(tmp_path, model, tmp_path / "out"))
    with h5py.File(tmp_path / "GM_AT2_to_GMH_S60.tif.h5", "w") as f:
        f["tile_a_b_c"] = np.zeros((56, 56, 3), np.uint8)
    with pytest.raises(EvaluationError, match="<prefix>_<int>_<int>_<int>"):
        drain(iter_plism_extract(tmp_path, model, tmp_path / "out"))


def test_a_truncated_file_or_a_ragged_tile_is_named(tmp_path):
    """A truncated download gave h5py's bare "Unable to synchronously open file (truncated file ...)" naming no
    file, and one tile of another size a numpy traceback ("all input arrays must have the same shape")."""
    write_plism_h5(tmp_path / "plism", stains=("GM",), scanners=("AT2", "S60"))
    good = tmp_path / "plism" / "GM_S60_to_GMH_S60.tif.h5"
    model = tiny_model("vit", tile_px=56)
    with h5py.File(tmp_path / "plism" / "GM_AT2_to_GMH_S60.tif.h5", "a") as f:
        del f["tile_0_224_0"]
        f["tile_0_224_0"] = np.zeros((56, 40, 3), np.uint8)  # an edge crop of another width
    with pytest.raises(
        EvaluationError, match=r"GM_AT2_to_GMH_S60.tif.h5: tile 'tile_0_224_0' is \(56, 40, 3\)"
    ):
        drain(iter_plism_extract(tmp_path / "plism", model, tmp_path / "out", batch_size=8))
    (tmp_path / "plism" / "GM_AT2_to_GMH_S60.tif.h5").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(
        EvaluationError, match=r"GM_AT2_to_GMH_S60.tif.h5: not a readable HDF5 file .*re-download"
    ):
        drain(iter_plism_extract(tmp_path / "plism", model, tmp_path / "out"))


def test_cli_plism_extract_then_plismbench_evaluate(tmp_path, capsys):
    write_plism_h5(tmp_path / "plism", stains=("GM", "HR"), scanners=("AT2", "S60", "SQ"))
    m = tiny_model("vit", tile_px=56)
    ckpt = save_checkpoint(m.module, m.spec, tmp_path / "ckpt")
    rc = main(["eval", "plism-extract", "--plism-dir", str(tmp_path / "plism"), "--model", str(ckpt),
               "--export-dir", str(tmp_path / "features"), "--extractor", "tiny", "--batch-size", "4",
               "--device", "cpu"])  # fmt: skip
    assert rc == 0 and "wrote 6 features.npy under" in capsys.readouterr().out
    args = ["eval", "plism-extract", "--plism-dir", str(tmp_path / "plism"), "--model", str(ckpt),
            "--export-dir", str(tmp_path / "features"), "--extractor", "tiny", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0  # a rerun keeps every slide: it says so instead of "wrote 6"
    assert "wrote 0 features.npy, kept 6 already extracted by this model under" in capsys.readouterr().out
    rc = main(["eval", "robustness", "--features-dir", str(tmp_path / "features"), "--extractor", "tiny",
               "--metrics-dir", str(tmp_path / "metrics"), "--top-k", "1", "3", "5", "10", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "metrics" / "6_tiles" / "tiny" / "summary.json").read_text())
    assert summary["n_pairs"] == 15 and summary["leaderboard"] is not None
