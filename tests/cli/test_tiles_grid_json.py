"""``grid.json`` of ``pathdistill tiles`` names the slide by its absolute path.

Until 2026-12-07 it kept the path as typed: run from the project folder on ``../shared/data/...``, it recorded
that relative path, which names nothing once the output folder is read from elsewhere (a training run, another
machine's copy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from napari_pathdistill.cli.main import main


def test_grid_json_records_the_absolute_slide_path(tmp_path: Path, cmu_svs: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    slide = os.path.relpath(cmu_svs, tmp_path)
    assert main(["tiles", slide, "--out", "out", "--tile-px", "64", "--mpp", "4", "--max-size", "512"]) == 0
    recorded = json.loads((tmp_path / "out" / "grid.json").read_text())["slide"]
    assert recorded == str(Path(cmu_svs).resolve()) and Path(recorded).is_file()
