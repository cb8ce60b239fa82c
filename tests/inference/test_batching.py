"""Batch invariance, autocast dtype, and the bounded read-ahead of iter_batches / iter_embeddings."""

from __future__ import annotations

import threading
import time

import numpy as np
import openslide
import pytest
import torch

from napari_pathdistill.inference import batches as embed_mod  # the batch loop reads tiles
from napari_pathdistill.inference.embed import EmbeddingResult, iter_batches, iter_embeddings
from napari_pathdistill.models import load_model
from napari_pathdistill.models.embedding_model import EmbeddingModel, resolve_amp
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import make_tile_grid, read_tiles


@pytest.fixture(scope="module")
def cmu_tiles(cmu_svs):
    """Seven real 224 px H&E tiles of the CMU slide, (7, 224, 224, 3) uint8."""
    with openslide.OpenSlide(str(cmu_svs)) as s:
        return np.stack(
            [np.asarray(s.read_region((300 + 224 * i, 900), 0, (224, 224)).convert("RGB")) for i in range(7)]
        )


@pytest.mark.parametrize("name", ["vit", "h0-mini", "uni2-h", "pathdistill-student"])
def test_vit_tile_embedding_is_identical_alone_or_in_a_batch(name, cmu_tiles):
    model = load_model(name, device="cpu") if name == "pathdistill-student" else tiny_model(name)
    tiles = cmu_tiles[:, : model.spec.tile_px, : model.spec.tile_px]
    batch = model.embed(tiles)
    alone = np.concatenate([model.embed(tiles[i : i + 1]) for i in range(len(tiles))])
    np.testing.assert_array_equal(alone, batch)  # bitwise, float32 on the CPU


def test_cnn_tile_embedding_alone_or_in_a_batch_agrees_to_float_rounding(cmu_tiles):
    """oneDNN picks batch-size-dependent convolution kernels: equal to ~1e-6, not bitwise (docs/inference.md)."""
    model = load_model("efficientnet-lite2-imagenet", device="cpu")
    batch = model.embed(cmu_tiles)
    alone = np.concatenate([model.embed(cmu_tiles[i : i + 1]) for i in range(len(cmu_tiles))])
    np.testing.assert_allclose(alone, batch, rtol=1e-5, atol=1e-5)


def test_amp_defaults_and_bf16_autocast_is_really_applied(cmu_tiles):
    assert resolve_amp("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_amp("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="amp must be"):
        resolve_amp("int8", torch.device("cpu"))
    fp32 = tiny_model("h0-mini")
    bf16 = EmbeddingModel(fp32.spec, fp32.module, "cpu", amp="bf16")
    tiles = cmu_tiles[:, :56, :56]
    a, b = fp32.embed(tiles), bf16.embed(tiles)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # autocast changed the arithmetic
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


@pytest.mark.gpu
def test_cuda_pinned_non_blocking_bf16_matches_cpu(cmu_tiles):
    cpu = tiny_model("h0-mini")
    gpu = EmbeddingModel(cpu.spec, tiny_model("h0-mini").module, "cuda")
    host = gpu.host_tensor(cmu_tiles[:, :56, :56])
    assert host.is_pinned() and gpu.amp_dtype == torch.bfloat16
    a, b = cpu.embed(cmu_tiles[:, :56, :56]), gpu.embed(host)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


class _GatedModel(EmbeddingModel):
    """Tiny ViT whose ``embed`` first waits until the readers have filled the queue, recording the depth."""

    def __init__(self, base: EmbeddingModel, reads: list[int], expect) -> None:
        super().__init__(base.spec, base.module, "cpu", amp="fp32")
        self.reads, self.expect, self.calls, self.seen = reads, expect, 0, []

    def embed(self, tiles):
        want, deadline = self.expect(self.calls), time.monotonic() + 120  # returns once the reads are in
        while len(self.reads) < want and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.02)  # give over-eager readers a chance to exceed the bound
        self.seen.append(len(self.reads))
        self.calls += 1
        return super().embed(tiles)


@pytest.mark.parametrize(("num_workers", "prefetch"), [(2, None), (3, 5), (1, 1)])
def test_readers_run_ahead_by_exactly_prefetch_batches(cmu_svs, monkeypatch, num_workers, prefetch):
    reads: list[int] = []
    lock = threading.Lock()

    def counting_read(pyr, grid, indices):
        with lock:
            reads.append(indices[0])
        return read_tiles(pyr, grid, indices)

    monkeypatch.setattr(embed_mod, "read_tiles", counting_read)
    depth = num_workers + 1 if prefetch is None else prefetch
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, tile_px=56, mpp=2.0, min_tissue=0.2)
        n_batches = -(-len(grid.coords) // 2)
        model = _GatedModel(tiny_model(), reads, lambda j: min(n_batches, j + depth))
        items = list(
            iter_embeddings(model, pyr, grid, batch_size=2, num_workers=num_workers, prefetch=prefetch)
        )
        direct = tiny_model().embed(read_tiles(pyr, grid, range(len(grid.coords))))
    assert n_batches > depth + 2
    assert model.seen == [min(n_batches, j + depth) for j in range(n_batches)]  # full queue, never more
    assert sorted(reads) == list(range(0, len(grid.coords), 2))
    res = items[-1]
    assert isinstance(res, EmbeddingResult)
    np.testing.assert_array_equal(res.features, direct)  # order kept


def test_cancel_and_close_stop_the_readers(cmu_svs, monkeypatch):
    reads: list[int] = []
    monkeypatch.setattr(embed_mod, "read_tiles", lambda p, g, i: (reads.append(i[0]), read_tiles(p, g, i))[1])
    model = tiny_model()
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, tile_px=56, mpp=8.0, min_tissue=0.2)
        cancel = threading.Event()
        got = []
        for start, _feats in iter_batches(
            model, pyr, grid, batch_size=1, num_workers=2, prefetch=3, cancel=cancel
        ):
            got.append(start)
            assert _feats.shape == (1, model.dim)
            if len(got) == 2:
                cancel.set()
        assert got == [0, 1] and len(reads) <= 2 + 3  # nothing read beyond the bounded queue
        gen = iter_batches(model, pyr, grid, batch_size=1, num_workers=2, prefetch=3)
        reads.clear()
        next(gen)
        gen.close()  # shuts the reader pool down (queued reads cancelled, running ones finished)
        time.sleep(0.1)
        assert len(reads) <= 3 < len(grid.coords)  # only the first filled queue was ever read
