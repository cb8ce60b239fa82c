"""embed_slide on a real slide: HDF5 layout, resume after cancellation, CLI equals Python API."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model


def test_embed_slide_layout_resume(cmu_svs, tmp_path):
    model = tiny_model("vit")
    kw = {"tile_px": model.spec.tile_px, "mpp": 4.0, "batch_size": 4, "chunk_batches": 1}
    full = embed_slide(cmu_svs, model, tmp_path / "a", **kw)
    with h5py.File(full) as f:
        feats, coords = f["features"][()], f["coords"][()]
        assert f.attrs["model"] == model.spec.name and f.attrs["done"] == len(coords)
    assert feats.shape == (len(coords), model.dim) and coords.shape[1] == 2 and len(coords) > 4
    assert np.isfinite(feats).all() and feats.std(0).max() > 0

    cancel = threading.Event()
    part = embed_slide(cmu_svs, model, tmp_path / "b", cancel=cancel, progress=lambda p: cancel.set(), **kw)
    assert part.suffix == ".partial"
    with h5py.File(part) as f:
        assert 0 < f.attrs["done"] < len(coords)
    resumed = embed_slide(cmu_svs, model, tmp_path / "b", **kw)
    with h5py.File(resumed) as f:
        np.testing.assert_allclose(f["features"][()], feats, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(f["coords"][()], coords)

    # a partial of the same model name with other weights (a retrained checkpoint) is restarted, not resumed
    cancel = threading.Event()
    part = embed_slide(cmu_svs, model, tmp_path / "c", cancel=cancel, progress=lambda p: cancel.set(), **kw)
    with h5py.File(part) as f:
        assert 0 < f.attrs["done"] < len(coords)
    other = tiny_model("vit", seed=1)
    redone = embed_slide(cmu_svs, other, tmp_path / "c", **kw)
    fresh = embed_slide(cmu_svs, other, tmp_path / "d", **kw)
    with h5py.File(redone) as f, h5py.File(fresh) as g:
        assert part.exists() is False and f.attrs["weights"] == other.weights_id != model.weights_id
        np.testing.assert_allclose(f["features"][()], g["features"][()], rtol=1e-5, atol=1e-6)  # no old rows


def test_cli_equals_python_api(cmu_svs, tmp_path):
    from napari_pathdistill.models.checkpoint import save_checkpoint
    from napari_pathdistill.models.factory import load_model

    ckpt = save_checkpoint(tiny_model("vit").module, tiny_model("vit").spec, tmp_path / "ckpt")
    model = load_model(str(ckpt), device="cpu")
    api = embed_slide(cmu_svs, model, tmp_path / "api", mpp=4.0, batch_size=4)
    rc = main(
        [
            "embed",
            str(cmu_svs),
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "cli"),
            "--mpp",
            "4",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--format",
            "h5,plism",
        ]
    )
    assert rc == 0
    with h5py.File(api) as a, h5py.File(tmp_path / "cli" / api.name) as c:
        np.testing.assert_array_equal(a["features"][()], c["features"][()])
        np.testing.assert_array_equal(a["coords"][()], c["coords"][()])
        plism = np.load(next((tmp_path / "cli").glob("*/*/features.npy")))
        np.testing.assert_array_equal(plism[:, 3:], c["features"][()])
        np.testing.assert_array_equal(plism[:, 1:3], c["coords"][()])


def test_a_tile_size_the_vit_cannot_take_is_a_clear_message(cmu_svs, tmp_path) -> None:
    from napari_pathdistill.errors import PathDistillError
    from napari_pathdistill.inference.embed import tile_geometry

    vit = tiny_model("vit")
    with pytest.raises(PathDistillError, match=r"takes 56 px tiles only .* got tile px 112"):
        embed_slide(cmu_svs, vit, tmp_path, tile_px=112, mpp=4.0, min_tissue=0.0)
    assert not list(tmp_path.iterdir())  # nothing written
    assert tile_geometry(vit, None, None) == (56, vit.spec.mpp)
    assert tile_geometry(tiny_model("cnn"), 112, None)[0] == 112  # a CNN takes any size


def test_cancel_between_flushes_keeps_every_embedded_batch(cmu_svs, tmp_path):
    """Cancel after batch 4 of chunks of 3: the partial holds 4 batches (not the 3 of the last chunk), and the
    tile grid's tissue fractions, so a resumed or cached map shows them."""
    from napari_pathdistill.wsi import open_pyramid
    from napari_pathdistill.wsi.tiling import make_tile_grid

    model, cancel, calls = tiny_model("vit"), threading.Event(), []
    embed = model.embed

    def counting(tiles):
        calls.append(len(tiles))
        if len(calls) == 4:
            cancel.set()
        return embed(tiles)

    model.embed = counting
    kw = {"tile_px": model.spec.tile_px, "mpp": 2.0, "min_tissue": 0.1}  # 73 tiles
    part = embed_slide(cmu_svs, model, tmp_path, batch_size=4, chunk_batches=3, cancel=cancel, **kw)
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, **kw)
    assert part.suffix == ".partial" and len(grid) > 16
    with h5py.File(part) as f:
        assert int(f.attrs["done"]) == sum(calls) == 16
        assert np.isfinite(f["features"][:16]).all()
        np.testing.assert_allclose(f["tissue_fraction"][()], grid.tissue_fraction, rtol=1e-6)


def test_a_resumed_run_reports_where_it_starts(cmu_svs, tmp_path):
    """A run killed after its last rows were written but before the rename resumed with no progress at all (the
    CLI's bar stayed empty, the widget showed nothing); every resumed run now reports its starting point first."""
    model = tiny_model("vit")
    kw = {"tile_px": model.spec.tile_px, "mpp": 4.0, "batch_size": 4, "chunk_batches": 1}

    def killed_at_the_end(p):
        if p.done == p.total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_slide(cmu_svs, model, tmp_path, progress=killed_at_the_end, **kw)
    part = next(tmp_path.glob("*.h5.partial"))
    with h5py.File(part) as f:
        n = int(f.attrs["done"])
        assert n == len(f["coords"])
    seen = []
    out = embed_slide(cmu_svs, model, tmp_path, progress=seen.append, **kw)
    assert out.suffix == ".h5" and [(p.done, p.total, p.stage) for p in seen] == [(n, n, "resumed")]
