"""``pathdistill tiles`` run again into the same ``--out``: the tiles there are the new grid's, no others.

Until 2026-12-07 the tiles of the earlier run stayed: ``--save-tiles 5`` then ``--save-tiles 2`` left 5 tiles,
and a rerun at another ``--mpp`` without ``--save-tiles`` left tiles cut at the old um/px beside a ``grid.json``
stating the new one (a training run on the folder then rescaled them from the wrong um/px).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage.io import imread

from napari_pathdistill.cli.main import main


def _tiles(out: Path, cmu_svs: Path, mpp: str, save: str) -> int:
    return main(["tiles", str(cmu_svs), "--out", str(out), "--tile-px", "64", "--mpp", mpp, "--max-size", "1024",
                 "--save-tiles", save])  # fmt: skip


def test_a_rerun_replaces_the_tiles_of_the_earlier_one(tmp_path: Path, cmu_svs: Path, capsys) -> None:
    out = tmp_path / "out"
    mine = out / "tiles" / "my_notes.txt"  # not the command's: kept
    assert _tiles(out, cmu_svs, "2", "5") == 0
    first = imread(out / "tiles" / "tile_00000.png")
    mine.write_text("kept")
    assert _tiles(out, cmu_svs, "4", "2") == 0
    assert sorted(p.name for p in (out / "tiles").iterdir()) == [
        "my_notes.txt",
        "tile_00000.png",
        "tile_00001.png",
    ]
    assert imread(out / "tiles" / "tile_00000.png").shape == first.shape
    assert not np.array_equal(imread(out / "tiles" / "tile_00000.png"), first)  # cut at 4 um/px now
    assert "deleted the 5 tiles an earlier run wrote" in capsys.readouterr().out
    mine.unlink()
    assert _tiles(out, cmu_svs, "2", "0") == 0
    assert not (out / "tiles").exists() and json.loads((out / "grid.json").read_text())["mpp"] == 2.0
