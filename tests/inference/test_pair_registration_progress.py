"""Progress and Cancel of the similarity run's registration on the real OS-2 scanner pair (NDPI vs VSI)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.inference.pair_similarity import CANCELLED, iter_pair_similarity, register_pair
from napari_pathdistill.progress import Progress, reported
from napari_pathdistill.wsi.pyramid import open_pyramid


def _registration_steps(steps) -> list[Progress]:
    """The run's items up to the first one of another stage (the generator is closed there)."""
    seen = []
    for item in steps:
        if not isinstance(item, Progress) or item.stage != "registration":
            break
        seen.append(item)
    steps.close()
    return seen


def test_the_registration_s_progress_moves_and_reaches_the_end(os2_pair, tiny_vit_2um):
    """The bar sat at 'registration: 0/?' (one indeterminate step) for the whole search, tens of seconds on a
    large slide: it now goes from 0 to the end through the thumbnail reads, the angles and the refinement."""
    seen = _registration_steps(iter_pair_similarity(tiny_vit_2um, *os2_pair, view_size=None))
    done = [p.done for p in seen]
    assert {p.total for p in seen} == {100}, seen
    assert done[0] == 0 and done[-1] == 100 and done == sorted(done), done
    assert len(set(done)) >= 20, done  # it moves: thumbnails, 24 angles, the refinement's evaluations


def test_cancel_inside_the_registration_search_stops_within_a_few_items(os2_pair, tiny_vit_2um):
    cancel = threading.Event()
    steps = iter_pair_similarity(tiny_vit_2um, *os2_pair, view_size=None, cancel=cancel)
    after = 0
    with pytest.raises(Cancelled, match=CANCELLED):
        for item in steps:
            if cancel.is_set():
                after += 1
            elif isinstance(item, Progress) and item.stage == "registration" and item.done >= 40:
                cancel.set()  # inside the search (the thumbnails are its first 20)
    assert cancel.is_set() and after <= 3, after


def returned(steps):
    """A generator's return value, once it has yielded all its items."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def test_the_transform_is_the_one_of_the_plain_call(os2_pair):
    """Reported or not, the registration is the same computation (the same thumbnails, the same search), and
    the thumbnails it hands back are the slides' (for the registered view to use again)."""
    from napari_pathdistill.inference.pair_registration import THUMB_SIDE, iter_register_pair

    with open_pyramid(os2_pair[0]) as a, open_pyramid(os2_pair[1]) as b:
        transform, (read_a, read_b) = returned(iter_register_pair(a, b))
        plain = register_pair(a, b)
        thumb_a, thumb_b = a.thumbnail(THUMB_SIDE), b.thumbnail(THUMB_SIDE)
    np.testing.assert_array_equal(transform.matrix, plain.matrix)
    for read, thumb in ((read_a, thumb_a), (read_b, thumb_b)):
        np.testing.assert_array_equal(read[0], thumb[0])
        assert read[1] == thumb[1]


def test_reported_hands_back_errors_and_stops_the_call_when_closed() -> None:
    stopped = threading.Event()

    def count(report) -> int:
        try:
            for i in range(1, 10_000_000):
                report(i / 10_000_000)
        except Cancelled:
            stopped.set()
            raise
        return 1

    steps = reported(count, "counting")
    assert next(steps) == Progress(0, 100, "counting")
    assert next(steps).done == 1
    steps.close()  # the consumer stops: the call stops at its next report, and is waited for
    assert stopped.is_set()

    def fail(report) -> None:
        report(0.5)
        raise ValueError("bad slide")

    with pytest.raises(ValueError, match="bad slide"):
        list(reported(fail, "failing"))
    assert returned(reported(lambda report: 7, "quick")) == 7
    assert [p.done for p in reported(lambda report: 7, "quick")] == [0, 100]


def test_cancel_during_the_registered_view_stops_within_a_few_items(os2_pair, tiny_vit_2um):
    """After the tiles were embedded, the registered view (B resampled into A's frame) read both thumbnails again
    and warped them without a look at Cancel (~2-3 s here, more on a large slide): it now has its own stage,
    strip by strip, and Cancel ends the run at the next strip."""
    cancel = threading.Event()
    after = []
    with pytest.raises(Cancelled, match=CANCELLED):
        for item in iter_pair_similarity(tiny_vit_2um, *os2_pair, top_k=1, cancel=cancel):
            if cancel.is_set():
                after.append(item)
            elif isinstance(item, Progress) and item.stage == "registered view":
                assert item.total >= 8  # 1024 px thumbnails, strips of 64 rows
                cancel.set()
    assert cancel.is_set() and len(after) <= 1, after


def test_the_run_reads_each_thumbnail_once(os2_pair, tiny_vit_2um, monkeypatch):
    """The registration's 1024 px thumbnails of A and B serve the registered view too (it read both again)."""
    from napari_pathdistill.wsi.pyramid import Pyramid

    reads: list[tuple[str, int]] = []
    real = Pyramid.thumbnail

    def counted(self, max_size=1024, *args, **kw):
        reads.append((self.path.name, max_size))
        return real(self, max_size, *args, **kw)

    monkeypatch.setattr(Pyramid, "thumbnail", counted)
    res = iter_pair_similarity(tiny_vit_2um, *os2_pair, top_k=1)
    items = list(res)
    view = items[-1].registered
    assert view is not None and view.a.shape == (1024, 1024, 3) and view.inside.mean() > 0.98
    assert len(reads) == len(set(reads)), reads
    stages = [p.stage for p in items[:-1]]
    done = [p.done for p in items[:-1] if p.stage == "registered view"]
    assert done == sorted(done) and done[-1] == items[-2].total and stages[-1] == "registered view"


def test_the_tissue_step_reports_its_read_and_keeps_its_mask(os2_pair, tiny_vit_2um):
    """'tissue and tile grids' was one indeterminate step (0/?) around the read of A's 2,048 px detection
    thumbnail, the slow part on a large slide; it now reports the read to its end, and finds the same tiles."""
    from napari_pathdistill.wsi.tiling import detect_tissue, make_tile_grid

    items = list(iter_pair_similarity(tiny_vit_2um, *os2_pair, top_k=1, view_size=None))
    tissue = [p for p in items[:-1] if p.stage == "tissue and tile grids"]
    done = [p.done for p in tissue]
    assert {p.total for p in tissue} == {100} and done[0] == 0 and done[-1] == 100 and done == sorted(done)
    with open_pyramid(os2_pair[0]) as a:
        grid = make_tile_grid(a, tile_px=56, mpp=2.0, min_tissue=0.5, mask=detect_tissue(a))
    assert len(items[-1].cosine) + items[-1].dropped == len(grid)
