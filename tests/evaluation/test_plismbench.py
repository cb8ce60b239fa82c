"""plismbench-exact robustness: A.2 reference on PLISM-layout cohorts, leaderboard, tile subsets, output files.

The files are parsed back as plismbench parses them: ``read_metrics`` is ``pd.read_csv`` (utils/metrics.py
and README "You can generate those results from a metrics.csv"), ``plismbench_leaderboard`` follows
``utils/metrics.py::get_results`` / ``format_results`` (split the cell on " ; ", take the median part, regex
``([0-9.]+)\\s?\\(([^)]+)\\)``) and the README's leaderboard definition (mean of the median cosine over all
pairs and the median top-10 accuracy over inter-scanner, inter-staining and "inter-scanner, inter-staining").
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from metrics._a2_reference import plismbench_float16, reference_a2
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import discover_plism
from napari_pathdistill.evaluation.manifest import aggregate, leaderboard_metric, leaderboard_terms
from napari_pathdistill.evaluation.plism import run_robustness
from napari_pathdistill.evaluation.plismbench_files import results_cell, tile_subset
from napari_pathdistill.evaluation.plismbench_run import iter_plismbench_evaluate
from napari_pathdistill.inference.embed import write_plism
from napari_pathdistill.progress import drain

STAININGS = ["GIV", "GIVH", "GM", "GMH", "GV", "GVH", "HR", "HRH", "KR", "KRH", "LM", "LMH", "MY"]
SCANNERS = ["AT2", "GT450", "P", "S210", "S360", "S60", "SQ"]  # plismbench engine/evaluate.py


def write_cohort(root: Path, stains, scanners, n: int = 24, d: int = 12, seed: int = 0) -> Path:
    """plismbench features: ``root/<stain>_<scanner>_to_GMH_S60.tif/features.npy``, (n, 3 + d) float32."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    coords = np.c_[np.zeros(n), np.repeat(np.arange(n // 4), 4) * 224, np.tile(np.arange(4), n // 4) * 224]
    stain_fx = {s: 0.9 * rng.normal(size=d) for s in stains}
    scanner_fx = {s: 0.4 * rng.normal(size=d) for s in scanners}
    for stain, scanner in itertools.product(stains, scanners):
        feats = base + stain_fx[stain] + scanner_fx[scanner] + 0.5 * rng.normal(size=base.shape)
        folder = root / f"{stain}_{scanner}_to_GMH_S60.tif"
        folder.mkdir(parents=True)
        np.save(folder / "features.npy", np.c_[coords, feats].astype(np.float32))
    return root


def reference_rows(root: Path, ks=(1, 3, 5, 10), half: bool = False) -> dict[tuple[str, str], tuple]:
    """Every pair of the cohort through the A.2 reference, keyed by the two slide names."""
    slides = sorted(p.parent.name for p in root.glob("*/features.npy"))
    feats = {s: np.load(root / s / "features.npy")[:, 3:] for s in slides}
    return {(a, b): reference_a2(feats[a], feats[b], ks, half) for a, b in itertools.combinations(slides, 2)}


def reference_leaderboard(ref: dict) -> float:
    """README definition, each median rounded to 3 decimals as results.csv holds it."""

    def med(select, metric):
        return float(pd.Series([np.median([metric(v) for k, v in ref.items() if select(*k)])]).round(3)[0])

    stain, scanner = (lambda s: s.split("_")[0]), (lambda s: s.split("_")[1])
    return float(
        np.mean(
            [
                med(lambda a, b: True, lambda v: v[0]),
                med(lambda a, b: stain(a) == stain(b), lambda v: v[1][10]),
                med(lambda a, b: scanner(a) == scanner(b), lambda v: v[1][10]),
                med(lambda a, b: stain(a) != stain(b) and scanner(a) != scanner(b), lambda v: v[1][10]),
            ]
        )
    )


def test_nine_slide_cohort_equals_the_a2_reference(tmp_path):
    root = write_cohort(tmp_path / "feats", ["GM", "HR", "KR"], ["AT2", "S60", "SQ"])
    res = run_robustness(discover_plism(root), device="cpu")
    ref = reference_rows(root)
    assert len(res.rows) == len(ref) == 36
    for row in res.rows:
        cos, topk = ref[(row["slide_a"], row["slide_b"])]
        assert row["cosine_similarity"] == pytest.approx(cos, abs=1e-6)
        assert [row[f"top_{k}_accuracy"] for k in (1, 3, 5, 10)] == pytest.approx(
            list(topk.values()), abs=1e-12
        )
    assert res.leaderboard == pytest.approx(reference_leaderboard(ref), abs=1e-12)
    assert res.precision == "float32"


def test_nine_slide_cohort_mixed_precision_is_plismbench_float16(tmp_path):
    root = write_cohort(tmp_path / "feats", ["GM", "HR", "KR"], ["AT2", "S60", "SQ"], seed=1)
    res = run_robustness(discover_plism(root), device="cpu", mixed_precision=True)
    slides = sorted(p.parent.name for p in root.glob("*/features.npy"))
    feats = {s: np.load(root / s / "features.npy")[:, 3:] for s in slides}
    for row in res.rows:
        cos, topk = plismbench_float16(feats[row["slide_a"]], feats[row["slide_b"]])
        assert row["cosine_similarity"] == cos
        assert [row[f"top_{k}_accuracy"] for k in (1, 3, 5, 10)] == topk
    assert res.precision.startswith("mixed")
    assert json.loads(Path(res.save(tmp_path / "o")[1]).read_text())["precision"].startswith("mixed")


def test_full_plism_naming_91_slides_4095_pairs(tmp_path):
    root = write_cohort(tmp_path / "feats", STAININGS, SCANNERS, n=12, d=8, seed=2)
    entries = discover_plism(root)
    assert len(entries) == 91
    res = run_robustness(entries, device="cpu", block=64)
    groups = [r["group"] for r in res.rows]
    # plismbench: 13 stainings x C(7, 2) inter-scanner, 7 x C(13, 2) inter-staining, the rest both
    assert len(groups) == 4095 and groups.count("cross-scanner") == 13 * 21
    assert groups.count("cross-staining") == 7 * 78 and groups.count("cross-both") == 4095 - 273 - 546
    ref = reference_rows(root)
    worst = max(abs(r["cosine_similarity"] - ref[(r["slide_a"], r["slide_b"])][0]) for r in res.rows)
    assert worst < 1e-6
    assert res.leaderboard == pytest.approx(reference_leaderboard(ref), abs=1e-12)


def test_leaderboard_hand_computed_and_refused_when_a_group_is_empty():
    rows = [
        {"group": "cross-scanner", "cosine_similarity": 0.9, "top_10_accuracy": 0.8},
        {"group": "cross-scanner", "cosine_similarity": 0.7, "top_10_accuracy": 0.6},
        {"group": "cross-staining", "cosine_similarity": 0.5, "top_10_accuracy": 0.3},
        {"group": "cross-both", "cosine_similarity": 0.3, "top_10_accuracy": 0.12345},
    ]
    agg = aggregate(rows, ["cosine_similarity", "top_10_accuracy"])
    # all-pairs cosine median (0.6), cross-scanner top-10 median (0.7), cross-staining (0.3), both (0.123)
    assert leaderboard_terms(agg) == {
        "cosine_similarity (all)": 0.6,
        "top_10_accuracy (cross-scanner)": 0.7,
        "top_10_accuracy (cross-staining)": 0.3,
        "top_10_accuracy (cross-both)": 0.123,
    }
    assert leaderboard_metric(agg) == pytest.approx((0.6 + 0.7 + 0.3 + 0.123) / 4)
    with pytest.raises(EvaluationError, match="cross-both pairs, but there are none"):
        leaderboard_metric(aggregate(rows[:3], ["cosine_similarity", "top_10_accuracy"]))
    # every group is there but top-10 was not asked for (--top-k 1 5): it said "there are none" of the pairs
    # and asked for slides of two stainings and two scanners, which the cohort had
    with pytest.raises(
        EvaluationError, match="top_10_accuracy over cross-scanner pairs, but it was not computed"
    ) as e:
        leaderboard_metric(aggregate(rows, ["cosine_similarity"]))
    assert "include 10 in --top-k" in str(e.value) and "two stainings" not in str(e.value)


def test_tile_subsets_are_plismbench_files(shared_data):
    idx = tile_subset(None, 16_278)
    assert idx is not None and len(idx) == 8139
    np.testing.assert_array_equal(idx, np.load(shared_data / "plism" / "tiles_subset_8139.npy"))
    np.testing.assert_array_equal(
        tile_subset(460, 16_278), np.load(shared_data / "plism" / "tiles_subset_460.npy")
    )
    np.testing.assert_array_equal(tile_subset(16_278, 16_278), np.arange(16_278))
    assert tile_subset(None, 30) is None  # not PLISM: every tile
    with pytest.raises(EvaluationError, match="one of"):
        tile_subset(100, 16_278)
    with pytest.raises(EvaluationError, match="these slides have 30"):
        tile_subset(460, 30)


def read_metrics(path: Path) -> pd.DataFrame:
    """plismbench reads metrics.csv with ``pd.read_csv`` (README)."""
    return pd.read_csv(path)


def plismbench_leaderboard(metrics_root_dir: Path, n_tiles: int) -> float:
    """``utils/metrics.py`` get_results + format_results(agg_type="median"), then the README's leaderboard."""
    paths = list((metrics_root_dir / f"{n_tiles}_tiles").glob("*/results.csv"))
    results = pd.concat(
        [pd.read_csv(p, index_col=0).assign(robustness_type=lambda x: x.index) for p in paths]
    )
    med = results.map(lambda x: x.split(" ; ")[1] if ";" in x else x)
    for m in ("cosine_similarity", "top_10_accuracy"):
        med[[f"{m}_median", f"{m}_iqr"]] = med[m].str.extract(r"([0-9.]+)\s?\(([^)]+)\)")
    med = med.set_index("robustness_type")
    terms = [float(med.loc["all", "cosine_similarity_median"])] + [
        float(med.loc[t, "top_10_accuracy_median"])
        for t in ("inter-scanner", "inter-staining", "inter-scanner, inter-staining")
    ]
    return float(np.mean(terms))


def test_plismbench_files_read_back_as_plismbench_reads_them(tmp_path):
    write_cohort(tmp_path / "features" / "tiny", ["GM", "HR", "KR"], ["AT2", "S60", "SQ"])
    out = drain(iter_plismbench_evaluate(tmp_path / "features", "tiny", tmp_path / "metrics", device="cpu"))
    assert out.out_dir == tmp_path / "metrics" / "24_tiles" / "tiny"
    metrics = read_metrics(out.out_dir / "metrics.csv")
    assert list(metrics.columns) == [
        "slide_a", "features_path_a", "staining_a", "scanner_a", "slide_b", "features_path_b", "staining_b",
        "scanner_b", "cosine_similarity", "top_1_accuracy", "top_3_accuracy", "top_5_accuracy", "top_10_accuracy",
    ]  # fmt: skip
    assert len(metrics) == 36 and list(metrics["features_path_a"]) == sorted(metrics["features_path_a"])
    ours = {(r["slide_a"], r["slide_b"]): r["top_10_accuracy"] for r in out.result.rows}
    assert dict(zip(zip(metrics.slide_a, metrics.slide_b), metrics.top_10_accuracy)) == ours
    results = pd.read_csv(out.out_dir / "results.csv", index_col=0)
    assert list(results.index) == ["inter-scanner", "inter-staining", "inter-scanner, inter-staining", "all"]
    assert plismbench_leaderboard(tmp_path / "metrics", 24) == pytest.approx(
        out.result.leaderboard, abs=1e-12
    )
    assert json.loads((out.out_dir / "summary.json").read_text())["n_pairs"] == 36


def test_results_cell_format_and_the_negative_value_edge_case():
    assert (
        results_cell({"mean": 0.9, "std": 0.05, "median": 1.0, "iqr": 0.12345})
        == "0.900 (0.050) ; 1.000 (0.123)"
    )
    # plismbench pads to 5 characters, so a negative value keeps 2 decimals, and its reading regex [0-9.]+
    # drops the sign: the cell below reads back as +0.1 there
    cell = results_cell({"mean": -0.1, "std": 0.0, "median": -0.1, "iqr": 0.0})
    assert cell == "-0.10 (0.000) ; -0.10 (0.000)"
    assert pd.Series([cell.split(" ; ")[1]]).str.extract(r"([0-9.]+)\s?\(([^)]+)\)")[0][0] == "0.10"


@pytest.mark.parametrize("x", [0.0125, 0.0375, 0.2375, 0.6875, 0.9995])
def test_rounding_is_pandas_dataframe_round_not_python_round(x):
    """plismbench rounds with ``DataFrame.round(3)`` (numpy); Python's round differs at exact halves on
    small cohorts: 0.0125 (1 of 80) is 0.013 there and was 0.012 here."""
    pb = pd.DataFrame({"m": [x, x, x, x]}, index=["mean", "std", "median", "iqr"]).round(3)["m"]
    pad = pb.astype(str).str.pad(5, side="right", fillchar="0")  # plismbench's pad
    assert (
        results_cell({"mean": x, "std": x, "median": x, "iqr": x})
        == f"{pad.iloc[0]} ({pad.iloc[1]}) ; {pad.iloc[2]} ({pad.iloc[3]})"
    )
    rows = [
        {"group": g, "cosine_similarity": x, "top_10_accuracy": x}
        for g in ("cross-scanner", "cross-staining", "cross-both")
    ]
    terms = leaderboard_terms(aggregate(rows, ["cosine_similarity", "top_10_accuracy"]))
    assert set(terms.values()) == {pb["median"]}


def test_pairs_resume_and_overwrite(tmp_path):
    write_cohort(tmp_path / "features" / "m", ["GM", "HR"], ["AT2", "S60"])

    def run(**kw):
        return drain(
            iter_plismbench_evaluate(tmp_path / "features", "m", tmp_path / "met", device="cpu", **kw)
        )

    first = run()
    pair_file = sorted((first.out_dir / "pairs").glob("*.json"))[0]
    saved = json.loads(pair_file.read_text())
    pair_file.write_text(json.dumps({**saved, "cosine_similarity": -5.0}))  # a marker only a resume can show
    assert min(r["cosine_similarity"] for r in run().result.rows) == -5.0
    again = run(overwrite=True).result.rows
    assert [r["cosine_similarity"] for r in again] == [r["cosine_similarity"] for r in first.result.rows]


def test_resume_never_mixes_precisions(tmp_path):
    """Pairs saved by a float32 run were reported as plismbench's float16 numbers by a later --mixed-precision
    run into the same metrics folder (and vice versa): the store now keeps each pair's precision."""
    write_cohort(tmp_path / "features" / "m", ["GM", "HR"], ["AT2", "S60"])

    def cosines(met: str, mixed: bool) -> list[float]:
        gen = iter_plismbench_evaluate(tmp_path / "features", "m", tmp_path / met, device="cpu",
                                       mixed_precision=mixed)  # fmt: skip
        return [r["cosine_similarity"] for r in drain(gen).result.rows]

    f32, mixed_fresh = cosines("met", False), cosines("fresh", True)
    assert f32 != mixed_fresh  # float16 rounding shows in every pair
    assert cosines("met", True) == mixed_fresh  # after the float32 run: recomputed, not resumed
    assert cosines("met", False) == f32  # and back


def test_differing_coordinates_are_an_error(tmp_path):
    root = write_cohort(tmp_path / "features" / "m", ["GM", "HR"], ["AT2", "S60"])
    f = root / "HR_S60_to_GMH_S60.tif" / "features.npy"
    arr = np.load(f)
    arr[0, 1] += 1
    np.save(f, arr)
    with pytest.raises(EvaluationError, match="different tile coordinates"):
        drain(iter_plismbench_evaluate(tmp_path / "features", "m", tmp_path / "met", device="cpu"))


def test_write_plism_output_is_found_by_discover_plism(tmp_path):
    rng = np.random.default_rng(4)
    coords = np.array([[448, 0], [0, 0], [224, 0]])
    for stain in ("GM", "HR"):
        with h5py.File(tmp_path / f"{stain}_AT2.h5", "w") as f:
            f["features"], f["coords"] = rng.normal(size=(3, 5)).astype(np.float32), coords
            f.attrs["model"] = "tiny"
        write_plism(tmp_path / f"{stain}_AT2.h5", tmp_path / "export")
    entries = discover_plism(tmp_path / "export" / "tiny")
    assert [(e.slide, e.stain, e.scanner) for e in entries] == [
        ("GM_AT2_to_GMH_S60.tif", "GM", "AT2"),
        ("HR_AT2_to_GMH_S60.tif", "HR", "AT2"),
    ]
    arr = np.load(entries[0].path)
    assert arr[:, :3].tolist() == [[0, 448, 0], [0, 0, 0], [0, 224, 0]]  # (level 0, x, y) in the HDF5's order
