"""napari asks the reader about every folder dropped on it (the manifest accepts directories): whether a folder
holds a DICOM series is answered from a bounded number of its files, so a folder of thousands of tiles is declined
without opening each one; a DICOM series folder with other files beside it still opens."""

from __future__ import annotations

import shutil
from pathlib import Path

import openslide
import pytest

from napari_pathdistill._reader import get_reader, read_slide
from napari_pathdistill.wsi import _backend_utils, _dicom_backend


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files whose content the folder checks read (OpenSlide's sniffing and the DICM magic check)."""
    seen: list[str] = []
    sniff, magic = openslide.OpenSlide.detect_format, _dicom_backend._dicm_magic

    def detect_format(filename: str) -> str | None:
        seen.append(str(filename))
        return sniff(filename)

    def dicm_magic(f: Path) -> bool:
        seen.append(str(f))
        return magic(f)

    monkeypatch.setattr(openslide.OpenSlide, "detect_format", staticmethod(detect_format))
    monkeypatch.setattr(_dicom_backend, "_dicm_magic", dicm_magic)
    return seen


def test_a_folder_of_many_tiles_is_declined_without_reading_them(tmp_path: Path, opened: list[str]) -> None:
    for i in range(1500):
        (tmp_path / f"tile_{i:05d}.png").write_bytes(b"\x89PNG not really")
        (tmp_path / f"part_{i:05d}").write_bytes(b"no suffix, not DICOM")
    assert get_reader(str(tmp_path)) is None
    assert not any(p.endswith(".png") for p in opened)
    assert len(opened) <= 2 * _backend_utils.MAX_FOLDER_SCAN  # was 6000: every file, twice


def test_a_dicom_folder_with_other_files_still_opens(
    tmp_path: Path, cmu_dicom_dir: Path, opened: list[str]
) -> None:
    folder = tmp_path / "series"
    shutil.copytree(cmu_dicom_dir, folder)
    (folder / "README.txt").write_text("scanned 2009")
    for i in range(300):
        (folder / f"preview_{i}.png").write_bytes(b"\x89PNG")
    assert get_reader(str(folder)) is read_slide
    [(data, kwargs, _)] = read_slide(str(folder))
    assert data[0].shape == (2967, 2220, 3) and kwargs["scale"] == pytest.approx((0.499, 0.499))
    assert not any(p.endswith((".png", ".txt")) for p in opened)
