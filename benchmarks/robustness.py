"""Time per slide pair of the PLISM metrics: chunked torch implementation vs a straightforward loop.

Usage: ``python benchmarks/robustness.py [--n 8139] [--dim 768] [--loop-queries 400]`` (``--n 300 --dim 16
--loop-queries 20``: a smoke run, tests/test_benchmarks.py)

Both run in the same process on the same synthetic matched features (n tiles x dim, a noisy copy as the
second slide). The loop baseline ranks the matched tile query by query (one (2n, D) mat-vec per query, as a
literal reading of the formula); it is timed on ``--loop-queries`` queries per direction and extrapolated to
2n queries (printed as such). The chunked version is timed on the full pair, on CPU and, when CUDA is present,
on the GPU. plismbench's own reference (16,278 tiles x 4,095 pairs; default 8,139-tile subset) needs ~1 h on a
T4; multiply the printed time per pair by 4,095 to compare. The load average is printed before and after (a
shared machine's other work slows both implementations alike; the ratios are what to compare).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from napari_pathdistill.metrics.pairs import pair_metrics


def loop_time_per_pair(a: np.ndarray, b: np.ndarray, n_queries: int) -> float:
    """Seconds for one pair with a per-query loop, extrapolated from ``n_queries`` queries per direction."""
    n = len(a)
    tiles = np.concatenate([a, b]).astype(np.float32)
    tiles /= np.linalg.norm(tiles, axis=1, keepdims=True)
    t0 = time.perf_counter()
    for direction in (0, 1):
        for i in range(n_queries):
            q, t = (i, n + i) if direction == 0 else (n + i, i)
            sims = tiles @ tiles[q]
            sims[q] = -np.inf
            _rank = int((sims >= sims[t]).sum())
    elapsed = time.perf_counter() - t0
    return elapsed * n / n_queries


def chunked_time(a: np.ndarray, b: np.ndarray, device: str, block: int, repeats: int = 2) -> float:
    pair_metrics(a[:256], b[:256], device=device)  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pair_metrics(a, b, device=device, block=block)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the comparison; returns the seconds per pair of each implementation (``loop``, ``cpu``, ``cuda``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8139, help="tiles per slide (plismbench default subset 8,139)")
    ap.add_argument("--dim", type=int, default=768, help="feature dimension (ViT-B CLS 768)")
    ap.add_argument("--loop-queries", type=int, default=400)
    ap.add_argument("--block", type=int, default=2048)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    b = a + rng.normal(scale=0.8, size=a.shape).astype(np.float32)
    load_before = os.getloadavg()
    print(
        f"n={args.n} tiles/slide, D={args.dim}, torch threads={torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    queries = min(args.loop_queries, args.n)
    res = {"loop": loop_time_per_pair(a, b, queries)}
    print(
        f"loop (numpy, per query; extrapolated from {queries} queries/direction): {res['loop']:8.2f} s/pair"
    )
    res["cpu"] = cpu = chunked_time(a, b, "cpu", args.block)
    print(f"chunked torch CPU:  {cpu:8.2f} s/pair   speed-up x{res['loop'] / cpu:.1f}   "
          f"4,095 pairs ~ {cpu * 4095 / 3600:.2f} h")  # fmt: skip
    if torch.cuda.is_available():
        res["cuda"] = gpu = chunked_time(a, b, "cuda", args.block, repeats=3)
        print(f"chunked torch CUDA: {gpu:8.3f} s/pair   speed-up x{res['loop'] / gpu:.0f} vs loop, x{cpu / gpu:.0f} "
              f"vs CPU   4,095 pairs ~ {gpu * 4095 / 60:.1f} min ({torch.cuda.get_device_name()})")  # fmt: skip
    after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")  # fmt: skip
    return res


if __name__ == "__main__":
    main()
