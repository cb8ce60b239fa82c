"""Benchmark: which student architecture is faster than its teacher where users run it (CPU), side by side.

Candidates are ViTs with 4 registers (so attention maps keep working), random weights (speed does not depend
on them), timed model-only on one pre-loaded batch, interleaved round by round with the teacher
(``tf_efficientnet_lite2``, the offline teacher); the reported speed-up is the median of the per-round ratios,
robust to the load of a shared machine. Run from the repository root::

    python benchmarks/student_arch.py [--batch 16] [--rounds 5] [--threads 2] [--size 224]

Target (issue "Student v2"): >= 2x the teacher's tiles/s on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

VIT = "vit_small_patch14_reg4_dinov2"
#: name -> (timm architecture, kwargs); the v1 student is the bundled pathdistill-student's shape
CANDIDATES: dict[str, tuple[str, dict]] = {
    "teacher EfficientNet-Lite2": ("tf_efficientnet_lite2", {}),
    "v1 student ViT-Ti/14, 12 blocks": (VIT, {"embed_dim": 192, "depth": 12, "num_heads": 3}),
    "ViT-Ti/16, 12 blocks": (VIT, {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3}),
    "ViT-Ti/16, 8 blocks": (VIT, {"patch_size": 16, "embed_dim": 192, "depth": 8, "num_heads": 3}),
    "ViT-Ti/16, 6 blocks": (VIT, {"patch_size": 16, "embed_dim": 192, "depth": 6, "num_heads": 3}),
    "ViT-256/16, 6 blocks": (VIT, {"patch_size": 16, "embed_dim": 256, "depth": 6, "num_heads": 4}),
}
TEACHER = "teacher EfficientNet-Lite2"


def build(size: int) -> dict[str, torch.nn.Module]:
    """Every candidate with random weights at ``size`` px input, in eval mode."""
    import timm

    models = {}
    for name, (arch, kw) in CANDIDATES.items():
        extra = {"img_size": size, "mlp_ratio": 4.0} if arch == VIT else {}
        models[name] = timm.create_model(arch, pretrained=False, num_classes=0, **extra, **kw).eval()
    return models


def measure(models: dict[str, torch.nn.Module], batch: int, rounds: int, size: int) -> dict[str, dict]:
    """Model-only tiles/s per round for every model, rounds interleaved; speed-up = median per-round ratio."""
    x = torch.rand(batch, 3, size, size)
    rates: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m(x[:2])  # warm-up (allocations, kernels)
        for _ in range(rounds):
            for name, m in models.items():
                t0 = time.perf_counter()
                m(x)
                rates[name].append(batch / (time.perf_counter() - t0))
    out = {}
    for name, r in rates.items():
        ratios = [a / b for a, b in zip(r, rates[TEACHER], strict=True)]
        params = sum(p.numel() for p in models[name].parameters()) / 1e6
        out[name] = {
            "tiles_s": statistics.median(r),
            "x_teacher": statistics.median(ratios),
            "params_m": params,
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = measure(build(args.size), args.batch, args.rounds, args.size)
    print(f"model-only, batch {args.batch} x {args.size} px, {args.rounds} interleaved rounds, {args.threads} "
          f"threads; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    for name, r in res.items():
        print(
            f"  {name:34s} {r['tiles_s']:7.1f} tiles/s  x{r['x_teacher']:.2f} of the teacher  {r['params_m']:.1f} M"
        )
    return res


if __name__ == "__main__":
    main()
