"""Smoke tests of the benchmarks/ scripts: each one's ``main`` runs end to end with tiny settings on the real data,
so the scripts cannot rot. No speed is asserted (timings belong to the scripts)."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from _fresh_process import run_python
from napari_pathdistill.models.registry import SHIPPED

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the scripts import their siblings by bare name)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def bench_modules():
    return _bench("embed"), _bench("student")


def test_embed_benchmark_main(bench_modules, cmu_svs: Path, tmp_path: Path, capsys) -> None:
    embed, _ = bench_modules
    models = "pathdistill-student,efficientnet-lite2-imagenet,h0-mini"
    res = embed.main(["--slide", str(cmu_svs), "--models", models, "--tiles", "3", "--batch-size", "2", "--repeats", "2",
                      "--matmul-n", "256", "--out", str(tmp_path)])  # fmt: skip
    rows = {r["model"]: r for r in res["rows"]}
    assert list(rows) == models.split(",")
    assert res["matmul_flops"] > 0 and "cpu" in res["machine"]
    for r in rows.values():
        assert r["n_tiles"] == 3 and r["batch"] == 2 and len(r["rounds"]) == 2
        assert math.isfinite(r["reference_speedup_model_only_paired"])
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("end_to_end", "model_only", "loader_only"))
        assert r["bound"] in ("model", "loader", "pipeline")
    # FlopCounterMode: ViT-B/14 at 224 px is ~45 GFLOPs/tile, the v2 student (ViT-Ti/16, 8 blocks) ~1.3,
    # EfficientNet-Lite2 ~1.2
    assert 40 < rows["h0-mini"]["gflops_per_tile"] < 50
    assert 0.5 < rows["pathdistill-student"]["gflops_per_tile"] < 2  # v5: 0.95 (5 blocks), v2/v4: 1.48
    assert 0.5 < rows["efficientnet-lite2-imagenet"]["gflops_per_tile"] < 2
    out = capsys.readouterr().out
    assert "speed-up" in out and "not applicable on CPU" in out
    assert rows["pathdistill-student"]["reference_speedup_end_to_end_paired"] == 1.0
    # the student's label comes from its shipped config.json, not a hard-coded name (it said ViT-Ti/14 for v5)
    kw = json.loads((SHIPPED / "pathdistill-student" / "config.json").read_text())["model_kwargs"]
    shape = f"ViT patch{kw['patch_size']} d{kw['embed_dim']} x{kw['depth']} h{kw['num_heads']}"
    assert rows["pathdistill-student"]["label"] == f"bundled student {shape}"
    assert rows["h0-mini"]["label"] == "H0-mini ViT-B/14 (random init)"
    with (tmp_path / "embed.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert json.loads((tmp_path / "embed.json").read_text())["rows"][0]["model"] == "pathdistill-student"
    assert (tmp_path / "embed.md").read_text().count("\n") == 5


def test_passes_cover_the_requested_tiles(bench_modules, cmu_svs: Path) -> None:
    from _throughput import passes, tile_grid

    grid, _ = tile_grid(cmu_svs, 224, 0.5, None)
    subs = passes(grid, 2 * len(grid) + 5)
    assert [len(s) for s in subs] == [len(grid), len(grid), 5]
    assert (subs[2].coords == grid.coords[:5]).all()


def test_student_benchmark_main(bench_modules, shared_data: Path, tmp_path: Path) -> None:
    _, student = bench_modules
    res = student.main(["--data", str(shared_data), "--models", "student,teacher,random", "--tissues", "os2-ki67",
                        "--max-tiles", "4", "--speed-tiles", "2", "--batch-size", "2", "--speed-repeats", "1",
                        "--n-splits", "2", "--probe-repeats", "1", "--matmul-n", "256",
                        "--out", str(tmp_path)])  # fmt: skip
    sec = res["sections"]
    assert set(sec) == {"speed", "robustness", "probes", "probes (paired by fold seed)", "agreement"}
    agree = sec["agreement"]
    cka = "linear CKA with teacher (OS-2, held out, 24 tiles)"
    inv = "linear CKA with teacher's per-tile mean over versions (OS-2, held out)"
    ceiling = "CKA ceiling of a perfectly invariant model (OS-2, held out, 4 tiles x versions)"
    assert agree["teacher"][cka] == pytest.approx(1.0) and 0 < agree["teacher"][ceiling] < 1
    # the ceiling is reached by the means
    assert agree["teacher"][inv] == pytest.approx(agree["teacher"][ceiling])
    assert all(0 <= agree[k][cka] <= 1 and 0 <= agree[k][inv] <= 1 for k in ("student", "random"))
    for key in ("student", "random"):
        rob = sec["robustness"][key]
        assert 0 <= rob["cross-scanner/top_1_accuracy"] <= 1
        assert rob["OS-2 real scanner pair/top_10_accuracy"] == rob["cross-scanner/top_10_accuracy"]
        assert 0 <= sec["probes"][key]["linear probe balanced accuracy"] <= 1
        assert sec["speed"][key]["tiles/s model only (pre-loaded batch)"] > 0
    # same architecture, different weights: identical FLOPs, different features
    assert sec["speed"]["student"]["GFLOPs per tile"] == sec["speed"]["random"]["GFLOPs per tile"]
    assert sec["speed"]["student"][student.PAIRED] == sec["speed"]["student"][student.PAIRED_E2E] == 1.0
    paired = sec["probes (paired by fold seed)"]
    ahead, behind = (
        f"linear probe: fold seeds with the student {w} this model" for w in ("ahead of", "behind")
    )
    assert paired["student"][ahead] == paired["student"][behind] == 0
    assert all(paired[k][ahead] + paired[k][behind] <= 1 for k in ("teacher", "random"))  # 1 fold seed
    n_wrong = "linear probe: tiles misclassified in >= half of the fold seeds (of 34)"
    assert all(
        len(res["probe_errors"][k]["linear probe"]) == sec["probes"][k][n_wrong] for k in sec["probes"]
    )
    md = (tmp_path / "student.md").read_text()
    assert (
        "student vs random-init student" in md and "leaderboard" in md and "misclassified out of fold" in md
    )
    assert "load average (1, 5, 15 min) at the start" in md and "at the end" in md
    assert (tmp_path / "robustness" / "random" / "metrics" / "summary.json").is_file()


def test_read_tiles_benchmark_compares_readers_on_the_same_positions(cmu_svs: Path) -> None:
    read_tiles = _bench("read_tiles")
    rows = dict(read_tiles.bench_readers(cmu_svs, n=4, tile=64, level=0))
    assert {"raw OpenSlide.read_region", "plugin Pyramid (openslide)"} <= set(rows)
    if importlib.util.find_spec("fastslide") is not None:
        assert {"plugin Pyramid (fastslide)", "raw fastslide.read_region"} <= set(rows)
    assert all(math.isfinite(r) and r > 0 for r in rows.values())


def test_train_throughput_benchmark_runs_both_pipelines(histolab_tiles: Path, tmp_path: Path) -> None:
    bench = _bench("train_throughput")
    out = tmp_path / "t.json"
    res = bench.main(["--config", "smoke_cpu", "--batch", "4", "--steps", "2", "--warmup", "1", "--workers", "0",
                      "--data", str(histolab_tiles), "--json", str(out)])  # fmt: skip
    assert set(res) == {"loader", "device"}
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait_frac"] <= 1 for r in res.values())
    assert all(r["steps"] == 2 and r["gpu_util"] is None for r in res.values())  # no GPU here: no samples
    saved = json.loads(out.read_text())
    assert saved["meta"]["config"] == "smoke_cpu" and saved["device"] == res["device"]


def test_train_throughput_profile_names_the_parts_of_a_step(histolab_tiles: Path, capsys) -> None:
    bench = _bench("train_throughput")
    one = bench.main(["--config", "smoke_cpu", "--batch", "4", "--steps", "1", "--warmup", "1", "--workers", "0",
                      "--data", str(histolab_tiles), "--pipelines", "device", "--profile", "1"])  # fmt: skip
    assert set(one) == {"device"}
    table = capsys.readouterr().out.split("profile of 1 device-pipeline steps")[1]
    assert all(name in table for name in ("data", "teacher", "student", "backward", "optimizer+ema"))


def test_gpu_util_sampler_keeps_the_samples_of_a_window() -> None:
    sampler = _bench("train_throughput").GpuUtilSampler()
    sampler.samples = [(1.0, 10.0), (2.0, 90.0), (3.0, 100.0), (9.0, 0.0)]  # (wall time, %)
    assert sampler.median(1.5, 3.5) == 95.0 and sampler.median(4.0, 5.0) is None


def test_student_arch_benchmark_times_every_candidate_against_the_teacher() -> None:
    bench = _bench("student_arch")
    res = bench.main(["--batch", "1", "--rounds", "1", "--threads", "1", "--size", "64"])
    assert set(res) == set(bench.CANDIDATES)
    assert res[bench.TEACHER]["x_teacher"] == 1.0
    assert all(r["tiles_s"] > 0 and r["params_m"] > 0 for r in res.values())


def test_feature_maps_benchmark_runs_on_a_small_matrix(capsys) -> None:
    bench = _bench("feature_maps")
    res = bench.main(["--n", "3000", "--dim", "64", "--k", "3", "--exact-rows", "500"])
    assert len(res) == 10 and all(sec >= 0 and (mb >= 0 or mb == -1) for sec, mb in res.values())
    out = capsys.readouterr().out
    assert out.count("time ratio, same run: ") == 3 and "load average before" in out


def test_geojson_export_benchmark_writes_the_same_text_both_ways() -> None:
    res = _bench("geojson_export").main(["--n", "500", "--repeats", "1"])  # asserts the texts are equal
    assert set(res) == {"clusters", "similar (threshold -1: all)"} and all(r > 0 for r in res.values())


@pytest.mark.napari
def test_feature_drop_benchmark_runs_on_a_small_file(tmp_path: Path, own_napari_app) -> None:
    """24 px tiles of CMU-1-Small-Region (11,316 rows, above the deferral threshold), 16-d features."""
    bench = _bench("feature_drop")
    res = bench.main(["--tile", "24", "--dim", "16", "--out", str(tmp_path)])
    before, now = res.values()
    assert before["map_at_return"] and not now["map_at_return"]  # the worker's map comes after open() returns
    assert all(r["stall_ms"] > 0 for r in res.values())


def test_slide_scale_embed_section_alone_needs_no_viewer(shared_data: Path, tmp_path: Path) -> None:
    """``--only-cuda`` runs (f) alone (here on the CPU, a rehearsal): two embeds of a generated zlib slide."""
    bench = _bench("slide_scale")
    res = bench.main(["--only-cuda", "--device", "cpu", "--width", "2400", "--height", "1800", "--compression",
                      "zlib", "--out", str(tmp_path), "--cuda-batch", "2", "--cuda-workers", "1"])  # fmt: skip
    assert "open" not in res and "embed" not in res  # no viewer sections
    runs = res["cuda_runs"]
    assert runs["warm-up"]["tiles"] == runs["measured"]["tiles"] == res["cuda_tiles"] > 0
    assert res["cuda_tiles_s"] > 0 and res["cuda_device"] == "cpu"
    # a progress stamp per batch of 2: a steady rate between the first and the last
    assert res["cuda_tiles"] > 3 * 2
    assert math.isfinite(res["cuda_steady_tiles_s"]) and res["cuda_steady_tiles_s"] > 0
    assert (tmp_path / "big_2400x1800_zlib.tif").exists()
    assert "(f) H0-mini-shape ViT-B/14 embed_slide" in (tmp_path / "slide_scale.md").read_text()


@pytest.mark.napari
def test_slide_scale_benchmark_quick_on_the_big_slide(big_slide, tmp_path: Path, own_napari_app) -> None:
    bench = _bench("slide_scale")
    path, _ = big_slide
    res = bench.main(["--quick", "--slide", str(path), "--out", str(tmp_path)])
    assert res["open"]["levels"] >= 3 and res["open"]["open_s"] > 0
    emb = res["embed"]
    assert emb["shown"] and not emb["cancelled"] and emb["tiles"] == emb["grid_tiles"] > 0
    assert emb["first_map_s"] is not None and 0 < emb["first_map_s"] <= emb["total_s"]
    assert res["reopen_widget"]["shown"] and res["reopen_widget"]["first_map_s"] is None  # cache: no live map
    assert res["click_tiles"] == 3000 and res["widget_click_ms"][0] > 0
    assert res["widget_click_ms"][1] >= res["widget_first_click_ms"] > 0  # the first click is in the max
    assert res["pan_real"][0] == emb["grid_tiles"] and res["pan_synthetic"][1] > 0 and res["pan_none"][1] > 0
    md = (tmp_path / "slide_scale.md").read_text()
    assert (
        "longest main-thread stall" in md
        and "load average at start" in md
        and "first click of the session" in md
        and "of no grid" in md
    )


@pytest.mark.napari
def test_rss_floor_benchmark_lists_the_steps_and_mapped_files() -> None:
    """``rss_floor.py`` in its own interpreter (what it measures is a fresh process): every step's row, the
    grouped mapped files, and the watched imports (no matplotlib in the viewer since the palette is a table)."""
    proc = run_python(BENCH / "rss_floor.py", "--batch", "2")
    out = proc.stdout
    for row in ("napari.Viewer(show=True)", "import the Embed widget's module", "the Embed dock built",
                "load_model('pathdistill-student')", "one forward of 2 tiles (worker thread)"):  # fmt: skip
        assert f"| {row} |" in out
    assert "| torch CPU libraries |" in out and "| largest mapped files |" in out
    imported = out.rsplit("imported:", 1)[1]
    assert "torch" in out and "matplotlib" not in imported


def test_tiles_cli_benchmark_prints_both_previews_and_the_command(cmu_svs: Path, capsys) -> None:
    _bench("tiles_cli").main(["--tiles", "400", "--before-tiles", "20", "--slide", str(cmu_svs)])
    out = capsys.readouterr().out
    assert "preview per tile: before" in out and "now" in out
    assert "pathdistill tiles CMU-1-Small-Region.svs: exit 0" in out and "peak RSS" in out


def test_robustness_benchmark_times_both_implementations_of_a_pair(capsys) -> None:
    res = _bench("robustness").main(["--n", "300", "--dim", "16", "--loop-queries", "20"])
    assert {"loop", "cpu"} <= set(res) and all(math.isfinite(t) and t > 0 for t in res.values())
    out = capsys.readouterr().out
    assert "extrapolated from 20 queries/direction" in out and "speed-up x" in out and "load average" in out


def test_registration_work_benchmark_prints_ratios_to_the_native_run(shared_data: Path, capsys) -> None:
    res = _bench("registration_work").main(["--quick", "--data", str(shared_data)])
    assert set(res) == {"asked 2", "upsampled 2", "ncc 256x256", "ncc 512x512"}
    assert all(math.isfinite(r) and r > 0 for r in res.values())
    out = capsys.readouterr().out
    assert "native" in out and "worked at" in out and "faster" in out and "load average" in out


@pytest.mark.napari
def test_evaluate_table_benchmark_fills_both_tables() -> None:
    """Two child processes (items, model) per row count; a failing child names its stderr."""
    (row,) = _bench("evaluate_table").main(["--rows", "300"])
    assert row["rows"] == 300 and math.isfinite(row["ratio"]) and row["ratio"] > 0
    assert all(row[k]["s"] > 0 for k in ("items", "model"))


@pytest.mark.napari
def test_grid_pan_benchmark_pans_over_each_kind_of_grid(own_napari_app, capsys) -> None:
    rows = _bench("grid_pan").main(["--tiles", "500", "--steps", "2", "--kinds", "none,labels"])
    assert [r["kind"] for r in rows] == ["none", "labels"] and all(
        r["tiles"] == rows[0]["tiles"] for r in rows
    )
    assert all(0 < r["median_s"] <= r["max_s"] for r in rows)
    assert rows[1]["vs_none"] == pytest.approx(rows[1]["median_s"] / rows[0]["median_s"])
    out = capsys.readouterr().out
    assert "load average before" in out and "labels  pan frame x" in out and "of no grid" in out


def test_tissue_memory_benchmark_measures_a_generated_slide(tmp_path: Path) -> None:
    res = _bench("tissue_memory").main(["--sizes", "2000x1500", "--dir", str(tmp_path)])
    (row,) = res["rows"]
    assert row["level0"] == [2000, 1500] and row["detect_mb"] >= 0 and 0 < row["tissue"] < 1
    assert len(res["load_before"]) == len(res["load_after"]) == 3
