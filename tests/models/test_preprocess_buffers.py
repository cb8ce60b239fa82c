"""``EmbeddingModel.preprocess`` normalises one float32 batch buffer in place.

Found by the peak-RSS probe of the slide-scale benchmark (docs/benchmarks.md, 2026-12-07): the out-of-place
``(x / 255 - mean) / std`` allocated four (B, 3, H, W) float32 buffers per batch (19 MB each for 32 tiles of
224 px), two to three alive at once, and lifted the Embed widget's peak RSS by ~60 MB. torch's profiler counts the
bytes each op allocates itself, so the count is exact, not a timing or an RSS reading.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from napari_pathdistill.models.testing import tiny_model


def _tiles(cmu_rgb: np.ndarray, n: int = 4, px: int = 56) -> np.ndarray:
    """``n`` real H&E tiles of ``px`` px from CMU-1-Small-Region, along its diagonal."""
    return np.stack([cmu_rgb[i * px : (i + 1) * px, i * px : (i + 1) * px, :3] for i in range(n)])


def test_preprocess_allocates_one_float_batch(cmu_rgb: np.ndarray) -> None:
    model, tiles = tiny_model(), _tiles(cmu_rgb)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        x = model.preprocess(tiles)
    allocated = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
    batch = x.numel() * x.element_size()
    assert allocated < 1.5 * batch, f"preprocess allocated {allocated / batch:.1f} float32 batches"


def test_preprocess_values_unchanged_and_input_untouched(cmu_rgb: np.ndarray) -> None:
    model, tiles = tiny_model(), _tiles(cmu_rgb)
    host = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()
    ref = (host / 255.0 - model._mean) / model._std  # the out-of-place formula the in-place ops replace
    assert torch.equal(model.preprocess(tiles), ref)
    floats = torch.from_numpy(tiles).float()  # a float32 (B, H, W, 3) input is normalised into a copy
    kept = floats.clone()
    assert torch.equal(model.preprocess(floats), ref)
    assert torch.equal(floats, kept)
    assert torch.equal(model.preprocess(model.host_tensor(tiles)), ref)
