"""``embed_slide`` where its output folder cannot be written (a read-only archive of features, a read-only mount):
a complete output is kept, anything else fails with one line naming the folder."""

from __future__ import annotations

import errno
import os

import pytest

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference import outputs
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress

KW = {"mpp": 4.0, "min_tissue": 0.0, "batch_size": 4, "chunk_batches": 1}  # 24 tiles of the tiny ViT


def _read_only(monkeypatch) -> None:
    """New files in the output folder fail as on a read-only file system (tests may run as root, whom file
    modes do not stop)."""
    real_open = os.open

    def no_create(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(outputs.os, "open", no_create)


def test_a_complete_output_in_a_read_only_folder_is_kept(cmu_svs, tmp_path, monkeypatch) -> None:
    """Was: ``FAILED ...: OSError: [Errno 30] Read-only file system: '.../S.h5.lock'``."""
    model = tiny_model("vit")
    h5 = embed_slide(cmu_svs, model, tmp_path, **KW)
    _read_only(monkeypatch)
    seen: list[Progress] = []
    assert embed_slide(cmu_svs, model, tmp_path, progress=seen.append, **KW) == h5
    assert [p.stage for p in seen] == ["skipped"]


def test_a_read_only_folder_without_the_output_is_one_line(cmu_svs, tmp_path, monkeypatch) -> None:
    _read_only(monkeypatch)
    with pytest.raises(
        PathDistillError, match=r"cannot write CMU-1-Small-Region\.h5 into .*Read-only file system"
    ):
        embed_slide(cmu_svs, tiny_model("vit"), tmp_path, **KW)
