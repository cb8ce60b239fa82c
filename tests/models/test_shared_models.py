"""One copy of a model while tasks hold it (``models.shared``), and attention maps that stay right when another
task runs the same shared model at the same time."""

from __future__ import annotations

import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import pytest
import torch

from napari_pathdistill.inference.attention import raw_attention_maps
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.shared import shared_model
from napari_pathdistill.models.testing import tiny_model


@pytest.fixture
def export(tmp_path: Path) -> Path:
    tiny = tiny_model("vit", tile_px=56)
    return save_checkpoint(tiny.module, tiny.spec, tmp_path / "export")


@pytest.fixture(scope="module")
def tiles(cmu_svs: Path) -> np.ndarray:
    """Six real 56 px tissue tiles of CMU-1-Small-Region."""
    with openslide.OpenSlide(str(cmu_svs)) as slide:
        return np.stack([np.asarray(slide.read_region((600 + 60 * i, 1200), 0, (56, 56)).convert("RGB"))
                         for i in range(6)])  # fmt: skip


def test_the_same_weights_are_one_copy_while_held(export: Path) -> None:
    first = shared_model(str(export), "cpu")
    assert shared_model(str(export / "model.safetensors"), "cpu") is first  # another spelling, same file
    with ThreadPoolExecutor(4) as pool:  # tasks starting together wait for one load
        assert all(m is first for m in pool.map(lambda _: shared_model(str(export), "cpu"), range(4)))
    assert shared_model(str(export), "cpu", amp="bf16") is not first  # another precision is another model


def test_nothing_stays_loaded_once_released_and_a_reexport_is_loaded_afresh(export: Path) -> None:
    model = shared_model(str(export), "cpu")
    ident = id(model)
    held = model.module.state_dict()["cls_token"].clone()
    del model
    gc.collect()
    again = shared_model(str(export), "cpu")
    assert torch.equal(again.module.state_dict()["cls_token"], held)
    retrained = tiny_model("vit", tile_px=56, seed=1)
    save_checkpoint(retrained.module, retrained.spec, export)
    os.utime(export / "model.safetensors", ns=(1, 1))  # a new stamp even on a coarse-clock filesystem
    fresh = shared_model(str(export), "cpu")
    assert fresh is not again and not torch.equal(fresh.module.state_dict()["cls_token"], held)
    assert ident  # (the first copy's id may be reused by the allocator: identity is compared only while held)


def test_rollout_is_right_while_another_task_runs_the_same_model(tiles: np.ndarray) -> None:
    """Another task's forward (a different batch) runs in the middle of the map's own forward, deterministically:
    started from a hook on the first block and joined there. Its attention must not enter the map."""
    model = tiny_model("vit", tile_px=56)
    alone = raw_attention_maps(model, tiles[:2], mode="rollout")
    fired: list[bool] = []

    def other_task(_module, _args) -> None:
        if not fired:
            fired.append(True)
            worker = threading.Thread(target=model.embed, args=(tiles[2:],))
            worker.start()
            worker.join()

    hook = model.module.blocks[0].register_forward_pre_hook(other_task)
    try:
        during = raw_attention_maps(model, tiles[:2], mode="rollout")
    finally:
        hook.remove()
    assert fired
    torch.testing.assert_close(during, alone)
