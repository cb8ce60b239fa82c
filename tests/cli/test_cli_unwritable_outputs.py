"""``pathdistill tiles --out`` and ``view --screenshot`` where nothing can be written: one ``argument`` line and
exit code 2 before the slide is read or napari opens.

Was (found with both pointed at a read-only tmpfs mount): ``tiles`` read the slide's thumbnail and built the grid,
then died in ``os.mkdir``'s ``OSError: [Errno 30] Read-only file system`` traceback; ``view`` opened napari and the
slide, then died in imageio's traceback, also for a screenshot into a folder that did not exist yet (which is
now created). A file where a folder should be is a real OS refusal (also for root, whom file modes do not stop);
the read-only mount is stood in for as in ``test_cli_bad_inputs`` (``os.open`` refusing to create)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _fresh_process import run_python
from _read_only_fs import no_file_creation
from napari_pathdistill.cli.main import main


def _one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err
    assert "Traceback" not in err, err


def test_tiles_checks_its_out_folder_before_reading_the_slide(tmp_path: Path, cmu_svs: Path, capsys) -> None:
    a_file = tmp_path / "tiles"
    a_file.write_text("not a folder")
    assert main(["tiles", str(cmu_svs), "--out", str(a_file / "out")]) == 2
    _one_error_line(capsys.readouterr().err, "argument --out: cannot write into", str(a_file / "out"))


def test_tiles_into_a_read_only_folder_is_one_line(
    tmp_path: Path, cmu_svs: Path, capsys, monkeypatch
) -> None:
    from napari_pathdistill import atomic  # folder_problem

    no_file_creation(monkeypatch, atomic)
    assert main(["tiles", str(cmu_svs), "--out", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, "argument --out", str(tmp_path), "Read-only file system")


def test_view_checks_the_screenshot_folder_before_napari_opens(tmp_path: Path) -> None:
    a_file = tmp_path / "shots"
    a_file.write_text("not a folder")
    proc = run_python("-m", "napari_pathdistill.cli.main", "view", "--sample", "--widgets", "", "--screenshot",
                      a_file / "v.png", returncode=None, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, "argument --screenshot: cannot write into", str(a_file))


@pytest.mark.napari
def test_view_screenshot_into_a_new_folder(tmp_path: Path, qtbot, own_napari_app) -> None:
    shot = tmp_path / "new" / "folder" / "view.png"
    assert main(["view", "--sample", "--widgets", "", "--screenshot", str(shot)]) == 0
    assert shot.stat().st_size > 0
