"""``embed_slide`` where its output folder cannot be written (a read-only archive of features, a read-only mount):
a complete output is kept, anything else fails with one line naming the folder."""

from __future__ import annotations

import pytest

from _read_only_fs import no_file_creation
from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference import outputs
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress

KW = {"mpp": 4.0, "min_tissue": 0.0, "batch_size": 4, "chunk_batches": 1}  # 24 tiles of the tiny ViT


def test_a_complete_output_in_a_read_only_folder_is_kept(cmu_svs, tmp_path, monkeypatch) -> None:
    """Was: ``FAILED ...: OSError: [Errno 30] Read-only file system: '.../S.h5.lock'``."""
    model = tiny_model("vit")
    h5 = embed_slide(cmu_svs, model, tmp_path, **KW)
    no_file_creation(monkeypatch, outputs)
    seen: list[Progress] = []
    assert embed_slide(cmu_svs, model, tmp_path, progress=seen.append, **KW) == h5
    assert [p.stage for p in seen] == ["skipped"]


def test_a_read_only_folder_without_the_output_is_one_line(cmu_svs, tmp_path, monkeypatch) -> None:
    no_file_creation(monkeypatch, outputs)
    with pytest.raises(
        PathDistillError, match=r"cannot write CMU-1-Small-Region\.h5 into .*Read-only file system"
    ):
        embed_slide(cmu_svs, tiny_model("vit"), tmp_path, **KW)
