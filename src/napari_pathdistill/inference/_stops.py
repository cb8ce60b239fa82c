"""Per-process stop flags of cohort runs: set on a dask worker by the driver (:func:`stop_run`, through
``client.run``) or by the worker's own SIGTERM (:func:`stop_all`, ``_dask_plugins.WorkerSignals``).

A leaf of :mod:`~napari_pathdistill.inference.cohort` and of ``_dask_plugins`` (which ``cohort`` imports).
"""

from __future__ import annotations

import threading

_STOPS: dict[str, threading.Event] = {}
_STOPS_LOCK = threading.Lock()
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
