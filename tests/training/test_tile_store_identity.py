"""The device pipeline's tile store is reused only for the data it was written from.

Until 2026-12-07 its identity was the config's slide / folder strings, field px, um/px, tissue and seed: a
store was reused after ``data.tile_dirs_mpp`` or ``data.mpp_override`` changed (a run redone with the right
scale kept training on the wrong one: ``train.overwrite=true`` keeps the store), after tiles were added to a
folder (the record said N + 1 tiles while N were trained on), and, with a shared ``data.tile_store``, for the
same relative folder name run from another folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pathdistill_train.config import load_config
from pathdistill_train.data.loaders import build_batches


@pytest.fixture
def tiles(histolab_tiles) -> list[Path]:
    return sorted(Path(histolab_tiles).glob("*.png"))


def _store(tmp_path: Path, folder: str, *extra: str) -> np.ndarray:
    """Rank 0's tile store after the first batch of a device-pipeline run on ``folder``."""
    store = tmp_path / "cache" / "store.npy"
    cfg = load_config("smoke_cpu", [f"output_dir={tmp_path / 'run'}", f"data.tile_dirs=[{folder}]",
                                    "data.pipeline=device", f"data.tile_store={store}", *extra])  # fmt: skip
    next(build_batches(cfg, 0, 1, 0, torch.device("cpu")))
    return np.array(np.load(store, mmap_mode="r"))


def test_a_changed_folder_scale_or_tile_count_rewrites_the_store(tmp_path, tiles):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for p in tiles[10:13]:
        shutil.copy(p, folder / p.name)
    first = _store(tmp_path, str(folder))
    assert first.shape[0] == 3
    np.testing.assert_array_equal(_store(tmp_path, str(folder)), first)  # same data: reused
    halved = _store(tmp_path, str(folder), "data.tile_dirs_mpp=0.25")  # tiles at 0.25 um/px, trained at 0.5
    assert halved.shape == first.shape and not np.array_equal(halved, first)
    shutil.copy(tiles[14], folder / tiles[14].name)
    assert _store(tmp_path, str(folder), "data.tile_dirs_mpp=0.25").shape[0] == 4
    describe = json.loads((tmp_path / "cache" / "store.json").read_text())["describe"]
    assert describe["tile_dirs"] == [{"path": str(folder.resolve()), "tiles": 4, "manifest_mpp": []}]


def test_the_same_relative_folder_from_another_project_is_other_data(tmp_path, tiles, monkeypatch):
    stores = []
    for name, chosen in (("a", tiles[10:12]), ("b", tiles[12:14])):
        (tmp_path / name / "tiles").mkdir(parents=True)
        for p in chosen:
            shutil.copy(p, tmp_path / name / "tiles" / p.name)
        monkeypatch.chdir(tmp_path / name)
        stores.append(_store(tmp_path, "tiles"))
    assert not np.array_equal(stores[0], stores[1])
