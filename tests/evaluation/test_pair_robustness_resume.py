"""The Evaluate widget's robustness run keeps finished pairs: a cancelled run reports them, a rerun resumes.

Real slides: tiatoolbox's H&E tile and two stain-normalised versions of it (the same tissue, other stains; 256 px
PNGs read at 0.5 um/px), tiled at 1 um/px by a tiny ViT: 4 tiles per slide.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.evaluation.pair_robustness import iter_pair_robustness, request_stamp
from napari_pathdistill.evaluation.plismbench_files import PairStore
from napari_pathdistill.evaluation.report import Report
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress, drain

GEOMETRY = {"fallback_mpp": 0.5, "mpp": 1.0}


@pytest.fixture
def stain_pairs(shared_data: Path, tmp_path: Path) -> Path:
    """A pairs CSV of copies (their mtimes are the test's to change): source vs Macenko, source vs Reinhard."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("source_image.png", "norm_macenko.png", "norm_reinhard.png"):
        shutil.copy(shared_data / "stain_norm" / "tiatoolbox" / name, slides / name)
    csv = slides / "pairs.csv"
    csv.write_text("slide_a,slide_b\nsource_image.png,norm_macenko.png\nsource_image.png,norm_reinhard.png\n")
    return csv


def test_cancel_reports_the_finished_pairs_and_a_rerun_resumes_them(
    stain_pairs: Path, tmp_path: Path
) -> None:
    """Cancelling after the first pair dropped it (`Cancelled`, no rows), where `eval robustness` resumes."""
    model, cancel, items = tiny_model(), threading.Event(), []
    store = PairStore(tmp_path / "out")
    with pytest.raises(Cancelled, match="after 1 of 2 pairs"):
        for item in iter_pair_robustness(model, stain_pairs, store=store, cancel=cancel, **GEOMETRY):
            items.append(item)
            if isinstance(item, Progress) and item.stage == "pair 2/2":
                cancel.set()
    (partial,) = [i for i in items if isinstance(i, Report)]
    assert partial.params["cancelled"] == (1, 2) and len(partial.rows) == 1
    first = partial.rows[0]
    assert first["slide_b"] == "norm_macenko.png" and first["tiles"] == 4 and first["error"] == ""
    assert partial.summary["median_mean_cosine"] == pytest.approx(first["mean_cosine"])
    # the pair's own steps were shown, not only "pair 1/2" for its whole registration and embedding
    stages = {i.stage for i in items if isinstance(i, Progress)}
    assert {"pair 1/2: registration", "pair 1/2: embedding A", "pair 1/2: embedding B"} <= stages
    (saved,) = [p.name for p in store.dir.iterdir()]
    assert saved.startswith("source_image.png---norm_macenko.png.") and saved.endswith(".json")

    full = drain(iter_pair_robustness(model, stain_pairs, store=PairStore(tmp_path / "out"), **GEOMETRY))
    assert full.params["resumed"] == 1 and "cancelled" not in full.params
    assert full.rows[0] == first and full.rows[1]["tiles"] == 4
    assert full.params["min_tissue"] == 0.5 and full.params["fallback_mpp"] == 0.5  # the tiling, recorded

    again = drain(iter_pair_robustness(model, stain_pairs, store=PairStore(tmp_path / "out"), **GEOMETRY))
    assert again.params["resumed"] == 2 and again.rows == full.rows
    assert again.summary == pytest.approx(full.summary, nan_ok=True)

    # a slide rewritten since (its mtime): its pair is computed again, the other resumed
    macenko = stain_pairs.parent / "norm_macenko.png"
    st = macenko.stat()
    os.utime(macenko, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    redo = drain(iter_pair_robustness(model, stain_pairs, store=PairStore(tmp_path / "out"), **GEOMETRY))
    assert redo.params["resumed"] == 1 and redo.rows[0]["mean_cosine"] == pytest.approx(first["mean_cosine"])


def test_the_resume_stamp_tells_models_and_tilings_apart() -> None:
    """Another checkpoint of the same name, another top-k or another tiling never reads a saved pair back."""
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    kw = {"tile_px": 56, "mpp": 1.0}
    assert a.spec.name == b.spec.name and request_stamp(a, 10, kw) != request_stamp(b, 10, kw)
    assert request_stamp(a, 10, kw) == request_stamp(tiny_model(seed=0), 10, dict(kw))
    assert request_stamp(a, 10, kw) != request_stamp(a, 5, kw)
    assert request_stamp(a, 10, kw) != request_stamp(a, 10, {**kw, "min_tissue": 0.2})
    assert request_stamp(a, 10, kw)["precision"] == "float32" and request_stamp(a, 10, kw)["subset"] == "all"


def test_same_named_slides_of_two_folders_resume_each_their_own_pair(
    shared_data: Path, tmp_path: Path
) -> None:
    """Two cohorts' folders with the same slide names (scanner A/slide_01.svs vs B/slide_01.svs, twice): both
    pairs were saved to one ``<a>---<b>.json``, each overwriting the other, so a rerun resumed neither (their
    stamps hold the paths: results never mixed, work was lost). Files of an earlier version, named by the slides
    alone, still resume."""
    for cohort in ("cohort1", "cohort2"):
        (tmp_path / cohort).mkdir()
        for name in ("source_image.png", "norm_macenko.png"):
            shutil.copy(shared_data / "stain_norm" / "tiatoolbox" / name, tmp_path / cohort / name)
    csv = tmp_path / "pairs.csv"
    csv.write_text("slide_a,slide_b\n" + "".join(f"{c}/source_image.png,{c}/norm_macenko.png\n"
                                                 for c in ("cohort1", "cohort2")))  # fmt: skip
    model, out = tiny_model(), tmp_path / "out"
    first = drain(iter_pair_robustness(model, csv, store=PairStore(out), **GEOMETRY))
    assert first.params["resumed"] == 0 and [r["tiles"] for r in first.rows] == [4, 4]
    assert len(list((out / "pairs").iterdir())) == 2
    again = drain(iter_pair_robustness(model, csv, store=PairStore(out), **GEOMETRY))
    assert again.params["resumed"] == 2 and again.rows == first.rows

    # earlier versions' files are read back: cohort 2's named by the slides alone, cohort 1's keyed by the paths
    # alone (before the key held the request)
    from napari_pathdistill.evaluation.pair_robustness import pair_key

    store = PairStore(out)
    a2, b2 = tmp_path / "cohort2" / "source_image.png", tmp_path / "cohort2" / "norm_macenko.png"
    a1, b1 = tmp_path / "cohort1" / "source_image.png", tmp_path / "cohort1" / "norm_macenko.png"
    request = request_stamp(model, 10, {"tile_px": model.spec.tile_px, **GEOMETRY})
    store._path(a2.name, b2.name, pair_key(a2, b2, request)).rename(store._path(a2.name, b2.name))
    store._path(a1.name, b1.name, pair_key(a1, b1, request)).rename(
        store._path(a1.name, b1.name, pair_key(a1, b1))
    )
    assert pair_key(a1, b1) != pair_key(a2, b2) and pair_key(a1, b1) != pair_key(a1, b1, request)
    old = drain(iter_pair_robustness(model, csv, store=PairStore(out), **GEOMETRY))
    assert old.params["resumed"] == 2 and old.rows == first.rows


def test_two_models_saving_to_one_folder_keep_each_their_pairs(stain_pairs: Path, tmp_path: Path) -> None:
    """Comparing two models with one "save reports to" folder: both wrote ``<a>---<b>.<key>.json`` (the key held
    only the paths), each run overwrote the other's pairs, and going back to the first model recomputed every
    pair (found driving the Evaluate widget: model A, model B, model A again resumed 0 of 1). The key now holds
    the request too, so each model's pairs stay and both resume."""
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    out = tmp_path / "out"
    first_a = drain(iter_pair_robustness(a, stain_pairs, store=PairStore(out), **GEOMETRY))
    first_b = drain(iter_pair_robustness(b, stain_pairs, store=PairStore(out), **GEOMETRY))
    assert first_b.params["resumed"] == 0 and len(list((out / "pairs").iterdir())) == 4
    again_a = drain(iter_pair_robustness(a, stain_pairs, store=PairStore(out), **GEOMETRY))
    again_b = drain(iter_pair_robustness(b, stain_pairs, store=PairStore(out), **GEOMETRY))
    assert again_a.params["resumed"] == 2 and again_a.rows == first_a.rows
    assert again_b.params["resumed"] == 2 and again_b.rows == first_b.rows
    assert first_a.rows[0]["mean_cosine"] != first_b.rows[0]["mean_cosine"]


def test_pairs_embedded_in_another_autocast_dtype_are_not_resumed(stain_pairs: Path, tmp_path: Path) -> None:
    """The stamp held the weights but not the embedding's autocast dtype: pairs embedded on the CPU (float32) were
    resumed by a run on CUDA (bfloat16 autocast, ``amp="auto"``), mixing precisions in one report (found reading
    request_stamp while driving the widget; on OS-2 the tiny ViT's mean cosine is 0.92474 in float32, 0.92480 in
    bfloat16). The dtype is now stamped and recorded in the report."""
    from napari_pathdistill.models.embedding_model import EmbeddingModel

    fp32 = tiny_model(seed=0)
    bf16 = EmbeddingModel(fp32.spec, fp32.module, "cpu", amp="bf16")  # the autocast a CUDA run takes
    assert fp32.weights_id == bf16.weights_id
    out = tmp_path / "out"
    first = drain(iter_pair_robustness(fp32, stain_pairs, store=PairStore(out), **GEOMETRY))
    other = drain(iter_pair_robustness(bf16, stain_pairs, store=PairStore(out), **GEOMETRY))
    assert other.params["resumed"] == 0
    assert (first.params["embedding_dtype"], other.params["embedding_dtype"]) == ("float32", "bfloat16")
    again = drain(iter_pair_robustness(fp32, stain_pairs, store=PairStore(out), **GEOMETRY))
    assert again.params["resumed"] == 2 and again.rows == first.rows
