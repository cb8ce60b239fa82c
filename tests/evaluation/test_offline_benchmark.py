"""The offline stand-in benchmark end to end: real slides -> perturbations -> tiny real ViT -> PLISM metrics."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from napari_pathdistill.evaluation.manifest import read_manifest
from napari_pathdistill.evaluation.offline_benchmark import iter_build_benchmark
from napari_pathdistill.evaluation.plism import run_robustness
from napari_pathdistill.progress import Progress


@pytest.fixture(scope="module")
def tiny_embed():
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=56, depth=2, num_classes=0).eval()

    def embed(tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            return model((x - 0.5) / 0.25).numpy()

    return embed


def test_build_and_evaluate(tmp_path, shared_data, tiny_embed):
    items = list(iter_build_benchmark(tmp_path, tiny_embed, shared_data, tile_px=56, mpp=2.0, max_tiles=8))
    assert all(isinstance(i, Progress) for i in items[:-1])
    entries = read_manifest(items[-1])
    assert len(entries) == 5 * 4 + 3 * 2
    assert {e.tissue for e in entries} == {"cmu-he", "os2-ki67"}
    res = run_robustness(entries, device="cpu")
    assert len(res.rows) == 20 * 19 // 2 + 6 * 5 // 2
    by = {(r["slide_a"], r["slide_b"]): r for r in res.rows}
    real = by[("os2-ki67__original__hamamatsu", "os2-ki67__original__olympus")]
    assert real["group"] == "cross-scanner"
    light = by[("cmu-he__original__aperio", "cmu-he__hed-light__aperio")]
    strong = by[("cmu-he__original__aperio", "cmu-he__hed-strong__aperio")]
    assert light["group"] == "cross-staining"
    assert light["cosine_similarity"] > strong["cosine_similarity"]
    assert set(res.summary) == {"cross-scanner", "cross-staining", "cross-both", "all"}
    # resumable: a second build reuses the feature files
    mtime = entries[0].path.stat().st_mtime_ns
    list(iter_build_benchmark(tmp_path, tiny_embed, shared_data, tile_px=56, mpp=2.0, max_tiles=8))
    assert entries[0].path.stat().st_mtime_ns == mtime


def test_a_rerun_with_another_model_or_tiling_embeds_again(tmp_path, shared_data, tiny_embed):
    """`eval offline-benchmark --model B --out DIR` after a run of model A into DIR scored A's features as B's
    (every existing file was reused); now a file is reused only for the same model stamp and tiles."""
    from napari_pathdistill.evaluation.features_io import load_features

    kw = {"tile_px": 56, "mpp": 2.0, "max_tiles": 4, "tissues": ("cmu-he",)}
    items = list(iter_build_benchmark(tmp_path, tiny_embed, shared_data, stamp={"model": "a"}, **kw))
    path = read_manifest(items[-1])[0].path
    first = load_features(path)[0]

    def other(tiles: np.ndarray) -> np.ndarray:  # another model of the same width
        return tiny_embed(tiles)[:, ::-1].copy()

    list(iter_build_benchmark(tmp_path, other, shared_data, stamp={"model": "b"}, **kw))
    assert np.array_equal(load_features(path)[0], first[:, ::-1])
    mtime = path.stat().st_mtime_ns
    items = list(iter_build_benchmark(tmp_path, other, shared_data, stamp={"model": "b"}, **kw))
    assert path.stat().st_mtime_ns == mtime  # the same model again: reused
    assert any(isinstance(i, Progress) and i.stage.startswith("reused") for i in items)
    list(iter_build_benchmark(tmp_path, other, shared_data, stamp={"model": "b"}, **{**kw, "max_tiles": 6}))
    assert len(load_features(path)[0]) == 6  # more tiles asked for: embedded again, not the 4 of before


def test_os2_matched_tiles_really_correspond(shared_data):
    """After rescaling + registration, each NDPI tile is most similar (pixel NCC) to its VSI counterpart."""
    from napari_pathdistill.evaluation.offline_benchmark import os2_source
    from napari_pathdistill.evaluation.perturbations import ncc

    src = os2_source(shared_data, tile_px=112, mpp=1.0, max_tiles=16)
    a, b = src.tiles["hamamatsu"].mean(-1), src.tiles["olympus"].mean(-1)
    m = np.array([[ncc(x, y) for y in b] for x in a])
    assert len(a) == 16
    assert np.diag(m).mean() > 0.85
    assert (m.argmax(1) == np.arange(len(a))).all()


def test_features_of_slides_built_by_an_older_version_are_embedded_again(tmp_path, shared_data, tiny_embed):
    """The HED stain versions changed (unclamped concentrations): features embedded from the old slides (no
    ``conditions`` attribute) must not be reused as this version's."""
    import h5py

    from napari_pathdistill.evaluation.offline_benchmark import CONDITIONS_VERSION

    kw = {"tile_px": 56, "mpp": 2.0, "max_tiles": 4, "tissues": ("cmu-he",), "stamp": {"model": "a"}}
    items = list(iter_build_benchmark(tmp_path, tiny_embed, shared_data, **kw))
    entry = read_manifest(items[-1])[0]
    with h5py.File(entry.path, "r+") as f:
        assert f.attrs["conditions"] == CONDITIONS_VERSION
        del f.attrs["conditions"]  # as version 1 wrote it
    stages = [
        i.stage
        for i in iter_build_benchmark(tmp_path, tiny_embed, shared_data, **kw)
        if isinstance(i, Progress)
    ]
    assert f"embedded {entry.slide}" in stages and f"reused {read_manifest(items[-1])[1].slide}" in stages
