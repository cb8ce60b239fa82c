"""Throughput measurements shared by benchmarks/embed.py and benchmarks/student.py (see embed.py's docstring).

Every function times one thing on an ``napari_pathdistill.models.EmbeddingModel``: the machine's matmul peak,
FLOPs per tile (``FlopCounterMode``), the reading thread alone, ``iter_embeddings`` end to end over a real
slide's tile grid (passes on freshly opened slides) and the model alone on a pre-loaded tensor batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def machine(device: torch.device) -> dict:
    """CPU model, logical CPUs, torch threads and versions (and the GPU name on CUDA)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["code"] = code_version()
    info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    return info


def code_version() -> str:
    """``git describe`` of the repository, ``-dirty`` when the package sources have uncommitted changes."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "src", "benchmarks"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU (fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_flops(device: torch.device, n: int | None = None, repeats: int = 5) -> float:
    """Best FLOP/s of an (n, n) @ (n, n) matmul: fp32 on CPU (n=4096), bf16 on GPU (n=8192)."""
    n = n or (8192 if device.type == "cuda" else 4096)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


@torch.inference_mode()
def flops_per_tile(model) -> float:
    """FLOPs of one tile through ``forward_tokens`` + ``pool`` (FlopCounterMode: matmuls, convs, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    px = model.spec.tile_px
    x = torch.zeros(1, 3, px, px, device=model.device)
    with FlopCounterMode(display=False) as counter, autocast(model.device):
        model.pool(model.forward_tokens(x))
    return float(counter.get_total_flops())


def tile_grid(slide: Path, tile_px: int, mpp: float, mpp_override: float | None):
    """Tissue tile grid of the slide (computed once) and the seconds tissue detection + tiling took."""
    from napari_pathdistill.wsi import open_pyramid
    from napari_pathdistill.wsi.tiling import make_tile_grid

    t0 = time.perf_counter()
    with open_pyramid(slide, fallback_mpp=mpp_override) as pyr:
        grid = make_tile_grid(pyr, tile_px=tile_px, mpp=mpp)
    if len(grid) == 0:
        raise SystemExit(f"{slide}: no tissue tiles at {tile_px} px / {mpp} um/px")
    return grid, time.perf_counter() - t0


def passes(grid, n_tiles: int) -> list:
    """Sub-grids covering ``n_tiles`` tiles: whole passes over the grid, the last one cut short."""
    out, left = [], n_tiles
    while left > 0:
        k = min(left, len(grid))
        out.append(
            dataclasses.replace(grid, coords=grid.coords[:k], tissue_fraction=grid.tissue_fraction[:k])
        )
        left -= k
    return out


def loader_only(slide: Path, grid, n_tiles: int, batch: int, workers: int) -> float:
    """tiles/s of ``read_tiles`` alone, batches read by ``workers`` threads, each pass on a fresh slide."""
    from concurrent.futures import ThreadPoolExecutor

    from napari_pathdistill.wsi import open_pyramid
    from napari_pathdistill.wsi.tiling import read_tiles

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for sub in passes(grid, n_tiles):
            with open_pyramid(slide) as pyr:
                spans = [range(s, min(len(sub), s + batch)) for s in range(0, len(sub), batch)]
                list(pool.map(lambda idx, pyr=pyr, sub=sub: read_tiles(pyr, sub, idx), spans))
    return n_tiles / (time.perf_counter() - t0)


def end_to_end(model, slide: Path, grid, n_tiles: int, batch: int, workers: int) -> float:
    """tiles/s of ``iter_embeddings`` (read in a background thread + embed), passes on fresh slides."""
    from napari_pathdistill.inference.embed import EmbeddingResult, iter_embeddings
    from napari_pathdistill.wsi import open_pyramid

    done = 0
    sync(model.device)
    t0 = time.perf_counter()
    with autocast(model.device):
        for sub in passes(grid, n_tiles):
            with open_pyramid(slide) as pyr:
                for item in iter_embeddings(model, pyr, sub, batch_size=batch, num_workers=workers):
                    if isinstance(item, EmbeddingResult):
                        done += len(item.features)
    sync(model.device)
    assert done == n_tiles, (done, n_tiles)
    return n_tiles / (time.perf_counter() - t0)


@torch.inference_mode()
def model_only(model, tiles: np.ndarray, n_tiles: int, batch: int) -> float:
    """tiles/s of ``pool(forward_tokens(x))`` on a pre-loaded, normalised (batch, 3, H, W) tensor of real tiles."""
    reps = np.resize(np.arange(len(tiles)), batch)
    x = model.preprocess(tiles[reps])
    steps = math.ceil(n_tiles / batch)
    with autocast(model.device):
        sync(model.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.pool(model.forward_tokens(x)).float()
        sync(model.device)
    return steps * batch / (time.perf_counter() - t0)


def warm_up(model, tiles: np.ndarray, batch: int) -> None:
    """One batch through ``embed`` (lazy init, allocator, cuDNN/oneDNN choices) before any timing."""
    reps = np.resize(np.arange(len(tiles)), batch)
    with autocast(model.device):
        model.embed(tiles[reps])
    sync(model.device)


@dataclasses.dataclass
class Row:
    """One model's measurements: best tiles/s over its rounds, every round kept in ``rounds``."""

    model: str
    label: str
    params_m: float
    gflops_per_tile: float
    batch: int
    n_tiles: int
    repeats: int = 1
    end_to_end: float = 0.0
    model_only: float = 0.0
    loader_only: float = 0.0
    rounds: list[dict] = dataclasses.field(default_factory=list)

    def spread(self, which: str) -> tuple[float, float]:
        """(min, max) tiles/s of ``which`` over the rounds."""
        vals = [r[which] for r in self.rounds] or [getattr(self, which)]
        return min(vals), max(vals)

    def fraction(self, peak: float, which: str = "model_only") -> float:
        """Achieved FLOP/s of ``which`` (tiles/s x FLOPs/tile) over the measured matmul FLOP/s."""
        return getattr(self, which) * self.gflops_per_tile * 1e9 / peak

    @property
    def bound(self) -> str:
        """What limits end to end: ``model`` (>= 80 % of model only), else ``loader`` (the reading thread alone
        is not 25 % faster than the model), else ``pipeline`` (reading and compute overlap badly or share cores).
        """
        if self.end_to_end >= 0.8 * self.model_only:
            return "model"
        return "loader" if self.loader_only < 1.25 * self.model_only else "pipeline"


def paired_ratio(ref: Row, row: Row, which: str) -> float:
    """Median over the rounds both rows ran of ``ref`` tiles/s / ``row`` tiles/s (measured minutes apart at
    most, so slow drifts of the machine's load cancel)."""
    pairs = [a[which] / b[which] for a, b in zip(ref.rounds, row.rounds)]
    return float(np.median(pairs)) if pairs else float("nan")


@dataclasses.dataclass
class Job:
    """A model ready to be timed: its row, the tile grid and a batch of real tiles for model-only runs."""

    model: object
    row: Row
    grid: object
    tiles: np.ndarray


def prepare(model, label: str, slide: Path, grid, n_tiles: int, batch: int, repeats: int) -> Job:
    """Read one batch of real tiles, count FLOPs per tile and warm the model up (nothing timed yet)."""
    from napari_pathdistill.wsi import open_pyramid
    from napari_pathdistill.wsi.tiling import read_tiles

    with open_pyramid(slide) as pyr:
        tiles = read_tiles(pyr, grid, range(min(len(grid), batch)))
    gflops = flops_per_tile(model) / 1e9
    warm_up(model, tiles, batch)
    params = sum(p.numel() for p in model.module.parameters()) / 1e6
    return Job(model, Row(model.spec.name, label, params, gflops, batch, n_tiles, repeats), grid, tiles)


def time_round(job: Job, slide: Path, workers: int) -> dict[str, float]:
    """One round of the three timings of a job: loader only, end to end, model only (tiles/s)."""
    r = job.row
    return {
        "loader_only": loader_only(slide, job.grid, r.n_tiles, r.batch, workers),
        "end_to_end": end_to_end(job.model, slide, job.grid, r.n_tiles, r.batch, workers),
        "model_only": model_only(job.model, job.tiles, r.n_tiles, r.batch),
    }


def bench_all(
    jobs: list[Job], slide: Path, workers: int, device: torch.device, matmul_n: int | None
) -> float:
    """Time every job round-robin (round r: the matmul peak, then each job with ``repeats > r``).

    Interleaving gives every model the same exposure to other load on the machine; each row keeps its best
    round (the least disturbed, the usual micro-benchmark convention) and every round in ``rounds`` (for
    :func:`paired_ratio`). Returns the best matmul FLOP/s.
    """
    peak = 0.0
    for r in range(max(j.row.repeats for j in jobs)):
        peak = max(peak, matmul_flops(device, matmul_n))
        order = jobs if r % 2 == 0 else jobs[::-1]  # alternate, so no model always runs right after another
        for job in (j for j in order if r < j.row.repeats):
            m = time_round(job, slide, workers)
            job.row.rounds.append(m)
            for k, v in m.items():
                setattr(job.row, k, max(getattr(job.row, k), v))
            print(f"  round {r + 1}: {job.row.label}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()),
                  flush=True)  # fmt: skip
    return peak
