"""Which existing output ``embed_slide`` keeps, resumes or refuses: another slide of the same file stem,
another embedding (model, weights, um/px), and the ``warning`` lines of tissue detection's undecodable tiles."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from napari_pathdistill.inference.embed import embed_slide, output_clashes
from napari_pathdistill.inference.outputs import OutputMismatchError
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress

KW = {"mpp": 4.0, "min_tissue": 0.0, "batch_size": 4, "chunk_batches": 1}  # 24 tiles of the tiny ViT


@pytest.fixture
def cmu_copy(cmu_svs, tmp_path) -> Path:
    """Another file with CMU-1-Small-Region's name and pixels, 16 bytes longer (TIFF readers ignore them): two
    existing files of one name and different sizes are two slides (an exact copy counts as the same slide)."""
    copy = tmp_path / "elsewhere" / cmu_svs.name
    copy.parent.mkdir()
    copy.write_bytes(cmu_svs.read_bytes() + bytes(16))
    return copy


def test_a_moved_or_copied_slide_keeps_its_output(cmu_svs, tmp_path) -> None:
    """The slide folder moved (or mounted elsewhere): its stored path is gone, the output is kept, not refused."""
    model = tiny_model("vit")
    old = tmp_path / "old" / cmu_svs.name
    old.parent.mkdir()
    shutil.copy(cmu_svs, old)
    h5 = embed_slide(old, model, tmp_path / "out", **KW)
    moved = tmp_path / "new" / cmu_svs.name
    moved.parent.mkdir()
    old.rename(moved)
    path, first = _first_progress(moved, model, tmp_path / "out")
    assert path == h5 and first.stage == "skipped"
    path, first = _first_progress(cmu_svs, model, tmp_path / "out")  # an exact copy (same size) elsewhere
    assert path == h5 and first.stage == "skipped"


def _cancelled(slide, model, out: Path, **kw) -> Path:
    """A partial output of ``slide``: cancelled after its first chunk."""
    cancel = threading.Event()
    part = embed_slide(slide, model, out, cancel=cancel, progress=lambda p: cancel.set(), **KW, **kw)
    assert part.suffix == ".partial"
    return part


def _first_progress(slide, model, out: Path, **kw) -> tuple[Path, Progress]:
    """Embed ``slide``; the path and the first progress (stage "resumed": a partial was resumed)."""
    seen: list[Progress] = []
    path = embed_slide(slide, model, out, progress=seen.append, **KW, **kw)
    return path, seen[0]


def test_another_slide_of_the_same_stem_is_neither_kept_nor_resumed(cmu_svs, cmu_copy, tmp_path) -> None:
    model = tiny_model("vit")
    h5 = embed_slide(cmu_svs, model, tmp_path / "a", **KW)
    stamp = h5.stat().st_mtime_ns
    with pytest.raises(OutputMismatchError, match=r"complete embedding of another slide \(") as exc:
        embed_slide(cmu_copy, model, tmp_path / "a", **KW)
    assert str(cmu_svs.resolve()) in str(exc.value) and str(cmu_copy) in str(exc.value)
    assert "--overwrite" in str(exc.value) and h5.stat().st_mtime_ns == stamp
    link = tmp_path / "link" / cmu_svs.name
    link.parent.mkdir()
    link.symlink_to(cmu_svs)  # the same slide by another spelling of its path: kept
    path, first = _first_progress(tmp_path / "link" / ".." / "link" / cmu_svs.name, model, tmp_path / "a")
    assert path == h5 and first.stage == "skipped" and h5.stat().st_mtime_ns == stamp
    with h5py.File(embed_slide(cmu_copy, model, tmp_path / "a", overwrite=True, **KW)) as f:
        assert f.attrs["slide_path"] == str(cmu_copy.resolve())

    _cancelled(cmu_svs, model, tmp_path / "b")  # a partial of the other slide is not resumed
    out, first = _first_progress(cmu_copy, model, tmp_path / "b")
    assert first.done == 4 and first.stage == "embedding"
    with h5py.File(out) as f:
        assert f.attrs["slide_path"] == str(cmu_copy.resolve()) and f.attrs["done"] == 24


def test_a_complete_output_of_another_embedding_is_kept_unless_overwrite(cmu_svs, tmp_path) -> None:
    model, retrained = tiny_model("vit"), tiny_model("vit", seed=1)
    h5 = embed_slide(cmu_svs, model, tmp_path, **KW)
    stamp = h5.stat().st_mtime_ns
    with pytest.raises(
        OutputMismatchError, match=f"weights {model.weights_id} there, {retrained.weights_id}"
    ):
        embed_slide(cmu_svs, retrained, tmp_path, **KW)
    with pytest.raises(OutputMismatchError, match=r"other settings \(mpp 4 there, 8 requested\)"):
        embed_slide(cmu_svs, model, tmp_path, **{**KW, "mpp": 8.0})
    cnn = tiny_model("cnn")
    with pytest.raises(
        OutputMismatchError, match=rf"\(model {model.spec.name} there, {cnn.spec.name} requested"
    ):
        embed_slide(cmu_svs, cnn, tmp_path, **KW)
    assert h5.stat().st_mtime_ns == stamp and embed_slide(cmu_svs, model, tmp_path, **KW) == h5  # still kept

    _cancelled(cmu_svs, retrained, tmp_path, overwrite=True)  # replacing it was asked for, then interrupted
    with pytest.raises(OutputMismatchError):
        embed_slide(cmu_svs, retrained, tmp_path, **KW)
    out, first = _first_progress(cmu_svs, retrained, tmp_path, overwrite=True)
    assert first.stage == "resumed" and first.done >= 4  # the matching partial is resumed
    with h5py.File(out) as f:
        assert f.attrs["weights"] == retrained.weights_id and f.attrs["done"] == 24


def test_a_partial_of_another_slide_or_min_tissue_starts_over(tmp_path) -> None:
    from napari_pathdistill.inference.feature_writer import open_partial

    model = tiny_model("vit")
    grid = SimpleNamespace(coords=np.array([[0, 0], [56, 0]]), tissue_fraction=np.ones(2, np.float32))
    slides = [tmp_path / d / "s.svs" for d in ("a", "b")]  # two existing files of one name: two slides
    for i, slide in enumerate(slides):
        slide.parent.mkdir()
        slide.write_bytes(bytes(i + 1))
    attrs = {
        "model": model.spec.name,
        "weights": model.weights_id,
        "min_tissue": 0.0,
        "slide_path": str(slides[0]),
    }
    partial = tmp_path / "s.h5.partial"
    other = {"slide_path": str(slides[1])}
    for request, resumed in (({}, True), (other, False), ({"min_tissue": 0.5}, False)):
        with open_partial(partial, model, grid, attrs) as f:
            f.attrs["done"] = 1
        with open_partial(partial, model, grid, {**attrs, **request}) as f:
            assert (int(f.attrs["done"]) == 1) is resumed, request
    # the same request over another tile grid (the slide rewritten in place, tissue detection changed): row 0
    # of the partial is another tile, so it starts over on the new grid's coords
    moved = SimpleNamespace(coords=np.array([[0, 56], [56, 56]]), tissue_fraction=np.ones(2, np.float32))
    with open_partial(partial, model, grid, attrs) as f:
        f.attrs["done"] = 1
    with open_partial(partial, model, moved, attrs) as f:
        assert int(f.attrs["done"]) == 0
        np.testing.assert_array_equal(f["coords"][()], moved.coords)


def test_output_clashes_are_different_files_of_one_output_name(cmu_svs, cmu_copy, tcga_svs) -> None:
    assert output_clashes([cmu_svs, tcga_svs, cmu_svs]) == []  # the same file twice writes one output
    assert output_clashes([cmu_svs, tcga_svs, cmu_copy]) == [[str(cmu_svs), str(cmu_copy)]]


def test_tissue_detection_s_undecodable_tiles_become_a_warning_line(cmu_svs, tmp_path) -> None:
    from napari_pathdistill.errors import CorruptTileWarning
    from napari_pathdistill.inference.cohort import CohortOptions, embed_one
    from napari_pathdistill.inference.feature_writer import add_warnings

    bad = tmp_path / "bad.svs"
    shutil.copy(cmu_svs, bad)
    with bad.open("r+b") as fh:  # a corrupt region: undecodable tiles in the tissue-detection thumbnail
        fh.seek(800_000)
        fh.write(bytes(300_000))
    with pytest.warns(CorruptTileWarning, match="count as background"):
        h5 = embed_slide(bad, tiny_model("vit"), tmp_path / "o", mpp=4.0, min_tissue=0.5)
    with h5py.File(h5) as f:
        warning = str(f.attrs["warning"])
    assert warning.startswith("tissue detection: ") and "cannot be decoded" in warning and "\n" not in warning
    outcome = embed_one(bad, tiny_model("vit"), CohortOptions("tiny", str(tmp_path / "o"), mpp=4.0))
    assert outcome.skipped and outcome.warnings[0] == warning

    attrs = {"warning": "slide has no MPP"}
    add_warnings(attrs, [warning])
    assert attrs["warning"].splitlines() == ["slide has no MPP", warning]
