"""Evaluation inputs checked with clear errors, and results that say what they did: labelled-tile CSVs and
unreadable tiles, tile-subset files, the k the kNN probe used, cosines within [-1, 1], and the compare figure's
robustness panel without robustness runs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import load_tile_subset
from napari_pathdistill.evaluation.labelled_tiles import list_labelled_tiles, load_tile, tile_groups
from napari_pathdistill.evaluation.manifest import SlideEntry
from napari_pathdistill.evaluation.plism import run_robustness
from napari_pathdistill.evaluation.probes import knn_probe
from napari_pathdistill.evaluation.report import NO_ROBUSTNESS, Report
from napari_pathdistill.metrics.pairs import pair_metrics


def test_labelled_csv_names_the_line_of_a_missing_or_empty_tile(tmp_path, histolab_tiles) -> None:
    real = histolab_tiles / "no-tissue.png"
    good = tmp_path / "good.csv"
    good.write_text(f"path,label\n{real},background\n")
    assert list_labelled_tiles(good)[0] == [real]
    (tmp_path / "missing.csv").write_text(f"path,label\n{real},bg\n{real},bg\ngone/x.png,tissue\n")
    with pytest.raises(EvaluationError, match=r"missing\.csv, line 4: tile image not found: .*gone/x\.png"):
        list_labelled_tiles(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text(f"path,label\n{real},\n")
    with pytest.raises(EvaluationError, match=r"line 2: empty path or label"):
        list_labelled_tiles(tmp_path / "empty.csv")


def test_labels_csv_saved_by_excel_with_a_byte_order_mark_is_read(tmp_path, histolab_tiles) -> None:
    """Excel's "CSV UTF-8" starts the file with a byte-order mark: its first column read '\ufeffpath' and the
    probe said "CSV needs columns path,label" of a file that has them, patient column included."""
    tiles = [histolab_tiles / "no-tissue.png", histolab_tiles / "almost-white-1.png"]
    bom = tmp_path / "labels.csv"
    lines = ["path,label,patient", f"{tiles[0]},background,p1", f"{tiles[1]},background,p2"]
    bom.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    paths, labels = list_labelled_tiles(bom)
    assert paths == tiles and labels.tolist() == ["background"] * 2
    groups, col = tile_groups(bom)
    assert col == "patient" and groups is not None and groups.tolist() == ["p1", "p2"]


def test_a_labels_file_that_is_no_usable_csv_says_what_it_is(tmp_path, histolab_tiles) -> None:
    """An image chosen as the labels raised a bare UnicodeDecodeError (as a .csv) or "labelled tiles not found"
    (an existing file); a header-only CSV and a semicolon-separated one both read "CSV needs columns path,label"."""
    image = histolab_tiles / "no-tissue.png"
    as_csv = tmp_path / "image.csv"
    as_csv.write_bytes(image.read_bytes())
    header_only, semicolons = tmp_path / "header.csv", tmp_path / "semi.csv"
    header_only.write_text("path,label\n")
    semicolons.write_text(f"path;label\n{image};background\n")
    cases = {
        as_csv: "image.csv is not a CSV file (not UTF-8 text): give a path,label CSV or a folder of tiles.",
        image: "no-tissue.png is not a .csv file: give a path,label CSV or a folder of tiles.",
        header_only: f"{header_only} has the columns path,label but no tiles: add one line per tile.",
        semicolons: f"{semicolons}: CSV needs columns path,label, comma-separated on its first line; its first "
        "line reads 'path;label'",
    }
    for path, message in cases.items():
        with pytest.raises(EvaluationError) as err:
            list_labelled_tiles(path)
        assert str(err.value) == message


def test_unreadable_tile_image_is_an_evaluation_error(tmp_path, histolab_tiles) -> None:
    assert load_tile(histolab_tiles / "no-tissue.png", 32).shape == (32, 32, 3)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(EvaluationError, match=r"tile image .*notes\.png cannot be read"):
        load_tile(tmp_path / "notes.png", 32)


def test_tile_subset_file_is_checked(tmp_path, shared_data) -> None:
    assert len(load_tile_subset(shared_data / "plism" / "tiles_subset_460.npy")) == 460
    with pytest.raises(EvaluationError, match="tile subset not found"):
        load_tile_subset(tmp_path / "nope.npy")
    (tmp_path / "t.npy").write_text("0 1 2")
    with pytest.raises(EvaluationError, match=r"is not a \.npy file"):
        load_tile_subset(tmp_path / "t.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EvaluationError, match=r"not a readable integer \.npy"):
        load_tile_subset(tmp_path / "obj.npy")
    np.save(tmp_path / "neg.npy", np.array([0, -2]))
    with pytest.raises(EvaluationError, match="negative indices"):
        load_tile_subset(tmp_path / "neg.npy")


def _two_slides(tmp_path, feats: np.ndarray) -> list[SlideEntry]:
    entries = []
    for stain in ("GM", "HR"):
        path = tmp_path / f"{stain}_AT2_to_GMH_S60.tif" / "features.npy"
        path.parent.mkdir()
        np.save(path, np.c_[np.zeros((len(feats), 3)), feats].astype(np.float32))
        entries.append(SlideEntry(path.parent.name, stain, "AT2", path))
    return entries


def test_tile_subset_past_the_features_is_an_evaluation_error(tmp_path) -> None:
    entries = _two_slides(tmp_path, np.random.default_rng(0).normal(size=(6, 4)))
    with pytest.raises(EvaluationError, match=r"indexes tile 9, but .* has only 6 tiles"):
        run_robustness(entries, (1,), subset=np.arange(10), device="cpu")


def test_knn_probe_reports_the_k_it_used() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], [10, 30])
    x = rng.normal(size=(40, 6)) + np.where(y == "a", 2.0, -2.0)[:, None]
    assert knn_probe(x, y, k=3, n_splits=5).k == 3
    assert knn_probe(x, y, k=20, n_splits=5).k == 8  # 10 "a" samples, 8 in each training fold
    with pytest.raises(EvaluationError, match="k >= 1"):
        knn_probe(x, y, k=0)


def test_cosine_of_identical_tiles_is_at_most_one_in_pairs_csv(tmp_path) -> None:
    """Unit vectors of 3.0 * ones(3) dot to 1.0000002 in float32: pairs.csv said cosine 1.0000000438."""
    feats = np.full((4, 3), 3.0)
    assert pair_metrics(feats, feats.copy(), device="cpu").cosine == 1.0
    csv_path, _ = run_robustness(_two_slides(tmp_path, feats), (1,), device="cpu").save(tmp_path)
    rows = list(csv.DictReader(csv_path.open()))
    assert [float(r["cosine_similarity"]) for r in rows] == [1.0]


def _compare_report(robustness: dict[str, float]) -> Report:
    summary = {"linear_cka": 0.9, "teacher_tiles_per_s": 10.0, "student_tiles_per_s": 40.0,
               "speed_ratio_student_over_teacher": 4.0, **robustness}  # fmt: skip
    params = {"teacher": "t", "student": "s"}
    return Report("compare", [], summary, params, {"attention_r": np.linspace(-0.5, 0.9, 8)})


def test_compare_figure_says_when_no_robustness_was_given() -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    _compare_report({}).plot(fig)
    panel = fig.axes[2]
    assert panel.get_title() == "robustness (medians)" and not panel.patches
    assert [t.get_text() for t in panel.texts] == [NO_ROBUSTNESS] and "--teacher-robustness" in NO_ROBUSTNESS
    fig = Figure()
    _compare_report({"robustness/teacher/cosine_similarity__all": 0.8}).plot(fig)
    assert len(fig.axes[2].patches) == 1 and not fig.axes[2].texts


def test_a_plain_feature_matrix_npy_is_refused_not_stripped_of_three_features(tmp_path, capsys) -> None:
    """``.npy`` features are read in plismbench's (N, 3 + D) layout; a plain (N, D) matrix (the natural way to
    save one slide's tile features for ``eval concordance``) lost its first 3 features to the 'coordinates'
    without a word and was scored on the rest. Its non-integer first columns are refused now."""
    from napari_pathdistill.cli.main import main
    from napari_pathdistill.evaluation.features_io import load_features

    rng = np.random.default_rng(0)
    rows = ["block,condition,label,path"]
    for b in range(6):
        for cond in ("he", "ihc"):
            np.save(tmp_path / f"{b}_{cond}.npy", rng.normal(loc=b % 2, size=(10, 8)).astype(np.float32))
            rows.append(f"{b},{cond},{b % 2},{b}_{cond}.npy")
    (tmp_path / "slides.csv").write_text("\n".join(rows) + "\n")
    argv = ["eval", "concordance", "--slides", str(tmp_path / "slides.csv"), "--train-condition", "he",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "0_he.npy: a .npy of features is read in plismbench's (N, 3 + D) layout" in err
    assert "not integer tile coordinates (shape (10, 8)" in err
    plism = tmp_path / "plism.npy"  # embed --format plism: level, x, y then the features
    np.save(plism, np.c_[np.zeros(4), np.arange(4) * 224, np.zeros(4), np.ones((4, 5))].astype(np.float32))
    assert load_features(plism)[0].shape == (4, 5)


@pytest.mark.parametrize(
    "bad", ["GM", "HR"]
)  # the first slide is read for its tile count, the other per pair
def test_a_features_npy_that_is_no_npy_is_one_error_line(tmp_path, capsys, bad) -> None:
    """A features.npy that is text (or a truncated download, a pickle) ended in numpy's traceback ('This file
    contains pickled (object) data. If you trust the file ...'), naming no file."""
    from napari_pathdistill.cli.main import main

    _two_slides(tmp_path, np.random.default_rng(0).normal(size=(6, 4)))
    npy = tmp_path / f"{bad}_AT2_to_GMH_S60.tif" / "features.npy"
    npy.write_text("not an array\n")
    assert (
        main(
            [
                "eval",
                "robustness",
                "--plism-dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert (
        f"error: {npy}: not a readable .npy file (This file contains pickled (object) data); extract" in err
    )
    assert "Traceback" not in err and "If you trust" not in err


def test_a_slide_without_tiles_is_named_as_such(tmp_path) -> None:
    """A features file of 0 rows made its pairs fail with 'share fewer than 2 tile coordinates ...; are they
    registered?', which sent one looking at the registration."""
    entries = _two_slides(tmp_path, np.random.default_rng(0).normal(size=(6, 4)))
    np.save(entries[1].path, np.zeros((0, 7), np.float32))
    with pytest.raises(
        EvaluationError, match=r"HR_AT2_to_GMH_S60.tif/features.npy: holds no tiles \(0 feature rows\)"
    ):
        run_robustness(entries, (1,), device="cpu")


def test_compare_figure_shows_the_leaderboard_medians_readably() -> None:
    """With every median of two robustness runs (5 metrics x 4 groups) the panel drew 40 vertical bars under 20
    rotated labels that overlapped, the legend over the bars. It now shows plismbench's leaderboard terms (median
    cosine of all pairs, median top-10 of each cross group) as labelled horizontal bars; other runs' medians
    (no top-10 computed) are all shown."""
    from matplotlib.figure import Figure

    metrics = ("cosine_similarity", "top_1_accuracy", "top_3_accuracy", "top_5_accuracy", "top_10_accuracy")
    groups = ("all", "cross-scanner", "cross-staining", "cross-both")
    every = {f"robustness/{m}/{k}__{g}": 0.5 for m in ("teacher", "student") for k in metrics for g in groups}
    fig = Figure()
    _compare_report(every).plot(fig)
    panel = fig.axes[2]
    labels = [t.get_text() for t in panel.get_yticklabels()]
    assert labels == ["cosine\nall", "top-10\ncross-scanner", "top-10\ncross-staining", "top-10\ncross-both"]
    assert len(panel.patches) == 8 and [t.get_text() for t in panel.get_legend().get_texts()] == [
        "teacher",
        "student",
    ]
    fig = Figure()
    _compare_report({k: v for k, v in every.items() if "top_10" not in k}).plot(fig)
    assert len(fig.axes[2].get_yticklabels()) == 16
