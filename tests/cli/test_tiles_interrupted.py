"""``pathdistill tiles`` stopped part-way (Ctrl-C, SIGTERM): no file of its folder is half-written or mixed."""

from __future__ import annotations

from pathlib import Path


def test_ctrl_c_before_the_end_leaves_the_previous_outputs_whole(
    cmu_svs: Path, tmp_path: Path, monkeypatch
) -> None:
    """A rerun into the same folder (--tile-px 112) stopped by Ctrl-C while it draws the preview: the first run's
    files are left as they were. Before, tiles.csv and tissue_mask.png of the rerun were already written, beside the
    first run's grid.json (224 px tiles): a folder that contradicted itself, read as complete by a batch script."""
    import json

    from napari_pathdistill.cli import tiles
    from napari_pathdistill.cli.main import main

    out = tmp_path / "out"
    assert main(["tiles", str(cmu_svs), "--out", str(out), "--max-size", "512"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiles, "preview", interrupted)
    assert main(["tiles", str(cmu_svs), "--out", str(out), "--max-size", "512", "--tile-px", "112"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary file left either
    assert json.loads(before["grid.json"])["tile_px"] == 224
