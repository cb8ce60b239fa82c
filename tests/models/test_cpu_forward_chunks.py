"""On the CPU ``EmbeddingModel.embed`` runs the forward on at most ``CPU_FORWARD_TILES`` tiles at a time.

Found by sampling the RSS of the slide-scale benchmark's embed (docs/benchmarks.md, 2026-12-07 10:30 UTC): a forward
of the Embed widget's 32-tile batch allocated ~75 MB of float32 input and activations (traced in-use peak; 37 MB
at 16 tiles), and glibc kept the heap it touched, so the widget's peak RSS rose ~0.1 GB more than with 16-tile
forwards, at the same tiles/s of the read + embed pipeline. The chunks are observed on the real module (a hook on
its patch embedding), and the embeddings equal a whole-batch forward's.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_pathdistill.models.embedding_model import CPU_FORWARD_TILES
from napari_pathdistill.models.testing import tiny_model


def _tiles(cmu_rgb: np.ndarray, n: int, px: int = 56) -> np.ndarray:
    """``n`` real H&E tiles of ``px`` px from CMU-1-Small-Region, row by row."""
    cols = cmu_rgb.shape[1] // px
    return np.stack([cmu_rgb[(i // cols) * px : (i // cols + 1) * px, (i % cols) * px : (i % cols + 1) * px, :3]
                     for i in range(n)])  # fmt: skip


def test_a_cpu_batch_is_embedded_in_bounded_forwards(cmu_rgb: np.ndarray) -> None:
    model = tiny_model()
    n = 2 * CPU_FORWARD_TILES + 5
    tiles = _tiles(cmu_rgb, n)
    seen: list[int] = []
    hook = model.module.patch_embed.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    try:
        feats = model.embed(tiles)
        from_host = model.embed(model.host_tensor(tiles))  # what the batch loop passes
    finally:
        hook.remove()
    assert seen == [CPU_FORWARD_TILES, CPU_FORWARD_TILES, 5] * 2
    with torch.inference_mode():  # one forward of the whole batch, as before
        whole = model.pool(model.forward_tokens(model.preprocess(tiles))).numpy()
    assert feats.shape == (n, model.dim) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(from_host, feats)


def test_a_small_batch_is_one_forward(cmu_rgb: np.ndarray) -> None:
    model, seen = tiny_model(), []
    hook = model.module.patch_embed.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    try:
        model.embed(_tiles(cmu_rgb, CPU_FORWARD_TILES))
    finally:
        hook.remove()
    assert seen == [CPU_FORWARD_TILES]
