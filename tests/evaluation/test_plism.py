"""Manifest grouping, pair lists, aggregation and the HDF5 / plismbench feature layouts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import discover_plism, load_features, match_by_coords
from napari_pathdistill.evaluation.manifest import (
    SlideEntry,
    aggregate,
    leaderboard_metric,
    pair_group,
    read_manifest,
    read_pairs,
    write_manifest,
)
from napari_pathdistill.evaluation.plism import run_robustness
from napari_pathdistill.metrics.pairs import pair_metrics


def test_read_pairs_both_column_namings_and_errors(tmp_path):
    (tmp_path / "a.csv").write_text("slide_a,slide_b\nx.svs,/abs/y.svs\n")
    assert read_pairs(tmp_path / "a.csv") == [(tmp_path / "x.svs", Path("/abs/y.svs"))]  # absolute paths stay
    (tmp_path / "birl.csv").write_text("Target image,Source image\nt.jpg,s.jpg\n")
    assert read_pairs(tmp_path / "birl.csv") == [(tmp_path / "t.jpg", tmp_path / "s.jpg")]
    (tmp_path / "bad.csv").write_text("left,right\nx,y\n")
    with pytest.raises(EvaluationError, match="no slide_a,slide_b columns"):
        read_pairs(tmp_path / "bad.csv")
    with pytest.raises(EvaluationError, match="not found"):
        read_pairs(tmp_path / "missing.csv")


def test_pair_groups_follow_plismbench():
    e = SlideEntry
    assert pair_group(e("a", "GM", "AT2"), e("b", "GM", "S60")) == "cross-scanner"
    assert pair_group(e("a", "GM", "AT2"), e("b", "HR", "AT2")) == "cross-staining"
    assert pair_group(e("a", "GM", "AT2"), e("b", "HR", "S60")) == "cross-both"
    assert pair_group(e("a", "GM", "AT2"), e("b", "GM", "AT2")) is None


def test_aggregate_median_iqr_and_leaderboard():
    rows = [
        {"group": g, "m": v}
        for g, v in [
            ("cross-scanner", 1.0),
            ("cross-scanner", 2.0),
            ("cross-scanner", 4.0),
            ("cross-staining", 10.0),
            ("cross-both", 0.0),
        ]
    ]
    agg = aggregate(rows, ["m"])
    assert agg["cross-scanner"]["m"]["median"] == 2.0
    assert agg["cross-scanner"]["m"]["iqr"] == pytest.approx(3.0 - 1.5)  # q75=3, q25=1.5 (linear)
    assert agg["all"]["m"]["median"] == 2.0 and agg["all"]["m"]["n_pairs"] == 5
    with pytest.raises(EvaluationError, match="cosine_similarity over all pairs"):
        leaderboard_metric(agg)  # the leaderboard's metrics are not in this summary


def _slides(tmp_path, rng, n=30, d=12):
    base = rng.normal(size=(n, d)).astype(np.float32)
    coords = np.stack(np.meshgrid(np.arange(5), np.arange(6)), -1).reshape(-1, 2) * 224
    entries = []
    for stain in ("GM", "HR"):
        for scanner in ("AT2", "S60"):
            shift = (stain == "HR") * 1.0 + (scanner == "S60") * 0.3
            feats = base + shift * rng.normal(size=base.shape).astype(np.float32)
            path = tmp_path / f"{stain}_{scanner}.h5"
            with h5py.File(path, "w") as f:
                f["features"], f["coords"] = feats, coords
            entries.append(SlideEntry(f"{stain}_{scanner}", stain, scanner, path))
    return entries


def test_run_robustness_over_manifest(tmp_path):
    entries = _slides(tmp_path, np.random.default_rng(0))
    manifest = write_manifest(entries, tmp_path / "manifest.csv")
    back = read_manifest(manifest)
    assert [e.slide for e in back] == [e.slide for e in entries]
    assert back[0].path.resolve() == entries[0].path.resolve()
    res = run_robustness(back, device="cpu")
    assert len(res.rows) == 6
    assert {r["group"] for r in res.rows} == {"cross-scanner", "cross-staining", "cross-both"}
    # each row equals pair_metrics on the two files
    r = res.rows[0]
    fa, fb = load_features(entries[0].path)[0], load_features(entries[1].path)[0]
    assert r["cosine_similarity"] == pytest.approx(pair_metrics(fa, fb, device="cpu").cosine)
    # scanner shifts are smaller than stain shifts -> better cross-scanner retrieval
    s = res.summary
    assert s["cross-scanner"]["top_1_accuracy"]["median"] > s["cross-both"]["top_1_accuracy"]["median"]
    csv_path, json_path = res.save(tmp_path / "out")
    assert csv_path.read_text().count("\n") == 7 and json_path.is_file()


def test_plismbench_npy_layout(tmp_path):
    rng = np.random.default_rng(1)
    coords = np.c_[np.zeros(20), rng.integers(0, 1000, (20, 2))]
    for name in ("GM_AT2_to_GMH_S60.tif", "HR_S60_to_GMH_S60.tif"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "features.npy", np.c_[coords, rng.normal(size=(20, 7))].astype(np.float32))
    entries = discover_plism(tmp_path)
    assert [(e.stain, e.scanner) for e in entries] == [("GM", "AT2"), ("HR", "S60")]
    feats, c = load_features(entries[0].path)
    assert feats.shape == (20, 7) and c.shape == (20, 3)


def test_match_by_coords():
    a = np.array([[0, 0], [224, 0], [448, 0]])
    b = np.array([[448, 0], [0, 0], [0, 224]])
    ia, ib = match_by_coords(a, b)
    assert (a[ia] == b[ib]).all() and len(ia) == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(EvaluationError, match="not found"):
        load_features(tmp_path / "nope.h5")
    (tmp_path / "m.csv").write_text("slide,colour\na,b\n")
    with pytest.raises(EvaluationError, match="needs columns"):
        read_manifest(tmp_path / "m.csv")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(EvaluationError, match="HDF5"):
        load_features(bad)


def test_rows_matched_by_coordinates_when_orders_differ(tmp_path):
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(10, 6)).astype(np.float32)
    coords = np.c_[np.arange(10) * 224, np.zeros(10)].astype(np.int64)
    perm = rng.permutation(10)
    entries = []
    for name, order, stain in (("a", np.arange(10), "he"), ("b", perm, "ihc")):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["features"], f["coords"] = feats[order], coords[order]
        entries.append(SlideEntry(name, stain, "s1", tmp_path / f"{name}.h5"))
    res = run_robustness(entries, device="cpu")
    assert res.rows[0]["cosine_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert res.rows[0]["top_1_accuracy"] == 1.0


def test_manifest_pairs_scans_at_different_um_px_by_grid_cell(tmp_path, os2_pair):
    """The real OS-2 scanner pair (0.227 vs 0.346 um/px, crops of one field) embedded by ``embed_slide``: the same
    tiles have different level-0 coords (tile steps of 123 vs 81 px for 28 um tiles), so matching by equal coords
    found none ("share fewer than 2 tile coordinates"); they now match by grid cell of equal um size."""
    from napari_pathdistill.evaluation.features_io import tile_grid
    from napari_pathdistill.inference.embed import embed_slide
    from napari_pathdistill.models.testing import tiny_model

    model = tiny_model("vit")  # 56 px at 0.5 um/px: 28 um tiles, ~300 per field
    paths = [embed_slide(p, model, tmp_path / "feats", num_workers=0) for p in os2_pair]
    coords = [load_features(p)[1] for p in paths]
    assert len(match_by_coords(*coords)[0]) < 2  # level-0 coords: nothing in common
    (cells_a, um_a), (cells_b, um_b) = tile_grid(paths[0]), tile_grid(paths[1])  # type: ignore[misc]
    assert um_a == pytest.approx(28.0, rel=0.01) and um_b == pytest.approx(28.0, rel=0.01)
    entries = [
        SlideEntry("os2_ndpi", "ki67", "ndpi", paths[0]),
        SlideEntry("os2_vsi", "ki67", "vsi", paths[1]),
    ]
    res = run_robustness(entries, device="cpu")
    [row] = res.rows
    n = len(match_by_coords(cells_a, cells_b)[0])
    assert row["group"] == "cross-scanner" and row["n_tiles"] == n > 0.8 * min(len(cells_a), len(cells_b))
    ia, ib = match_by_coords(cells_a, cells_b)
    fa, fb = load_features(paths[0])[0][ia], load_features(paths[1])[0][ib]
    assert row["cosine_similarity"] == pytest.approx(pair_metrics(fa, fb, device="cpu").cosine, abs=1e-6)
    mismatched = tmp_path / "other_size.h5"  # tiles of another um size never match by cell
    mismatched.write_bytes(paths[1].read_bytes())
    with h5py.File(mismatched, "a") as f:
        f.attrs["mpp"] = float(f.attrs["mpp"]) * 2
    with pytest.raises(EvaluationError, match="share fewer than 2"):
        run_robustness([entries[0], SlideEntry("other", "ki67", "vsi", mismatched)], device="cpu")


def test_slides_of_two_models_are_refused_before_any_pair(tmp_path):
    """A manifest whose slides were embedded by two checkpoints of one architecture (same width) was scored as
    if one model had embedded them: cross-model cosines read as a robustness failure. Two widths failed at the
    first pair of them with a shape error naming neither slide."""
    entries = _slides(tmp_path, np.random.default_rng(0))
    for e in entries:  # as `pathdistill embed` writes them
        with h5py.File(e.path, "a") as f:
            f.attrs["model"], f.attrs["weights"] = "h0-mini", "aaaa"
    run_robustness(entries, device="cpu")  # one model: fine
    with h5py.File(entries[2].path, "a") as f:
        f.attrs["weights"] = "bbbb"  # HR_AT2 re-embedded with a new checkpoint
    with pytest.raises(EvaluationError, match=r"different models .*'HR_AT2'"):
        run_robustness(entries, device="cpu")
    npy = tmp_path / "plism"
    for i, name in enumerate(("GM_AT2_to_GMH_S60.tif", "GM_S60_to_GMH_S60.tif", "HR_AT2_to_GMH_S60.tif")):
        (npy / name).mkdir(parents=True)
        d = 7 if i == 2 else 12  # the last slide from another model's export
        np.save(npy / name / "features.npy", np.c_[np.zeros((20, 3)), np.ones((20, d))].astype(np.float32))
    with pytest.raises(
        EvaluationError, match=r"feature widths .*D=7: 1 slide\(s\), e.g. 'HR_AT2_to_GMH_S60.tif'"
    ):
        run_robustness(discover_plism(npy), device="cpu")


def test_missing_features_files_are_all_named_before_any_pair(tmp_path):
    """A manifest row whose features file is missing stopped the run at that slide's first pair (after every pair
    before it), naming only that file; now all missing slides are named and nothing is computed."""
    from napari_pathdistill.evaluation.plismbench_files import PairStore

    entries = _slides(tmp_path, np.random.default_rng(0))
    entries[2].path.unlink()
    entries[3].path.unlink()
    store = PairStore(tmp_path / "out")
    with pytest.raises(EvaluationError, match=r"not found for 2 of 4 slides \('HR_AT2': .*'HR_S60': "):
        run_robustness(entries, device="cpu", store=store)
    assert not list(store.dir.iterdir())  # no pair was scored first
