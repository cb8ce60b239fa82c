"""Loading a chosen checkpoint in the widgets: in the task's worker with a "loading model" status, one copy of
the same weights across widgets and sides, and an Attention run with the same export on both sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill._qt._model_picker import CHECKPOINT
from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

pytestmark = pytest.mark.napari


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch, tmp_path):
    monkeypatch.setenv("PATHDISTILL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    tiny = tiny_model("vit", tile_px=56)
    return save_checkpoint(tiny.module, tiny.spec, tmp_path / "run" / "export")


def _pick(picker, path: Path) -> None:
    picker.choice.value = CHECKPOINT
    picker.checkpoint.value = path
    picker.device.value = "cpu"


def test_the_same_export_in_two_widgets_is_one_copy_in_memory(make_napari_viewer, export) -> None:
    viewer = make_napari_viewer()
    embed, attention = EmbedWidget(viewer), AttentionWidget(viewer)
    _pick(embed.model, export / "model.safetensors")
    _pick(attention.student, export)
    _pick(attention.teacher, export.parent)  # the run folder: its export
    held = embed.model.request().load()
    assert attention.student.request().load() is held
    assert attention.teacher.request().load() is held


def test_embedding_says_it_loads_the_model_then_runs(
    make_napari_viewer, export, cmu_svs, open_slide, wait_for
):
    viewer = make_napari_viewer()
    widget = EmbedWidget(viewer)
    _pick(widget.model, export)
    widget.slide.value = open_slide(viewer, cmu_svs)
    widget.mpp.value, widget.min_tissue.value, widget.k.value = 4.0, 0.1, 2
    seen: list[str] = []
    shown = widget.status.set_value
    widget.status.set_value = lambda value: (seen.append(value), shown(value))  # every status the run sets
    widget.run()
    wait_for(widget)
    assert widget.result is not None, widget.status.value
    assert "loading model run/export: 0/?" in seen, seen
    assert seen.index("loading model run/export: 0/?") < min(i for i, s in enumerate(seen) if "tissue" in s)


def test_attention_with_the_export_on_both_sides(make_napari_viewer, export, cmu_svs, open_slide, wait_for):
    """Teacher and student the same model (one shared copy): identical maps, agreement r = 1."""
    viewer = make_napari_viewer()
    widget = AttentionWidget(viewer)
    _pick(widget.teacher, export)
    _pick(widget.student, export)
    widget.slide.value = open_slide(viewer, cmu_svs)
    widget.region.value = widget.region.choices[-1]  # the whole slide
    widget.max_tiles.value = 16
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert pair is not None, widget.status.value
    assert np.array_equal(pair.teacher_map, pair.student_map, equal_nan=True)
    assert float(np.nanmin(pair.tile_r)) > 0.999
