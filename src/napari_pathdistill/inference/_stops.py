"""Per-process stop flags of cohort runs: set on a dask worker by the driver (:func:`stop_run`, through
``client.run``) or by the worker's own SIGTERM (:func:`stop_all`, ``_dask_plugins.WorkerSignals``).

A leaf of :mod:`~napari_pathdistill.inference.cohort` and of ``_dask_plugins`` (which ``cohort`` imports).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_STOPS: dict[str, threading.Event] = {}
_STOPS_LOCK = threading.Lock()
_RUNNING: Counter[str] = Counter()  # slides of each run executing in this process
_TERMINATED = threading.Event()  # set by stop_all: every run of this process stops


def stop_event(run: str) -> threading.Event:
    """This process's stop flag of the cohort run ``run`` (created on first use, set once :func:`stop_all` ran)."""
    with _STOPS_LOCK:
        event = _STOPS.setdefault(run, threading.Event())
        if _TERMINATED.is_set():
            event.set()
        return event


def stop_run(run: str) -> None:
    """Runs on every worker (``client.run``) when the driver stops: the slides of ``run`` stop after their current
    batch, and its slides that start later return at once."""
    stop_event(run).set()


def stop_all() -> None:
    """This worker process is being terminated (its SIGTERM): the slides of every run stop after their current
    batch with their rows written, and slides that start later return at once."""
    with _STOPS_LOCK:
        _TERMINATED.set()
        for event in _STOPS.values():
            event.set()


@contextmanager
def running(run: str) -> Iterator[None]:
    """Counts a slide of ``run`` as executing in this process while the block runs (:func:`running_slides`)."""
    with _STOPS_LOCK:
        _RUNNING[run] += 1
    try:
        yield
    finally:
        with _STOPS_LOCK:
            _RUNNING[run] -= 1
            if not _RUNNING[run]:
                del _RUNNING[run]


def running_slides(run: str) -> int:
    """Slides of ``run`` still executing in this process (``client.run``: a task that dask cancelled while it ran
    goes on in its thread until it sees its stop flag, holding its slide's lock until then)."""
    with _STOPS_LOCK:
        return _RUNNING[run]
