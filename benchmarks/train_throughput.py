"""Benchmark: distillation step throughput with the two data pipelines, side by side in one run.

``loader``: per-sample torchvision views in DataLoader workers (the trainer's original path); ``device``: tiles
decoded once into a memory-mapped store, views made in batches on the training device. For each it runs the same
config for ``--steps`` steps (after ``--warmup``) and prints images/s, the fraction of step time spent waiting for
(or making) the batch, and the GPU utilisation where CUDA is present. Run from the repository root::

    python benchmarks/train_throughput.py [--config student_from_efficientnet] [--device cpu|cuda]
        [--batch 32] [--steps 8] [--workers 2] [--data ../shared/data/tiles/histolab_tiles] [--pipelines loader,device]
        [--json results.json] [override ...]

Target on one H100/H200 for the bundled config: >= 3,000 images/s and < 10 % data wait; on CPU the data path
must not be the bottleneck either (data-wait fraction well under a half).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _data import DATA

DEFAULT_DATA = DATA / "tiles" / "histolab_tiles"


class GpuUtilSampler:
    """GPU utilisation (``nvidia-smi``, %) sampled every ``period`` s in a thread, with wall-clock stamps.

    ``median(t0, t1)`` is the median of the samples taken between two wall-clock times (the measured steps),
    so model building and the tile store's writing do not dilute it. Without ``nvidia-smi`` it samples nothing.
    """

    def __init__(self, period: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(period):
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout
                self.samples.append((time.time(), float(out.split()[0])))
            except Exception:
                return

    def __enter__(self) -> GpuUtilSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def median(self, t0: float, t1: float) -> float | None:
        vals = [u for t, u in self.samples if t0 <= t <= t1]
        return statistics.median(vals) if vals else None


def run(pipeline: str, args: argparse.Namespace, out: Path) -> dict[str, float | None]:
    """Train ``args.warmup + args.steps`` steps with ``pipeline``; medians over the measured steps."""
    from pathdistill_train.config import load_config
    from pathdistill_train.train.train import train

    overrides = [
        f"output_dir={out / pipeline}",
        f"data.tile_dirs=[{args.data}]",
        "data.slides=[]",
        "student.init_weights=",  # throughput only: a random student (the v2 recipe warm-starts from v1)
        "student.init_blocks=null",
        f"data.pipeline={pipeline}",
        f"data.tile_store={out / 'tile_store.npy'}",
        f"train.device={args.device}",
        f"train.batch_size_per_gpu={args.batch}",
        f"train.num_workers={args.workers}",
        f"train.max_steps={args.warmup + args.steps}",
        "train.checkpoint_every=1000000",
        "train.log_every=1000000",
        "train.tensorboard=false",
        "train.sync_timing=true",  # data wait includes the views made on the GPU
        *args.overrides,
    ]
    with GpuUtilSampler() as gpu:
        rows = train(load_config(args.config, overrides))[args.warmup :]
    t_first = rows[0]["time"] - args.batch / rows[0]["images_per_s"]  # the first measured step's start
    return {
        "images_per_s": statistics.median(r["images_per_s"] for r in rows),
        "data_wait_frac": statistics.median(r["data_wait_frac"] for r in rows),
        "gpu_util": gpu.median(t_first, rows[-1]["time"]),
        "steps": len(rows),
    }


#: the ``record_function`` ranges of a training step (training/pathdistill_train: train.py, distill_meta_arch.py)
RANGES = ("data", "teacher", "student", "student_augment", "losses", "backward", "optimizer+ema")


def profile(args: argparse.Namespace, out: Path) -> str:
    """``args.profile`` device-pipeline steps (after the warm-up) under ``torch.profiler``: where a step goes.

    Returns the profiler's table of the named ranges (``data``, ``teacher``, ``student``, ``student_augment``,
    ``losses``, ``backward``, ``optimizer+ema``) and the costliest ops, by device time on CUDA, else CPU time.
    """
    import torch
    from torch.profiler import ProfilerActivity

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    quick = argparse.Namespace(**{**vars(args), "steps": args.profile})
    with torch.profiler.profile(activities=acts) as prof:
        run("device", quick, out / "profiled")
    dev = "cuda" if args.device == "cuda" else "cpu"
    stats = prof.key_averages()  # aggregated once: it walks every recorded event
    # the ranges' own table (same EventList settings, narrowed to RANGES): in a top-N of every event, model
    # building or a busy CPU could push a range out (seen once under load in tests/test_benchmarks.py)
    named = copy.copy(stats)
    named[:] = [e for e in stats if e.key in RANGES]
    ranges = named.table(sort_by=f"{dev}_time_total", row_limit=len(RANGES))
    ops = stats.table(sort_by=f"self_{dev}_time_total", row_limit=15)
    return (
        f"profile of {args.profile} device-pipeline steps (with model building and warm-up):\n{ranges}\n{ops}"
    )


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="student_from_efficientnet")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of tile images")
    p.add_argument("--pipelines", default="loader,device", help="comma-separated: loader, device")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--profile", type=int, default=0, help="then N more device-pipeline steps under torch.profiler"
    )
    p.add_argument("overrides", nargs="*", help="extra config key=value overrides")
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in args.pipelines.split(","):
            results[pipeline] = run(pipeline, args, Path(tmp))
        table = profile(args, Path(tmp)) if args.profile > 0 else None
    print(f"{args.config} on {args.device}, batch {args.batch}, {args.steps} measured steps, "
          f"{args.workers} loader workers; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    for name, r in results.items():
        util = "n/a" if r["gpu_util"] is None else f"{r['gpu_util']:.0f} %"
        print(f"  {name:7s} {r['images_per_s']:8.1f} images/s   data wait {100 * r['data_wait_frac']:5.1f} % of "
              f"step time   GPU utilisation {util} (median over the measured steps)")  # fmt: skip
    if {"loader", "device"} <= results.keys():
        ratio = results["device"]["images_per_s"] / results["loader"]["images_per_s"]  # type: ignore[operator]
        print(f"  device / loader images/s = {ratio:.2f}")
    if table:
        print(table)
    if args.json:
        meta = {"config": args.config, "device": args.device, "batch": args.batch, "steps": args.steps,
                "workers": args.workers, "load": os.getloadavg(), "overrides": args.overrides}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, **results}, indent=1))
    return results


if __name__ == "__main__":
    main()
