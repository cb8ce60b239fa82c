"""Bad inputs to ``open_pyramid`` and ``get_reader``: each fails at once with a message saying what is wrong.

Truncated vendor files are refused with OpenSlide's reason (never read by tifffile, which would lose the MPP
and associated images), non-regular files are refused without being opened, permission problems are named.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _wsi_files import write_pyramid_tiff
from napari_pathdistill._reader import get_reader, read_slide
from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi.pyramid import open_pyramid, permission_message


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_svs_fails_with_openslides_reason(tmp_path: Path, cmu_svs: Path, fraction: float) -> None:
    path = _truncate(cmu_svs, tmp_path / "cut.svs", fraction)
    with pytest.raises(WSIError, match=r"OpenSlide cannot read .*cut\.svs \(Aperio SVS") as info:
        open_pyramid(path)
    assert "Unsupported or missing image file" in str(info.value)  # OpenSlide's own words
    assert "not read with tifffile" in str(info.value)


def test_truncated_svs_renamed_tif_is_not_a_tifffile_fallback(tmp_path: Path, cmu_svs: Path) -> None:
    """At 90 % tifffile still reads the first IFD (an Aperio one): it would embed it without MPP."""
    path = _truncate(cmu_svs, tmp_path / "cut.tif", 0.9)
    with pytest.raises(WSIError, match=r"OpenSlide cannot read .*\(Aperio SVS"):
        open_pyramid(path)


def test_legitimate_tifffile_fallbacks_still_open(tmp_path: Path, os2_pair: tuple[Path, Path]) -> None:
    for ome in os2_pair:
        with open_pyramid(ome) as pyr:
            assert pyr.backend == "tifffile" and pyr.mpp is not None
    img = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    for name, ome in (("pyr.tif", False), ("pyr.ome.tif", True)):
        write_pyramid_tiff(tmp_path / name, img, levels=3, ome=ome)
        with open_pyramid(tmp_path / name) as pyr:
            assert pyr.backend == "tifffile" and len(pyr.levels) == 3
            np.testing.assert_array_equal(pyr.read_region((0, 0), 0, (512, 512)), img)


def test_truncated_tifffile_pyramid_is_a_clear_message(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    write_pyramid_tiff(tmp_path / "full.ome.tif", img, ome=True)
    for n in (8, 100):  # header only; header and a cut IFD
        path = tmp_path / f"cut{n}.ome.tif"
        path.write_bytes((tmp_path / "full.ome.tif").read_bytes()[:n])
        with pytest.raises(WSIError, match="truncated or corrupt") as info:
            open_pyramid(path)
        assert "list index out of range" not in str(info.value) and path.name in str(info.value)


def _open_fifo(path: str, conn) -> None:
    try:
        open_pyramid(path)
        conn.send("opened")
    except WSIError as e:
        conn.send(f"WSIError: {e}")
    conn.send(get_reader(path) is None)


def test_fifo_is_refused_at_once_and_declined(tmp_path: Path) -> None:
    fifo = tmp_path / "slide.svs"
    os.mkfifo(fifo)
    parent, child = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_open_fifo, args=(str(fifo), child))
    proc.start()
    got = [parent.recv() if parent.poll(60) else "hung", parent.recv() if parent.poll(10) else "hung"]
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    assert got[0].startswith("WSIError") and "not a regular file (a FIFO)" in got[0], got
    assert got[1] is True


def _open_as_nobody(path: str, conn) -> None:
    os.setgid(65534)
    os.setuid(65534)
    try:
        with open(path, "rb"):
            conn.send("readable")
    except PermissionError as e:
        conn.send(permission_message(Path(path), e))
    try:
        open_pyramid(path)
    except WSIError as e:
        conn.send(str(e))
    conn.send(get_reader(path) is read_slide)


def test_permission_denied_is_reported_as_such(tmp_path: Path, cmu_svs: Path) -> None:
    """chmod 000: as root (which reads anything) the check runs in a forked child that drops to nobody."""
    folder = tmp_path / "shared"
    folder.mkdir()
    for name in ("slide.svs", "slide.tif"):
        (folder / name).write_bytes(cmu_svs.read_bytes()[:4096])
        (folder / name).chmod(0)
    os.chmod(tmp_path, 0o755), os.chmod(folder, 0o755)
    for name in ("slide.svs", "slide.tif"):
        path = str(folder / name)
        if os.geteuid() != 0:
            with pytest.raises(WSIError, match="Permission denied reading"):
                open_pyramid(path)
            assert get_reader(path) is read_slide
            continue
        parent, child = multiprocessing.get_context("fork").Pipe()
        proc = multiprocessing.get_context("fork").Process(target=_open_as_nobody, args=(path, child))
        proc.start()
        got = [parent.recv() if parent.poll(60) else "hung" for _ in range(3)]
        proc.join(10)
        assert got[0].startswith("Permission denied reading") and "not a whole-slide image" not in got[0], got
        assert got[1].startswith("Permission denied reading") and name in got[1], got
        assert got[2] is True, got


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(WSIError, match="does not exist"):
        open_pyramid(tmp_path / "nowhere.svs")


def test_fifo_does_not_hang_the_tiles_command(tmp_path: Path) -> None:
    fifo = tmp_path / "slide.svs"
    os.mkfifo(fifo)
    cmd = [
        sys.executable,
        "-m",
        "napari_pathdistill.cli.main",
        "tiles",
        str(fifo),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not a regular file (a FIFO)" in proc.stderr


def test_a_tiff_still_being_written_says_so(tmp_path: Path) -> None:
    """tifffile (like other writers) puts a zeroed image directory first and fills it in when the image data is
    written: a copy (or an open) taken meanwhile said 'unsupported TIFF layout () (axes )'."""
    import tifffile

    path, snapshot = tmp_path / "writing.tif", tmp_path / "snapshot.tif"
    tile = np.full((256, 256, 3), 180, np.uint8)

    def tiles():
        for i in range(16):
            if i == 8:
                snapshot.write_bytes(path.read_bytes())  # what a reader sees while the writer is busy
            yield tile

    with tifffile.TiffWriter(path) as tw:
        tw.write(tiles(), shape=(1024, 1024, 3), dtype=np.uint8, tile=(256, 256), photometric="rgb")
    with pytest.raises(WSIError, match=r"holds no image .* the file is still being written, or was cut off"):
        open_pyramid(snapshot)
    with open_pyramid(path) as pyr:  # once written, it opens
        assert pyr.levels[0].shape == (1024, 1024)
