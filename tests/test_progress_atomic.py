"""The root leaves: Progress consumption helpers and atomic writes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from napari_pathdistill.atomic import atomic_path, atomic_write_text
from napari_pathdistill.errors import Cancelled
from napari_pathdistill.progress import Progress, cancel_scope, checkpoint, drain, relabel


def _work(n: int):
    for i in range(n):
        yield Progress(i, n, "inner")
    yield {"result": n}


def test_drain_returns_the_result_and_reports_progress() -> None:
    seen: list[Progress] = []
    assert drain(_work(3), seen.append) == {"result": 3}
    assert [p.done for p in seen] == [0, 1, 2] and {p.stage for p in seen} == {"inner"}
    assert drain(iter([Progress(0, 1)])) is None


def test_relabel_renames_stages_and_returns_the_inner_result() -> None:
    def outer():
        res = yield from relabel(_work(2), "teacher")
        yield res

    items = list(outer())
    assert items == [Progress(0, 2, "teacher"), Progress(1, 2, "teacher"), {"result": 2}]
    kept = list(relabel(_work(1)))
    assert kept == [Progress(0, 1, "inner")]


def test_relabel_stops_when_cancelled() -> None:
    cancel = threading.Event()
    gen = relabel(_work(5), "embedding", cancel=cancel)
    assert next(gen) == Progress(0, 5, "embedding")
    cancel.set()
    with pytest.raises(Cancelled, match="embedding cancelled"):
        next(gen)


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.csv"
    atomic_write_text(target, "a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == target.parent and tmp.name.startswith(".")
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.csv"]


def test_checkpoints_raise_only_inside_a_cancelled_scope_of_their_own_thread() -> None:
    cancel, other = threading.Event(), threading.Event()
    checkpoint()  # outside any scope: nothing
    with cancel_scope(cancel, "outer stopped"):
        checkpoint()  # not cancelled yet
        cancel.set()
        raised: list[Cancelled] = []

        def elsewhere() -> None:
            try:
                checkpoint()
            except Cancelled as exc:
                raised.append(exc)

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        assert raised == []  # another thread is outside this scope
        with cancel_scope(other, "inner stopped"):
            checkpoint()  # the inner scope rules: not cancelled
            other.set()
            with pytest.raises(Cancelled, match="inner stopped"):
                checkpoint()
        with pytest.raises(Cancelled, match="outer stopped"):  # the outer scope is back
            checkpoint()
    checkpoint()  # and gone with its block
