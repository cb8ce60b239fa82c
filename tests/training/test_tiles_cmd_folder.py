"""Training on what ``pathdistill tiles SLIDE --out DIR --save-tiles N`` wrote, pointed at DIR (not DIR/tiles).

Until 2026-12-07 the tile folder source took every image under DIR, so the run also trained on the tool's
``preview.png`` (a thumbnail with yellow tile outlines) and ``tissue_mask.png`` (a binary mask) as tiles, and a
DIR written without ``--save-tiles`` trained on those two images alone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from napari_pathdistill.cli.main import main as pathdistill
from pathdistill_train.data.sources import TileFolderSource
from pathdistill_train.errors import TrainDataError
from pathdistill_train.train.train import main as pathdistill_train

TILES = ["--tile-px", "112", "--mpp", "1.0", "--max-size", "1024"]


@pytest.fixture(scope="module")
def cmu_out(tmp_path_factory, cmu_svs) -> Path:
    """``pathdistill tiles`` output of the real CMU slide with 3 saved tiles (read-only for the tests)."""
    out = tmp_path_factory.mktemp("tiles") / "cmu"
    assert pathdistill(["tiles", str(cmu_svs), "--out", str(out), *TILES, "--save-tiles", "3"]) == 0
    assert {"preview.png", "tissue_mask.png", "grid.json", "tiles.csv"} <= {p.name for p in out.iterdir()}
    return out


def test_the_output_folder_trains_on_its_tiles_only(cmu_out):
    source = TileFolderSource(cmu_out, 64, None, 1.0)
    assert [p.relative_to(cmu_out).as_posix() for p in source.paths] == [
        f"tiles/tile_0000{i}.png" for i in range(3)
    ]
    (entry,) = source.describe()
    assert (
        entry["tiles"] == 3
        and "preview.png and tissue_mask.png of 1 `pathdistill tiles`" in entry["left_out"]
    )


def test_a_folder_of_several_outputs_and_user_images_named_alike(tmp_path, cmu_out):
    for name in ("a", "b"):
        shutil.copytree(cmu_out, tmp_path / name)
    mine = tmp_path / "mine"  # a user's own images that happen to be called preview.png: tiles, kept
    mine.mkdir()
    shutil.copy(cmu_out / "tiles" / "tile_00000.png", mine / "preview.png")
    source = TileFolderSource(tmp_path, 64, None, 1.0)
    assert len(source) == 7 and mine / "preview.png" in source.paths
    assert (
        "4 images" in source.describe()[0]["left_out"]
        and "2 `pathdistill tiles` output folders" in (source.describe()[0]["left_out"])
    )


def test_an_output_written_without_save_tiles_is_refused_saying_why(tmp_path, cmu_svs):
    out = tmp_path / "cmu"
    assert pathdistill(["tiles", str(cmu_svs), "--out", str(out), *TILES]) == 0
    with pytest.raises(TrainDataError, match=r"only the preview\.png and tissue_mask\.png.*--save-tiles N"):
        TileFolderSource(out, 64, None, 1.0)


def test_a_run_on_the_output_folder_says_what_it_left_out(tmp_path, cmu_out, capsys):
    run = tmp_path / "run"
    argv = ["--config", "smoke_cpu", "train.max_steps=1", f"output_dir={run}", f"data.tile_dirs=[{cmu_out}]"]
    assert pathdistill_train(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "] data: " in x)
    assert "3 tiles (left out 2 images, the preview.png and tissue_mask.png" in line
    (entry,) = json.loads((run / "export" / "config.json").read_text())["training"]["data"]
    assert entry["tiles"] == 3 and "left_out" in entry
