"""The Evaluate runs say what is wrong and what is not meaningful: pair CSVs that are no CSV or have no pairs,
a k-NN overlap over too few tiles to mean anything, and plots whose titles fit and whose bars can be told apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.manifest import read_pairs
from napari_pathdistill.evaluation.report import Report, pair_label
from napari_pathdistill.evaluation.runs import iter_teacher_student, knn_overlap_note
from napari_pathdistill.metrics.agreement import knn_overlap, knn_overlap_chance
from napari_pathdistill.progress import drain

# --- pair CSVs: one clear line each ---------------------------------------------------------------------------


def test_an_image_chosen_as_the_pairs_csv_is_named_as_no_csv(histolab_tiles: Path) -> None:
    png = histolab_tiles / "almost-white-1.png"  # a real PNG, picked by mistake (was: raw UnicodeDecodeError)
    with pytest.raises(EvaluationError) as err:
        read_pairs(png)
    msg = str(err.value)
    assert (
        msg.startswith("almost-white-1.png is not a CSV file (not UTF-8 text)") and "slide_a,slide_b" in msg
    )
    assert "\n" not in msg and "UnicodeDecodeError" not in msg


def test_a_header_only_csv_has_the_columns_but_no_pairs(tmp_path: Path) -> None:
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("slide_a,slide_b\n\n")
    with pytest.raises(EvaluationError, match="has the columns slide_a,slide_b but no pairs") as err:
        read_pairs(header_only)
    assert "has no slide_a,slide_b columns" not in str(err.value)  # it said so, though the columns are there
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(
        EvaluationError, match=r"^empty\.csv is empty: give a CSV with columns slide_a,slide_b"
    ):
        read_pairs(empty)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\nx.svs,y.svs\n")
    with pytest.raises(EvaluationError, match=r"has no slide_a,slide_b columns .*; its header is a,b"):
        read_pairs(wrong)


def test_pairs_csv_cells_are_checked_and_trimmed(tmp_path: Path, os2_pair: tuple[Path, Path]) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"\ufeffslide_a, slide_b\n{os2_pair[0]} , {os2_pair[1]}\n\n{os2_pair[0]},\n")
    with pytest.raises(EvaluationError, match=r"^pairs\.csv line 4: slide_b is empty\.$"):
        read_pairs(csv_path)
    csv_path.write_text(f"\ufeffslide_a, slide_b\n{os2_pair[0]} , {os2_pair[1]}\n")  # a spreadsheet's BOM
    assert read_pairs(csv_path) == [os2_pair]


# --- teacher vs student: a k-NN overlap over too few tiles is flagged ------------------------------------------


def test_knn_overlap_chance_is_what_unrelated_embeddings_score() -> None:
    rng = np.random.default_rng(0)
    n, k = 40, 5
    scores = [knn_overlap(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)), k).mean() for _ in range(40)]
    assert np.mean(scores) == pytest.approx(knn_overlap_chance(n, k), abs=0.02)
    assert knn_overlap_chance(6, 5) == 1.0  # every other tile is a neighbour
    assert knn_overlap_note(51, 5) is None and knn_overlap_note(50, 5) is not None


@pytest.fixture
def six_tiles(tmp_path: Path, histolab_tiles: Path) -> Path:
    """Six real histolab tiles in two class folders (the tester's 6-tile teacher-vs-student run)."""
    names = {"background": ["almost-white-1.png", "almost-white-2.png", "almost-white-ihc.png"],
             "tissue": ["high-nuclei-score-level0.png", "low-nuclei-score-level0.png",
                        "medium-nuclei-score-level0.png"]}  # fmt: skip
    for label, files in names.items():
        (tmp_path / label).mkdir()
        for f in files:
            shutil.copy(histolab_tiles / f, tmp_path / label / f)
    return tmp_path


def _tiny_models():
    from napari_pathdistill.models.testing import tiny_model

    return tiny_model(seed=0), tiny_model(seed=1)


def _stages_until_cancel(run, cancel, stage: str) -> list[str]:
    """The Progress stages a run yields, with ``cancel`` set at the first report of ``stage``: it must end in
    ``Cancelled`` ("no report was written") and yield nothing but Progress (no report once cancelled)."""
    from napari_pathdistill.errors import Cancelled
    from napari_pathdistill.progress import Progress

    stages = []
    with pytest.raises(Cancelled, match="no report was written"):
        for item in run:
            assert isinstance(item, Progress), item  # no report once cancelled
            stages.append(item.stage)
            if item.stage == stage:
                cancel.set()
    return stages


def test_teacher_student_on_six_tiles_flags_its_knn_overlap(six_tiles: Path) -> None:
    """6 tiles, k = 5: the overlap is 1 by construction; it was reported as mean_knn5_overlap 1.000 unflagged."""
    teacher, student = _tiny_models()
    rep = drain(iter_teacher_student(teacher, student, six_tiles))
    assert rep is not None
    assert [r["knn5_overlap"] for r in rep.rows] == [1.0] * 6  # kept per tile
    assert np.isnan(rep.summary["mean_knn5_overlap"]) and rep.summary["knn5_chance"] == 1.0
    (note,) = rep.params["notes"]
    assert (
        note.startswith("mean_knn5_overlap not meaningful: with 6 tiles every other tile is one of the 5")
        and "needs >= 51 tiles" in note
    )


def test_teacher_student_with_enough_tiles_for_its_k_is_not_flagged(histolab_tiles: Path) -> None:
    teacher, student = _tiny_models()
    rep = drain(iter_teacher_student(teacher, student, histolab_tiles, k=3))
    assert rep is not None
    n = int(rep.summary["tiles"])
    assert n > 31 and rep.params["notes"] == []  # 3 / (n - 1) <= 0.1
    assert rep.summary["mean_knn3_overlap"] == pytest.approx(np.mean([r["knn3_overlap"] for r in rep.rows]))
    assert rep.summary["knn3_chance"] == pytest.approx(3 / (n - 1))


# --- plots ----------------------------------------------------------------------------------------------------


def _render(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_a_long_teacher_student_title_fits_a_dock_sized_figure() -> None:
    """In the dock the title was cut at the right: '...efficientnet-lite2-imagenet vs pathdi'."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    rows = [
        {"tile": f"medium-nuclei-score-level{i}.png", "label": "tumor", "knn5_overlap": 1.0} for i in range(6)
    ]
    params = {"teacher": "efficientnet-lite2-imagenet", "student": "pathdistill-student"}
    fig = Figure(figsize=(3.7, 2.6), tight_layout=True)  # about the Evaluate dock's canvas
    Report("teacher_student", rows, {"knn5_chance": 1.0}, params).plot(fig)
    renderer = _render(fig)
    titles = [t for t in fig.findobj(Text) if "pathdistill-student" in t.get_text()]
    assert titles, "the title names both models"
    for t in titles:
        box = t.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width, (t.get_text(), box, fig.bbox.width)


def test_robustness_bars_name_both_slides_of_each_pair() -> None:
    """Two pairs sharing slide A were both labelled 'OS-2-ndpi.ome.tif' and drawn as one bar."""
    from matplotlib.figure import Figure

    nan = float("nan")
    rows = [
        {
            "slide_a": "OS-2-ndpi.ome.tif",
            "slide_b": "OS-2-vsi.ome.tif",
            "tiles": 14,
            "mean_cosine": 0.9,
            "error": "",
        },
        {
            "slide_a": "OS-2-ndpi.ome.tif",
            "slide_b": "slide.svs",
            "tiles": 0,
            "mean_cosine": nan,
            "error": "gone",
        },
    ]
    fig = Figure(figsize=(4, 3))
    Report("robustness", rows, {}, {"model": "m"}).plot(fig)
    _render(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["OS-2-ndpi\nvs \u2026vsi", "OS-2-ndpi\nvs slide"]
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.texts] == [" failed"]
    assert (
        pair_label("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg")
        == "Izd2-29-041-w35_HE vs \u2026proSPC"
    )


def test_robustness_rows_name_their_registration_and_a_doubtful_pair_fails_alone(tmp_path, os2_pair) -> None:
    """An unrelated pair (OS-1's H&E vs OS-2's Ki67) counted as a good pair (median cosine -0.08); a lowered k
    made a second top-k column; the report kept only pairs, top_k and model of what was run."""
    from napari_pathdistill.evaluation.runs import iter_pair_robustness
    from napari_pathdistill.models.factory import load_model
    from napari_pathdistill.progress import drain

    pairs = tmp_path / "pairs.csv"
    other = os2_pair[0].parent / "OS-1-detail.ome.tif"
    pairs.write_text(f"slide_a,slide_b\n{os2_pair[0]},{os2_pair[1]}\n{other},{os2_pair[1]}\n")
    model = load_model("pathdistill-student", device="cpu")
    report = drain(iter_pair_robustness(model, pairs, top_k=10, min_tissue=0.0))
    good, bad = report.rows
    assert good["registration"] == "auto-affine" and float(good["ncc"]) > 0.9 and good["error"] == ""
    assert int(good["k"]) <= 10 and 0.0 <= float(good["topk_accuracy"]) <= 1.0
    assert bad["tiles"] == 0 and "registration looks wrong" in str(bad["error"])
    assert report.summary["pairs"] == 1 and report.summary["failed_pairs"] == 1
    assert report.params["mpp"] == model.spec.mpp and report.params["min_tissue"] == 0.0
    assert report.params["tile_px"] == model.spec.tile_px
    assert len({tuple(r) for r in report.rows}) == 1  # one set of columns


def test_widget_probe_uses_the_csv_patient_column_as_the_cli_does(
    histolab_tiles: Path, tmp_path: Path
) -> None:
    """The Evaluate widget's linear probe split tiles of one patient across train and test (tile-level folds)
    even when the CSV named each tile's patient."""
    from napari_pathdistill.evaluation.labelled_tiles import iter_embed_tiles, list_labelled_tiles
    from napari_pathdistill.evaluation.probes import linear_probe
    from napari_pathdistill.evaluation.runs import iter_linear_probe
    from napari_pathdistill.models.testing import tiny_model

    paths, labels = list_labelled_tiles(histolab_tiles)
    groups = np.asarray([f"pt{i % 4}" for i in range(len(paths))])
    lines = ["path,label,patient"] + [
        f"{p},{lab},{g}" for p, lab, g in zip(paths, labels, groups, strict=True)
    ]
    (tmp_path / "tiles.csv").write_text("\n".join(lines) + "\n")
    model = tiny_model("cnn", seed=2)
    rep = drain(iter_linear_probe(model, tmp_path / "tiles.csv"))
    assert rep.params["splits"] == "patient (StratifiedGroupKFold)" and rep.params["folds"] == 4
    feats = drain(iter_embed_tiles(model, paths))
    expected = linear_probe(feats, labels, n_splits=4, groups=groups).fold_scores
    assert [r["balanced_accuracy"] for r in rep.rows] == pytest.approx(expected.tolist())


def test_widget_probe_refuses_a_class_of_one_patient_before_embedding(
    histolab_tiles: Path, tmp_path: Path
) -> None:
    """Every kidney tile from one patient: the fold that tests that patient trains without kidney. The Evaluate
    widget's probe said so only after embedding every tile (minutes on a real tile set); the CLI checked first."""
    from napari_pathdistill.evaluation.runs import iter_linear_probe
    from napari_pathdistill.models.testing import tiny_model

    rows = ["path,label,patient"]
    for label, patients in (("liver", 2), ("tissue-", 2), ("kidney", 1)):
        rows += [f"{p},{label.strip('-')},{label}{i % patients}" for i, p in
                 enumerate(sorted(histolab_tiles.glob(f"{label}*")))]  # fmt: skip
    (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
    run = iter_linear_probe(tiny_model("vit"), tmp_path / "tiles.csv")
    with pytest.raises(EvaluationError, match="a training fold lacks a class"):
        next(run)  # before the first tile goes through the model


def test_teacher_student_shows_and_cancels_its_knn_overlap_step(histolab_tiles: Path) -> None:
    """After both models the run went quiet for the k-NN overlap (quadratic in the tiles: ~30 min at 100,000) and
    a Cancel pressed then was not seen until it ended. It is now a step of its own that Cancel stops."""
    import threading

    teacher, student = _tiny_models()
    cancel = threading.Event()
    run = iter_teacher_student(teacher, student, histolab_tiles, cancel=cancel)
    stages = _stages_until_cancel(run, cancel, "k-NN overlap")
    assert stages[-1] == "k-NN overlap" and "student" in stages


def test_linear_probe_shows_and_cancels_its_folds(histolab_tiles: Path) -> None:
    """After embedding, the probe's folds ran silently and a Cancel waited for all of them; they are now a step."""
    import threading

    from napari_pathdistill.evaluation.runs import iter_linear_probe

    model, _ = _tiny_models()
    cancel = threading.Event()
    stages = _stages_until_cancel(
        iter_linear_probe(model, histolab_tiles, cancel=cancel), cancel, "linear probe"
    )
    assert stages[-1] == "linear probe" and "embedding tiles" in stages


def test_teacher_student_shows_its_cka_step_and_a_cancel_there_writes_no_report(histolab_tiles: Path) -> None:
    """After the k-NN overlap, the linear CKA (three D x D products over the tiles: seconds at 100,000 x 1,536)
    ran silently in the report's summary, under the last 'k-NN overlap: 100/100', and a Cancel waited for it.
    It is now a step of its own, each product a cancellation point."""
    import threading

    teacher, student = _tiny_models()
    cancel = threading.Event()
    run = iter_teacher_student(teacher, student, histolab_tiles, cancel=cancel)
    stages = _stages_until_cancel(run, cancel, "linear CKA")
    assert stages[-1] == "linear CKA" and stages.count("linear CKA") == 1
