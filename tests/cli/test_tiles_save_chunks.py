"""``pathdistill tiles --save-tiles N`` writes the tiles a chunk at a time, not all N held in memory at once.

Until 2026-12-07 it read all N tiles into one (N, px, px, 3) array before writing the first: 100k tiles of 224 px
(a training set of a few slides) took 15 GB of RAM, of 512 px 78 GB, and nothing was written before the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.io import imread

import napari_pathdistill.wsi as wsi
from napari_pathdistill.cli import tiles as tiles_cmd
from napari_pathdistill.cli.main import main


def test_tiles_are_read_and_written_a_chunk_at_a_time(tmp_path: Path, cmu_svs: Path, monkeypatch) -> None:
    opts = ["--tile-px", "64", "--mpp", "2", "--max-size", "1024", "--save-tiles", "35"]
    args = ["tiles", str(cmu_svs), *opts]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0  # one chunk (SAVE_CHUNK = 256)
    batches: list[int] = []
    real = wsi.read_tiles

    def spy(pyr, grid, indices):  # the real reader, counting how many tiles each call holds
        batches.append(len(indices))
        return real(pyr, grid, indices)

    monkeypatch.setattr(wsi, "read_tiles", spy)
    monkeypatch.setattr(tiles_cmd, "SAVE_CHUNK", 16, raising=False)
    assert main([*args, "--out", str(tmp_path / "chunked")]) == 0
    assert batches == [16, 16, 3]
    names = sorted(p.name for p in (tmp_path / "whole" / "tiles").iterdir())
    assert names == [f"tile_{i:05d}.png" for i in range(35)]
    assert sorted(p.name for p in (tmp_path / "chunked" / "tiles").iterdir()) == names
    for name in names:
        a, b = (imread(tmp_path / d / "tiles" / name) for d in ("whole", "chunked"))
        np.testing.assert_array_equal(a, b)
