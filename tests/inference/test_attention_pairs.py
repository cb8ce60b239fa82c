"""iter_attention_pair: labels of each side, same model = perfect agreement, random-init baseline, heads checked
before any work, and the memory bound measured in a child process over 400 tiles of a large generated slide
(benchmarks/attention_memory.py: 1,000 tiles with the real models)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from _fresh_process import run_python
from napari_pathdistill.errors import Cancelled
from napari_pathdistill.inference.attention import num_heads, spec_heads
from napari_pathdistill.inference.attention_pairs import AttentionPair, iter_attention_pair, random_init
from napari_pathdistill.models import load_model
from napari_pathdistill.models.factory import resolve_spec
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress, drain
from napari_pathdistill.wsi import open_pyramid

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "attention_memory.py"


def test_same_model_on_both_sides_agrees_perfectly_and_sides_are_labelled(cmu_svs):
    vit, cnn = tiny_model(tile_px=56), tiny_model("cnn", tile_px=56)
    items = list(iter_attention_pair(vit, vit, cmu_svs, max_tiles=40, heads=(1, 1), batch_size=8))
    pair = items[-1]
    assert isinstance(pair, AttentionPair) and all(isinstance(i, Progress) for i in items[:-1])
    done = [i.done for i in items[:-1] if i.stage == "attention"]
    assert done == [8, 16, 24, 32, 40]  # streamed in batches
    np.testing.assert_allclose(pair.tile_r[np.isfinite(pair.tile_r)], 1.0, atol=1e-5)
    np.testing.assert_allclose(pair.tile_overlap, 1.0)
    assert pair.overall_r == pytest.approx(1.0) and pair.overall_overlap == pytest.approx(1.0)
    assert (
        pair.hist_counts.sum() == np.isfinite(pair.tile_r).sum()
        and pair.hist_counts[-1] == pair.hist_counts.sum()
    )
    assert pair.teacher_map.dtype == np.float16 and np.nanmax(np.abs(pair.difference)) == 0
    assert pair.sources[0].label() == "teacher last-block attention, head 1: tiny-vit"
    mixed = drain(iter_attention_pair(cnn, vit, cmu_svs, max_tiles=12, mode="rollout"))
    # what the map is first (before: after the model name, cut off in a narrow grid cell)
    assert mixed.sources[0].label() == "teacher Grad-CAM: tiny-cnn"
    assert mixed.sources[1].label() == "student attention rollout, head mean: tiny-vit"
    assert mixed.teacher_map.shape == mixed.student_map.shape  # a 2x2 Grad-CAM and a 4x4 ViT map, one canvas
    assert -1 <= mixed.overall_r <= 1 and 0 <= mixed.overall_overlap <= 1


def test_um_px_override_of_a_slide_without_mpp_cuts_um_tiles_and_maps_in_pixels(tcga_svs):
    """The TCGA slide states no MPP: without an override the tiny ViT's 56 px tiles are 56 level-0 px; with a
    level-0 um/px of 2 they are cut at its 16 um/px (448 level-0 px), and the canvas is still placed in level-0
    px (napari shows the slide in pixels), covering the same tiles."""
    import dataclasses

    vit = tiny_model(tile_px=56)
    vit.spec = dataclasses.replace(vit.spec, mpp=16.0)
    plain = drain(iter_attention_pair(vit, vit, tcga_svs, max_tiles=4, overlap=0.0))
    cut = drain(iter_attention_pair(vit, vit, tcga_svs, max_tiles=4, overlap=0.0, fallback_mpp=2.0))
    assert plain.tile_px_level0 == pytest.approx(56) and cut.tile_px_level0 == pytest.approx(448)
    # level-0 px geometry either way: a canvas pixel covers tile_px_level0 / (the map's px per tile) level-0 px
    for pair in (plain, cut):
        cells = pair.teacher_map.shape[1] * pair.scale[1]  # the canvas's width in world units
        span = pair.coords[:, 0].max() + pair.tile_px_level0 - pair.coords[:, 0].min()
        assert cells == pytest.approx(span, rel=0.05)
        assert pair.translate[1] == pytest.approx(pair.coords[:, 0].min(), abs=pair.scale[1])


def test_cancel_stops_between_batches(cmu_svs):
    vit = tiny_model(tile_px=56)
    cancel = threading.Event()
    items = iter_attention_pair(vit, vit, cmu_svs, max_tiles=40, batch_size=8, cancel=cancel)
    done = [next(items) for _ in range(2)]  # finding tissue, first batch
    assert done[-1].stage == "attention" and done[-1].done == 8
    cancel.set()
    with pytest.raises(Cancelled):
        next(items)


def test_cancel_reaches_tissue_detection(sparse_tiff):
    """Cancel pressed while "finding tissue" on a 100k x 100k slide waited for the whole detection (~4-5 s
    here), then the run failed with "No tissue tile" instead of stopping; it now stops between the level's
    blocks (as the Tissue and Similarity widgets' detection does)."""
    vit = tiny_model(tile_px=56)
    cancel = threading.Event()
    items = iter_attention_pair(vit, vit, sparse_tiff, max_tiles=4, cancel=cancel)
    assert next(items).stage == "finding tissue"
    cancel.set()
    with pytest.raises(Cancelled, match="Attention cancelled"):
        next(items)


def test_random_init_baseline_has_the_architecture_but_other_weights():
    student = load_model("pathdistill-student", device="cpu")
    rnd = random_init(student)
    assert rnd.spec.name == "pathdistill-student (random init)" and rnd.spec.arch == student.spec.arch
    a, b = student.module.state_dict(), rnd.module.state_dict()
    assert a.keys() == b.keys() and not np.allclose(
        a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"]
    )


def test_head_range_comes_from_the_model_and_is_checked_before_any_work(cmu_svs):
    student = load_model("pathdistill-student", device="cpu")
    assert num_heads(student) == 3 == spec_heads(resolve_spec("pathdistill-student"))
    assert (
        spec_heads(resolve_spec("h-optimus-0")) == 24
        and spec_heads(resolve_spec("efficientnet-lite2-imagenet")) == 0
    )
    steps = iter_attention_pair(tiny_model("cnn"), student, cmu_svs, heads=(None, 3))
    # raised by the first next(): before the first Progress ("finding tissue"), so before any tile is read
    with pytest.raises(ValueError, match=r"head 3 out of range: pathdistill-student has 3 heads \(0-2"):
        next(steps)


def test_peak_memory_is_bounded_over_many_tiles_of_a_large_generated_slide(tmp_path):
    """The benchmark's child process: peak RSS increase < 500 MB, and flat from the first to the last batch."""
    args = [
        "--tiny",
        "--tile-px",
        "56",
        "--tiles",
        "400",
        "--side",
        "8192",
        "--batch-size",
        "16",
        "--out",
        str(tmp_path),
    ]
    proc = run_python(BENCH, *args)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RSS before"))
    assert "peak increase" in line and "load average before" in proc.stdout
    res = json.loads(
        next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")).removeprefix("RESULT ")
    )
    assert res["tiles"] == 400 and res["peak_reset"]
    assert res["peak_increase_mb"] < 500, res
    assert res["stream_growth_mb"] < 100, res  # nothing accumulates per tile


def test_a_teacher_of_another_input_size_sees_the_student_s_tiles_resized(cmu_svs):
    """A 112 px teacher beside a 56 px student (any two models may be paired: a student trained at another tile
    size, a hub model of 448 px) failed on the first batch with timm's 'AssertionError: Input height (56)
    doesn't match model (112)'. Each model now gets the student's tiles at its own input size."""
    teacher, student = tiny_model(tile_px=112), tiny_model(tile_px=56)
    pair = drain(iter_attention_pair(teacher, student, cmu_svs, max_tiles=8, overlap=0.0))
    assert len(pair.coords) == 8 and pair.teacher_map.shape == pair.student_map.shape
    on_tiles = np.isfinite(pair.student_map)
    assert np.isfinite(pair.teacher_map[on_tiles]).all() and np.ptp(pair.teacher_map[on_tiles]) > 0.5
    from napari_pathdistill.inference.attention_pairs import fit_tiles

    with open_pyramid(cmu_svs) as pyr:
        tiles = pyr.read_region((900, 1200), 0, (56, 56))[None, ..., :3]
    assert fit_tiles(tiles, 56) is tiles
    big = fit_tiles(tiles, 112)
    assert big.shape == (1, 112, 112, 3) and big.dtype == np.uint8
    np.testing.assert_allclose(big.reshape(-1, 3).mean(0), tiles.reshape(-1, 3).mean(0), atol=1.0)


def test_a_teacher_fed_at_another_um_px_than_its_own_is_named(cmu_svs, tcga_svs):
    """The teacher of an XMAG student (training's crossmag: the student's 224 px tile spans 4x the teacher's field,
    exported at 4x the um/px) sees the student's tiles at 4x its own um/px: a map it never makes at its own
    magnification. The maps said nothing (found pairing a 2 um/px student with a 0.5 um/px teacher)."""
    import dataclasses

    from napari_pathdistill._qt._attention_view import agreement_text

    teacher, student = tiny_model(tile_px=56), tiny_model(tile_px=56, seed=1)
    student.spec = dataclasses.replace(student.spec, mpp=2.0)  # 56 px x 2 um = 112 um tiles
    pair = drain(iter_attention_pair(teacher, student, cmu_svs, max_tiles=2, overlap=0.0))
    t, s = pair.sources
    assert t.fed_mpp == pytest.approx(112 / 56) and t.own_mpp == 0.5 and t.off_scale() == pytest.approx(4.0)
    assert s.off_scale() is None  # the tiles are cut at the student's own um/px
    assert t.label() == "teacher last-block attention, head mean, at 2.00 um/px (own 0.50): tiny-vit"
    assert s.label() == "student last-block attention, head mean: tiny-vit"
    assert agreement_text(pair).startswith("The teacher saw the tiles at 2.00 um/px, 4.0x its own 0.50")
    # a 112 px teacher at 0.25 um/px over the same 28 um field sees it at its own um/px: no note
    fine = tiny_model(tile_px=112)
    fine.spec = dataclasses.replace(fine.spec, mpp=0.25)
    same = drain(iter_attention_pair(fine, teacher, cmu_svs, max_tiles=2, overlap=0.0)).sources[0]
    assert same.fed_mpp == pytest.approx(0.25) and same.off_scale() is None
    # a slide without um/px cuts tiles in level-0 px: what the models saw is unknown, nothing is claimed
    unknown = drain(iter_attention_pair(teacher, student, tcga_svs, max_tiles=2, overlap=0.0)).sources[0]
    assert unknown.fed_mpp is None and unknown.off_scale() is None


def test_the_finer_model_gets_the_slide_s_pixels_not_the_coarser_tile_upsampled(cmu_svs):
    """A 112 px teacher at 1 um/px beside a 56 px student at 2 um/px (the same 112 um field): the tiles were read
    at the student's 56 px and blown up to 112 for the teacher, half the detail its own um/px holds (found
    checking how models of different input sizes share one region). Both now get the slide's pixels."""
    import dataclasses

    from skimage.transform import resize

    teacher, student = tiny_model(tile_px=112), tiny_model(tile_px=56, seed=1)
    teacher.spec = dataclasses.replace(teacher.spec, mpp=1.0)
    student.spec = dataclasses.replace(student.spec, mpp=2.0)
    seen: dict[str, list[np.ndarray]] = {"teacher": [], "student": []}
    for name, model in (("teacher", teacher), ("student", student)):
        real = model.preprocess  # the real preprocessing runs: only what each model is given is recorded
        model.preprocess = lambda t, real=real, name=name: (seen[name].append(np.array(t)), real(t))[1]
    pair = drain(iter_attention_pair(teacher, student, cmu_svs, max_tiles=3, overlap=0.0))
    assert pair.sources[0].off_scale() is None  # the teacher sees its own um/px
    with open_pyramid(cmu_svs) as pyr:
        side = round(pair.tile_px_level0)  # 112 um at 0.499 um/px: 224 level-0 px
        for k, (x, y) in enumerate(pair.coords):
            region = pyr.read_region((int(x), int(y)), 0, (side, side))[..., :3]
            for name, px in (("teacher", 112), ("student", 56)):
                want = np.rint(resize(region, (px, px), order=1, anti_aliasing=True) * 255)
                got = np.concatenate(seen[name])[k].astype(float)
                # each model's tile is the slide's own (the teacher's 56 px copy blown up differed by 17 levels)
                np.testing.assert_allclose(got, want, atol=1, err_msg=name)


def test_a_region_off_the_slide_is_refused_before_the_tissue_detection(cmu_svs):
    """A view panned off the slide ran the whole tissue detection, then said 'No tissue tile in the chosen region:
    ... lower min tissue', which could not help: it now says the region shows none of the slide, at once."""
    from napari_pathdistill.errors import EmptyTissueError

    vit = tiny_model(tile_px=56)
    right_of_it, above_left = (3000.0, 100.0, 4000.0, 900.0), (-900.0, -800.0, -10.0, -5.0)
    for bbox in (right_of_it, above_left):
        steps = iter_attention_pair(vit, vit, cmu_svs, bbox=bbox)
        with pytest.raises(EmptyTissueError, match="shows none of the slide"):
            next(steps)  # before the first Progress ("finding tissue")
    edge = drain(iter_attention_pair(vit, vit, cmu_svs, bbox=(1000.0, 2700.0, 1600.0, 3500.0), max_tiles=2))
    assert len(edge.coords) == 2  # a view over the slide's bottom edge still maps the tissue tiles in it


def test_cancel_stops_a_batch_inside_the_teacher_s_forward(cmu_svs):
    """Cancel was read between batches only: a batch of 8 tiles through the EfficientNet-Lite2 teacher's Grad-CAM
    and the bundled student takes 2.5 s on an idle CPU (7.9 s measured at load 7), all of it run after the press.
    The forwards now stop at their next Python call: pressed in the teacher's first block, the teacher's later
    blocks and the student never run."""
    teacher, student = tiny_model(tile_px=56), tiny_model(tile_px=56, seed=1)
    blocks = list(teacher.module.get_submodule("blocks").children())
    cancel, ran = threading.Event(), []
    blocks[0].register_forward_hook(lambda *_: cancel.set())  # Cancel pressed while the first block runs
    blocks[-1].register_forward_hook(lambda *_: ran.append("teacher's last block"))
    student.module.register_forward_hook(lambda *_: ran.append("student"))
    items = iter_attention_pair(teacher, student, cmu_svs, max_tiles=16, batch_size=8, cancel=cancel)
    assert next(items).stage == "finding tissue"
    with pytest.raises(Cancelled, match="Attention cancelled"):
        next(items)
    assert ran == []


def test_a_flat_map_is_called_flat_not_shown_as_attention(cmu_svs) -> None:
    """Each map is shown as percentile ranks, so a random-init ViT's uniform attention (raw p1-p99 apart by 1e-4 of
    its value) looked as structured as a trained model's: the summary now says which side's map is flat."""
    from napari_pathdistill._qt._attention_view import agreement_text
    from napari_pathdistill.models.factory import load_model

    flat = drain(iter_attention_pair(tiny_model(), tiny_model(seed=1), cmu_svs, max_tiles=2, overlap=0.0))
    text = agreement_text(flat)
    assert "The teacher's map is flat (raw p1-p99" in text and "The student's map is flat" in text
    trained = load_model("pathdistill-student", "cpu")
    real = drain(iter_attention_pair(trained, tiny_model(), cmu_svs, max_tiles=2, overlap=0.0))
    text = agreement_text(real)
    assert "teacher's map is flat" not in text and "The student's map is flat" in text
