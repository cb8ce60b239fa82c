"""The root leaves: Progress consumption helpers and atomic writes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from napari_pathdistill.atomic import atomic_path, atomic_write_text
from napari_pathdistill.errors import Cancelled
from napari_pathdistill.progress import (
    Progress,
    cancel_scope,
    checkpoint,
    drain,
    interruptible,
    relabel,
    reported,
)


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


#: checkpoints a reported call passes between two reports (a fold's, a block's worth of work)
LONG = 10**7


def _long_unit(loops: list[int]):
    """A ``reported`` call that reports half-way, then does a long unit of work with checkpoints inside."""

    def work(report):
        report(0.5)
        for i in range(LONG):
            loops[0] = i + 1
            checkpoint()
        report(1.0)
        return "done"

    return work


def test_a_closed_reported_call_stops_at_its_next_checkpoint_not_its_next_report() -> None:
    """Was: closed early (the Evaluate dock's Cancel, Ctrl-C in the CLI), ``reported`` made the call's next
    *report* raise and waited for it: a probe's whole fold, a k-NN overlap block (minutes at 100,000 tiles). The
    helper thread now runs in a cancel scope that closing sets: the call stops at its next checkpoint."""
    loops = [0]
    steps = reported(_long_unit(loops), "fold")
    assert [next(steps), next(steps)] == [Progress(0, 100, "fold"), Progress(50, 100, "fold")]
    steps.close()  # returns once the helper thread has stopped
    assert loops[0] < LONG  # the old code ran the whole unit (all LONG checkpoints) first


def test_a_reported_call_runs_in_its_consumers_cancel_scope() -> None:
    """Was: the helper thread was outside the worker's cancel scope, so the checkpoints of a probe or of the k-NN
    overlap run by ``reported`` never raised; a Cancel was seen at the next report only."""
    loops, cancel = [0], threading.Event()
    with cancel_scope(cancel, "run cancelled"):
        steps = reported(_long_unit(loops), "fold")
        assert [next(steps), next(steps)] == [Progress(0, 100, "fold"), Progress(50, 100, "fold")]
        cancel.set()
        with pytest.raises(Cancelled, match="run cancelled"):
            next(steps)
    assert loops[0] < LONG


def test_interruptible_makes_each_python_call_a_checkpoint_inside_a_scope_only() -> None:
    calls = []

    def step() -> None:
        calls.append(1)

    with interruptible():  # outside any scope: no hook
        step()
    cancel = threading.Event()
    with cancel_scope(cancel, "stopped"):
        with interruptible():
            step()
        cancel.set()
        step()  # no hook outside the block
        with pytest.raises(Cancelled, match="stopped"), interruptible():
            step()  # raised on entering the call, before its body
    assert len(calls) == 3
