"""Teacher-vs-student ``compare`` report with two real (tiny, random) timm ViTs of different widths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from matplotlib.figure import Figure

from napari_pathdistill.evaluation.compare import iter_compare
from napari_pathdistill.evaluation.report import Cell, Report
from napari_pathdistill.metrics.agreement import linear_cka


class TimmEmbedder:
    def __init__(self, width: int, depth: int, seed: int):
        torch.manual_seed(seed)
        self.module = timm.create_model(
            "vit_small_patch14_reg4_dinov2",
            img_size=56,
            embed_dim=width,
            depth=depth,
            num_heads=4,
            num_classes=0,
        ).eval()

    def _x(self, tiles):
        return (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.25

    def embed(self, tiles):
        with torch.no_grad():
            return self.module(self._x(tiles)).numpy()


def cls_attention(model: TimmEmbedder, tiles: np.ndarray) -> np.ndarray:
    """Last-block CLS->patch attention (mean over heads), computed from the block's qkv."""
    x = model._x(tiles)
    blocks = model.module.blocks
    with torch.no_grad():
        h = model.module.norm_pre(model.module._pos_embed(model.module.patch_embed(x)))
        for blk in blocks[:-1]:
            h = blk(h)
        attn = blocks[-1].attn
        b, n, c = h.shape
        qkv = (
            attn.qkv(blocks[-1].norm1(h))
            .reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        a = (qkv[0] @ qkv[1].transpose(-2, -1) * attn.scale).softmax(-1).mean(1)  # (B, n, n)
    g = int(np.sqrt(n - 5))
    return a[:, 0, 5:].reshape(b, g, g).numpy()


def test_compare_report(tmp_path):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (12, 56, 56, 3), dtype=np.uint8)
    teacher, student = TimmEmbedder(128, 3, 0), TimmEmbedder(64, 1, 1)
    items = list(
        iter_compare(
            teacher,
            student,
            tiles,
            attention=cls_attention,
            batch_size=4,
            robustness={"teacher": {"top_10_accuracy__all": 0.5}},
        )
    )
    rep = items[-1]
    assert isinstance(rep, Report)
    assert rep.summary["linear_cka"] == pytest.approx(
        linear_cka(teacher.embed(tiles), student.embed(tiles)), rel=1e-5
    )
    assert rep.arrays["attention_r"].shape == (12,) and np.isfinite(rep.arrays["attention_r"]).all()
    assert rep.summary["teacher_tiles_per_s"] > 0 and rep.summary["speed_ratio_student_over_teacher"] > 0
    # self-comparison: CKA 1 and identical attention
    same = list(iter_compare(teacher, teacher, tiles, attention=cls_attention))[-1]
    assert same.summary["linear_cka"] == pytest.approx(1.0, abs=1e-6) and np.allclose(
        same.arrays["attention_r"], 1.0
    )
    paths = rep.save(tmp_path)
    assert paths["png"].stat().st_size > 1000
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["linear_cka"] == pytest.approx(rep.summary["linear_cka"])
    assert "robustness/teacher/top_10_accuracy__all" in paths["csv"].read_text()


def test_report_save_writes_all_three_files_atomically(tmp_path):
    rows = [{"tile": "a.png", "v": 0.5}, {"tile": "b.png", "v": np.float32(0.25), "extra": 3}]
    rep = Report(
        "teacher_student", rows, {"linear_cka": np.float64(0.9)}, {"n": np.int64(2)}, {"r": np.ones(2)}
    )
    paths = rep.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "teacher_student.csv",
        "teacher_student.json",
        "teacher_student.png",
    ]
    assert paths["csv"].read_text().splitlines() == ["tile,v,extra", "a.png,0.5,", "b.png,0.25,3"]
    data = json.loads(paths["json"].read_text())
    assert data["rows"][1]["v"] == 0.25 and data["params"]["n"] == 2 and data["arrays"]["r"] == [1.0, 1.0]
    assert data["summary"] == {"linear_cka": 0.9} and paths["png"].stat().st_size > 1000


@pytest.mark.parametrize(
    ("name", "params", "rows", "expected"),
    [
        (
            "teacher_student",
            {"teacher": "effnet", "student": "vit-s"},
            13,
            "teacher student\neffnet vs vit-s",
        ),
        ("robustness", {"model": "vit-s", "top_k": [1]}, 3, "robustness\nvit-s"),
        ("linear_probe", {"model": "vit-s"}, 5, "linear probe\nvit-s"),
    ],
)
def test_report_figures_name_the_models(name, params, rows, expected) -> None:
    """A saved PNG must say which model(s) it measured: the title was only "teacher student"."""
    from matplotlib.figure import Figure

    if name == "linear_probe":
        table = [{"fold": i, "balanced_accuracy": 0.5 + 0.05 * i} for i in range(rows)]
    else:
        table = [{"tile": f"t{i}.png", "label": "tissue", "knn5_overlap": i / rows} for i in range(rows)]
    fig = Figure()
    Report(name, table, {}, params).plot(fig)
    assert fig.get_suptitle() == expected  # the figure's title (centred on it, wrapped to its width)


def _strict(text: str) -> object:
    """json.loads refusing the NaN / Infinity tokens, as jq or a browser's JSON.parse do."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_saved_json_is_strict_json_nan_as_null(tmp_path):
    """A failed pair (NaN cosine) or an undefined median was written as the bare token NaN: not JSON, so jq and
    JSON.parse refused the whole robustness.json."""
    nan = float("nan")
    rep = Report(
        "robustness",
        [{"slide_a": "a", "slide_b": "b", "tiles": 0, "mean_cosine": nan, "error": "no tissue"}],
        {"median_mean_cosine": 0.5, "median_topk_accuracy": nan},
        {"top_k": 10},
        {"attention_r": np.array([0.5, np.nan, np.inf], dtype=np.float32)},
    )
    data = _strict(rep.save(tmp_path)["json"].read_text())
    assert data["rows"][0]["mean_cosine"] is None and data["summary"]["median_topk_accuracy"] is None
    assert data["summary"]["median_mean_cosine"] == 0.5 and data["arrays"]["attention_r"] == [0.5, None, None]


def test_a_report_of_many_failed_pairs_still_plots(tmp_path):
    """More than 12 rows are drawn as a histogram; when every row was NaN (a robustness run cancelled after 13
    pairs that all failed, e.g. slides on an unmounted drive, whose partial report the dock shows) numpy's
    histogram raised "autodetected range of [nan, nan] is not finite" in the dock, and Report.save too."""
    nan = float("nan")
    rows: list[dict[str, Cell]] = [
        {"slide_a": f"s{i}.svs", "slide_b": f"t{i}.svs", "tiles": 0, "mean_cosine": nan, "error": "not found"}
        for i in range(13)
    ]
    report = Report("robustness", rows, {"median_mean_cosine": nan}, {"model": "m", "cancelled": (13, 40)})
    fig = Figure()
    report.plot(fig)
    assert fig.axes[0].get_title() == "13 of 13 rows failed or n/a"
    rows[0] = {**rows[0], "tiles": 5, "mean_cosine": 0.8, "error": ""}
    saved = Report("robustness", rows, {"median_mean_cosine": 0.8}, {"model": "m"}).save(tmp_path)
    assert saved["png"].stat().st_size > 0
