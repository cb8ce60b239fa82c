"""``EmbeddingModel.embed`` returns (B, dim) rows that own their memory, not a view into the forward's tokens.

Found while attributing the Embed widget's peak RSS (docs/benchmarks.md, 2026-12-07): a CLS embedding is
``tokens[:, 0]``, and ``.float().cpu().numpy()`` of a float32 CPU tensor copies nothing, so every returned batch
kept the whole (B, N, D) token tensor alive (201 x the rows' bytes for the bundled student, 261 for H0-mini-shape
ViTs). Callers that keep the rows, e.g. the linear probe's ``iter_embed_tiles`` (one array per 16-tile batch,
all kept), held 2.5 MB per batch of the student's tokens instead of 12 KB of embeddings.
"""

from __future__ import annotations

import numpy as np

from napari_pathdistill.models.testing import tiny_model


def test_cls_embeddings_do_not_keep_the_token_tensor(cmu_rgb: np.ndarray) -> None:
    model = tiny_model()  # CLS embedding, 48 wide, 1 + 4 + 16 tokens of a 56 px tile
    tiles = np.stack([cmu_rgb[i * 56 : (i + 1) * 56, :56, :3] for i in range(4)])
    feats = model.embed(tiles)
    assert feats.shape == (4, model.dim) and feats.dtype == np.float32
    assert feats.flags.c_contiguous and feats.strides == (
        4 * model.dim,
        4,
    )  # rows 48 floats apart, not 21 x 48
    held = feats.base.numel() * 4 if feats.base is not None and hasattr(feats.base, "numel") else feats.nbytes
    assert held == feats.nbytes, f"the rows keep {held} bytes alive for {feats.nbytes}"
