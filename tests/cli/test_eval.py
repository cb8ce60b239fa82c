"""``pathdistill eval`` sub-commands that run on feature files (no model needed)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.evaluation.concordance import lins_ccc


def _h5(path, feats):
    with h5py.File(path, "w") as f:
        f["features"], f["coords"] = feats.astype(np.float32), np.zeros((len(feats), 2))


def test_eval_robustness_plism_dir(tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(25, 8))
    coords = np.c_[np.zeros(25), np.arange(25), np.arange(25)]
    for stain in ("GM", "HR"):
        for scanner in ("AT2", "S60"):
            d = tmp_path / "feats" / f"{stain}_{scanner}_to_GMH_S60.tif"
            d.mkdir(parents=True)
            np.save(
                d / "features.npy", np.c_[coords, base + 0.3 * rng.normal(size=base.shape)].astype(np.float32)
            )
    rc = main(
        [
            "eval",
            "robustness",
            "--plism-dir",
            str(tmp_path / "feats"),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_pairs"] == 6
    assert set(summary["summary"]) == {"cross-scanner", "cross-staining", "cross-both", "all"}
    assert "leaderboard" in capsys.readouterr().out


def test_eval_robustness_bad_manifest_is_a_clear_error(tmp_path, capsys):
    rc = main(["eval", "robustness", "--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path)])
    assert rc == 1 and "manifest not found" in capsys.readouterr().err


def test_eval_regression(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 12))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.c_[x[:, 0], x[:, 1] - x[:, 2]])
    assert (
        main(
            [
                "eval",
                "regression",
                "--features",
                str(tmp_path / "x.npy"),
                "--targets",
                str(tmp_path / "y.npy"),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "regression.json").read_text())
    assert min(res["per_target"]) > 0.9


def test_eval_concordance(tmp_path):
    rng = np.random.default_rng(2)
    rows = ["block,condition,label,path"]
    for b in range(16):
        label = b % 2
        tissue = rng.normal(loc=label, size=(20, 6))
        for cond, noise in (("he", 0.0), ("hes", 0.1)):
            _h5(tmp_path / f"{b}_{cond}.h5", tissue + noise * rng.normal(size=tissue.shape))
            rows.append(f"{b},{cond},{label},{b}_{cond}.h5")
    (tmp_path / "slides.csv").write_text("\n".join(rows) + "\n")
    assert (
        main(
            [
                "eval",
                "concordance",
                "--slides",
                str(tmp_path / "slides.csv"),
                "--train-condition",
                "he",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    ccc = json.loads((tmp_path / "concordance.json").read_text())
    assert list(ccc) == ["he|hes"] and ccc["he|hes"] > 0.8
    assert lins_ccc([0, 1], [0, 1]) == pytest.approx(1.0)


def _plism_cohort(root, n=16, d=8):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(n, d))
    coords = np.c_[np.zeros(n), np.arange(n) * 224, np.zeros(n)]
    for stain in ("GM", "HR"):
        for scanner in ("AT2", "S60"):
            d_ = root / f"{stain}_{scanner}_to_GMH_S60.tif"
            d_.mkdir(parents=True)
            np.save(
                d_ / "features.npy",
                np.c_[coords, base + 0.4 * rng.normal(size=base.shape)].astype(np.float32),
            )


def test_eval_robustness_plismbench_arguments(tmp_path, capsys):
    _plism_cohort(tmp_path / "features" / "tiny")
    args = ["eval", "robustness", "--features-dir", str(tmp_path / "features"), "--extractor", "tiny",
            "--metrics-dir", str(tmp_path / "metrics"), "--top-k", "1 3 5 10", "--workers", "1",
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "metrics" / "16_tiles" / "tiny"
    assert {p.name for p in folder.iterdir()} >= {"metrics.csv", "results.csv", "summary.json", "pairs"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["precision"] == "float32" and len(summary["leaderboard_terms"]) == 4
    assert f"leaderboard (plismbench, float32): {summary['leaderboard']:.3f}" in out
    assert main([*args, "--mixed-precision", "--overwrite"]) == 0
    mixed = json.loads((folder / "summary.json").read_text())
    assert mixed["precision"].startswith("mixed") and mixed["leaderboard"] == pytest.approx(
        summary["leaderboard"], abs=5e-3
    )
    assert "mixed (float16, plismbench)" in capsys.readouterr().out


def test_eval_robustness_refuses_leaderboard_and_bad_n_tiles(tmp_path, capsys):
    _plism_cohort(tmp_path / "feats")
    for d in (tmp_path / "feats").glob("HR_*"):  # one staining left: no cross-staining pairs
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    assert main(["eval", "robustness", "--plism-dir", str(tmp_path / "feats"), "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0  # fmt: skip
    assert "leaderboard: undefined: the PLISM leaderboard needs" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["leaderboard"] is None
    rc = main(["eval", "robustness", "--plism-dir", str(tmp_path / "feats"), "--n-tiles", "460",
               "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 1 and "these slides have 16" in capsys.readouterr().err


def test_progress_into_a_log_file_is_rate_limited(capsys):
    """Into a file (a batch job's stderr) the bar was redrawn twice per item: 410 lines for 205 pairs."""
    from napari_pathdistill.cli.eval import drive
    from napari_pathdistill.progress import Progress

    def gen():
        for stage in ("embed", "robustness"):
            for i in range(1, 2001):
                yield Progress(i, 2000, stage)
        yield "result"

    assert drive(gen(), "robustness") == "result"
    err = capsys.readouterr().err
    assert err.count("\r") <= 6, err.count("\r")
    assert "2000/2000" in err and "robustness" in err.splitlines()[-1]


def test_eval_concordance_accepts_text_labels(tmp_path, capsys):
    """tumour/normal labels crashed with a ValueError traceback from int(label)."""
    rng = np.random.default_rng(3)
    rows = ["block,condition,label,path"]
    for b in range(12):
        label = ("normal", "tumour")[b % 2]
        tissue = rng.normal(loc=b % 2, size=(20, 6))
        for cond in ("he", "scan2"):
            _h5(tmp_path / f"{b}_{cond}.h5", tissue + 0.1 * rng.normal(size=tissue.shape))
            rows.append(f"{b},{cond},{label},{b}_{cond}.h5")
    (tmp_path / "slides.csv").write_text("\n".join(rows) + "\n")
    argv = ["eval", "concordance", "--slides", str(tmp_path / "slides.csv"), "--train-condition", "he",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert "P(label = tumour)" in capsys.readouterr().out
    assert json.loads((tmp_path / "concordance.json").read_text())["he|scan2"] > 0.8


def test_eval_regression_reports_the_alpha_each_fold_used(tmp_path, capsys):
    """Groups of unequal size: each fold's PCA is capped at its own training-set size, so HEST's alpha
    100 / (components x targets) differs by fold; the line and regression.json say so (they printed the
    smallest fold's alpha as if every fold had used it)."""
    rng = np.random.default_rng(5)
    groups = np.repeat(["pA", "pB", "pC"], [4, 6, 10])
    x = rng.normal(size=(20, 64))
    np.save(tmp_path / "x.npy", x)
    lines = ["patient,g1"] + [f"{g},{a}" for g, a in zip(groups, x[:, 0], strict=True)]
    (tmp_path / "y.csv").write_text("\n".join(lines) + "\n")
    argv = ["eval", "regression", "--features", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.csv"),
            "--out", str(tmp_path), "--n-splits", "3"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((tmp_path / "regression.json").read_text())
    # training sets of 16, 14 and 10 tiles -> 16, 14 and 10 components, one target
    assert sorted(res["alpha_per_fold"]) == pytest.approx([100 / 16, 100 / 14, 100 / 10])
    assert res["alpha"] is None and res["n_components"] == 10
    assert "ridge(alpha=6.25-10 by fold, no intercept)" in capsys.readouterr().out


def test_eval_regression_hest_defaults_group_column_and_components(tmp_path, capsys):
    rng = np.random.default_rng(4)
    groups = np.repeat(["pA", "pB", "pC", "pD", "pE"], 8)
    x = rng.normal(size=(40, 12))
    np.save(tmp_path / "x.npy", x)
    lines = ["patient,g1,g2"] + [
        f"{g},{a},{b}" for g, a, b in zip(groups, x[:, 0], x[:, 1] - x[:, 2], strict=True)
    ]
    (tmp_path / "y.csv").write_text("\n".join(lines) + "\n")
    argv = ["eval", "regression", "--features", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.csv"),
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    cap = capsys.readouterr()
    # 12-d features: PCA capped at 12 (it printed PCA(256) before); HEST's alpha = 100 / (12 * 2)
    assert "PCA(12, capped from 256)+ridge(alpha=4.167, no intercept), GroupKFold(5)" in cap.out
    assert "tile-level KFold" not in cap.err
    res = json.loads((tmp_path / "regression.json").read_text())
    assert res["splits"] == "group" and res["n_components"] == 12 and min(res["per_target"]) > 0.9
    np.save(tmp_path / "y.npy", np.c_[x[:, 0], x[:, 1]])
    argv[5] = str(tmp_path / "y.npy")
    assert main(argv) == 0
    assert "note: tile-level KFold" in capsys.readouterr().err


def test_eval_regression_refuses_targets_of_another_length(tmp_path, capsys):
    rng = np.random.default_rng(6)
    np.save(tmp_path / "x.npy", rng.normal(size=(100, 20)))
    np.savetxt(tmp_path / "y.csv", rng.normal(size=(50, 2)), delimiter=",", header="g1,g2", comments="")
    argv = ["eval", "regression", "--features", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.csv"),
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    assert "error: 100 feature rows but 50 rows of targets" in capsys.readouterr().err
    assert not (tmp_path / "regression.json").exists()


def test_eval_regression_bad_files_and_alpha_are_one_line(tmp_path, capsys):
    """A features CSV with a word in it and a negative --alpha ended in numpy's / scikit-learn's traceback (the
    latter after loading everything), and a missing targets file was a bare '[Errno 2] ...'."""
    rng = np.random.default_rng(8)
    np.save(tmp_path / "x.npy", rng.normal(size=(20, 4)))
    np.save(tmp_path / "y.npy", rng.normal(size=(20, 1)))
    (tmp_path / "x.csv").write_text("f1,f2\n1,oops\n2,3\n")
    base = ["eval", "regression", "--out", str(tmp_path)]
    assert main([*base, "--features", str(tmp_path / "x.csv"), "--targets", str(tmp_path / "y.npy")]) == 1
    assert "x.csv: features must be numbers after one header line" in capsys.readouterr().err
    assert main([*base, "--features", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "gone.csv")]) == 1
    assert f"error: targets file not found: {tmp_path / 'gone.csv'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                *base,
                "--features",
                str(tmp_path / "x.npy"),
                "--targets",
                str(tmp_path / "y.npy"),
                "--alpha",
                "-1",
            ]
        )
    assert exit_.value.code == 2 and "argument --alpha: must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "regression.json").exists()


def test_eval_concordance_bad_slides_csv_is_one_line(tmp_path, capsys):
    """A slides CSV without a 'block' column ended in a KeyError traceback."""
    _h5(tmp_path / "a.h5", np.zeros((3, 4)))
    argv = ["eval", "concordance", "--slides", str(tmp_path / "s.csv"), "--train-condition", "he",
            "--out", str(tmp_path)]  # fmt: skip
    for text, said in (
        ("blk,condition,label,path\nb1,he,0,a.h5\n", "s.csv needs the columns block,condition,label,path; missing ['block']"),
        ("block,condition,label,path\n", "s.csv has no slides"),
        ("block,condition,label,path\nb1,,0,a.h5\n", "s.csv line 2: condition is empty"),
    ):  # fmt: skip
        (tmp_path / "s.csv").write_text(text)
        assert main(argv) == 1
        assert f"error: {said}" in capsys.readouterr().err
    # a missing CSV was a bare "[Errno 2] ..."; a train condition that no slide has did not say which there are
    (tmp_path / "s.csv").unlink()
    assert main(argv) == 1
    assert f"error: slides CSV not found: {tmp_path / 's.csv'}" in capsys.readouterr().err
    (tmp_path / "s.csv").write_text("block,condition,label,path\nb1,hes,0,a.h5\nb2,ihc,1,a.h5\n")
    assert main(argv) == 1
    assert "error: no slide has condition 'he' (the conditions are ['hes', 'ihc'])" in capsys.readouterr().err


def test_eval_robustness_plism_dir_resumes_and_redoes_re_extracted_slides(tmp_path, capsys):
    """--plism-dir and --manifest runs kept no per-pair results: an interrupted run of 4,095 pairs (hours on a
    CPU) started again from nothing, and --overwrite did nothing. They now resume from <out>/pairs/, except
    pairs whose features file changed since (re-extracted), which are recomputed."""
    _plism_cohort(tmp_path / "feats")
    argv = ["eval", "robustness", "--plism-dir", str(tmp_path / "feats"), "--out", str(tmp_path / "o"),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    saved = sorted((tmp_path / "o" / "pairs").glob("*.json"))
    assert len(saved) == 6

    def cosines() -> dict[str, float]:
        rows = (tmp_path / "o" / "pairs.csv").read_text().splitlines()
        head = rows[0].split(",")
        return {
            ",".join(r.split(",")[:2]): float(r.split(",")[head.index("cosine_similarity")]) for r in rows[1:]
        }

    first = cosines()
    for f in saved:  # markers only a resume can show
        f.write_text(json.dumps({**json.loads(f.read_text()), "cosine_similarity": -5.0}))
    assert main(argv) == 0
    assert set(cosines().values()) == {-5.0}
    # every pair resumed: it printed "0.000 s/pair" and saved seconds_per_pair 0.0, as if they had been timed
    assert "all 6 pairs resumed from pairs/ (none computed" in capsys.readouterr().out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["seconds_per_pair"] is None and summary["n_resumed"] == 6
    feats = tmp_path / "feats" / "HR_S60_to_GMH_S60.tif" / "features.npy"
    np.save(feats, np.load(feats))  # re-extracted: same values, a new file
    assert main(argv) == 0
    again = cosines()
    redone = {k for k in again if "HR_S60" in k}
    assert len(redone) == 3 and all(again[k] == pytest.approx(first[k]) for k in redone)
    assert {again[k] for k in again if k not in redone} == {-5.0}
    assert " s/pair over 3 computed pairs, 3 resumed from pairs/" in capsys.readouterr().out
    assert main([*argv, "--overwrite"]) == 0
    assert cosines() == pytest.approx(first)


def test_eval_robustness_manifest_slide_names_with_a_slash(tmp_path):
    rng = np.random.default_rng(8)
    base = rng.normal(size=(12, 6))
    lines = ["slide,stain,scanner,path"]
    for i, (stain, scanner) in enumerate((("he", "a"), ("he", "b"), ("ihc", "a"))):
        _h5(tmp_path / f"s{i}.h5", base + 0.3 * rng.normal(size=base.shape))
        lines.append(f"patient1/s{i},{stain},{scanner},s{i}.h5")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    argv = ["eval", "robustness", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert (
        sorted(p.name for p in (tmp_path / "o" / "pairs").iterdir())[0]
        == "patient1%2Fs0---patient1%2Fs1.json"
    )


def test_eval_robustness_features_dir_of_a_partial_cohort_keeps_its_summary(tmp_path, capsys):
    """--features-dir on slides of one staining computed every pair, wrote metrics.csv, then stopped with
    'error: results.csv needs pairs of every robustness type' before summary.json and pairs.csv: no medians."""
    _plism_cohort(tmp_path / "features" / "m")
    for d in (tmp_path / "features" / "m").glob("HR_*"):  # one staining left: no cross-staining pairs
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    argv = ["eval", "robustness", "--features-dir", str(tmp_path / "features"), "--extractor", "m",
            "--metrics-dir", str(tmp_path / "met"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    cap = capsys.readouterr()
    out_dir = tmp_path / "met" / "16_tiles" / "m"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["n_pairs"] == 1 and summary["leaderboard"] is None
    assert (out_dir / "pairs.csv").is_file() and (out_dir / "metrics.csv").is_file()
    assert not (out_dir / "results.csv").exists()
    assert "cross-scanner   n=1" in cap.out and "leaderboard: undefined" in cap.out
    assert "note: results.csv not written: results.csv needs pairs of every robustness type" in cap.err


def test_eval_regression_json_is_strict_with_an_undefined_correlation(tmp_path):
    """A constant target has no Pearson r: regression.json held the bare token NaN (not JSON); now null."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 6))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.c_[x[:, 0], np.ones(40)])
    argv = ["eval", "regression", "--features", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"),
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    res = json.loads((tmp_path / "regression.json").read_text(), parse_constant=refuse)
    assert res["per_target"][1] is None and res["per_target"][0] > 0.9


def test_eval_robustness_resumed_pairs_keep_only_this_runs_k_values(tmp_path):
    """A run with --top-k "1 5 10" resumed after one with "1 3 5 10" copied top_3_accuracy, a k not asked for,
    from the resumed rows into pairs.csv (a half-empty column when only some pairs were resumed)."""
    _plism_cohort(tmp_path / "feats")
    argv = ["eval", "robustness", "--plism-dir", str(tmp_path / "feats"), "--out", str(tmp_path / "o"),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert main([*argv, "--top-k", "1 5 10"]) == 0
    header = (tmp_path / "o" / "pairs.csv").read_text().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("top_")] == [
        "top_1_accuracy",
        "top_5_accuracy",
        "top_10_accuracy",
    ]


@pytest.mark.parametrize(("n", "flagged"), [(16, ["top_5", "top_10"]), (60, [])])
def test_eval_robustness_notes_top_k_that_chance_alone_scores(tmp_path, capsys, n, flagged):
    """16 matched tiles per slide: a query has 31 candidates, so a random ranking already scores 0.32 top-10
    (0.16 top-5); the CLI printed those medians and the leaderboard built on them without a word. 60 tiles
    (119 candidates, top-10 chance 0.084) need no note."""
    _plism_cohort(tmp_path / "feats", n=n)
    rc = main(["eval", "robustness", "--plism-dir", str(tmp_path / "feats"), "--out", str(tmp_path / "o"),
               "--device", "cpu"])  # fmt: skip
    assert rc == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert [line.split()[1].removesuffix("_accuracy:") for line in notes] == flagged
    if flagged:
        assert (
            f"the smallest pair has {n} matched tiles: 31 candidates, a random ranking scores 0.32"
            in notes[-1]
        )


@pytest.mark.parametrize("source", ["--plism-dir", "--features-dir"])
def test_eval_robustness_ctrl_c_says_where_the_finished_pairs_are(tmp_path, capsys, monkeypatch, source):
    """Ctrl-C after two pairs: exit 130 with 'interrupted' last, as before, but first a line that says how many
    finished pairs are kept where and that the same command resumes them (it said only 'interrupted'); the
    rerun then resumes those two."""
    from napari_pathdistill.evaluation.plismbench_files import PairStore

    _plism_cohort(tmp_path / "features" / "tiny")
    put = PairStore.put

    def put_then_stop(self, *args, **kwargs):
        put(self, *args, **kwargs)
        if len(list(self.dir.glob("*.json"))) == 2:
            raise KeyboardInterrupt

    src = [source, str(tmp_path / "features" / ("tiny" if source == "--plism-dir" else ""))]
    argv = ["eval", "robustness", *src, "--out", str(tmp_path / "out"), "--device", "cpu"]
    argv += ["--extractor", "tiny"] if source == "--features-dir" else []
    monkeypatch.setattr(PairStore, "put", put_then_stop)
    assert main(argv) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    pairs = tmp_path / "out" / ("pairs" if source == "--plism-dir" else "16_tiles/tiny/pairs")
    assert lines[-1] == "interrupted"
    assert (
        f"stopping: 2 finished pair(s) are kept in {pairs}; run the same command again to resume" in lines[-2]
    )
    monkeypatch.setattr(PairStore, "put", put)
    assert main(argv) == 0
    assert "over 4 computed pairs, 2 resumed from pairs/" in capsys.readouterr().out


def test_eval_probe_checks_n_splits_before_the_model_loads(tmp_path, capsys, histolab_tiles):
    """--n-splits 10 with 8 background tiles failed only after every tile was embedded (minutes on a real tile
    set); the folds are checked on the labels first now, so not even a missing model is reached."""
    argv = ["eval", "probe", "--tiles", str(histolab_tiles), "--model", str(tmp_path / "no-such-checkpoint"),
            "--n-splits", "10", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: the smallest class has 8 samples, fewer than n_splits=10; lower n_splits" in err
    assert "no-such-checkpoint" not in err


def test_eval_concordance_features_of_two_widths_are_one_line(tmp_path, capsys):
    """One slide embedded by another model (another width) ended in numpy's 'all input arrays must have the same
    shape' or scikit-learn's 'X has 7 features, but StandardScaler is expecting 16' traceback, naming no slide."""
    rng = np.random.default_rng(4)
    rows = ["block,condition,label,path"]
    for b in range(6):
        for cond in ("he", "ihc"):
            _h5(
                tmp_path / f"{b}_{cond}.h5",
                rng.normal(loc=b % 2, size=(5, 3 if (b, cond) == (3, "ihc") else 8)),
            )
            rows.append(f"{b},{cond},{b % 2},{b}_{cond}.h5")
    (tmp_path / "slides.csv").write_text("\n".join(rows) + "\n")
    argv = ["eval", "concordance", "--slides", str(tmp_path / "slides.csv"), "--train-condition", "he",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        "error: the slides' features have different widths (D=3: 1 slide(s), e.g. '3 ihc'; D=8: 11 slide(s)"
        in err
    )
