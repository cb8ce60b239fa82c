"""Cohorts: embed many slides in-process, or one slide per task on a dask.distributed cluster.

Every slide goes through :func:`~napari_pathdistill.inference.embed.embed_slide`, so outputs are atomic and a
rerun resumes. On a cluster the model is loaded once per worker process (cached by model, device and amp),
GPU workers see one GPU each and take one slide at a time (``resources={"GPU": 1}``), and CPU workers split
the cores (``torch.set_num_threads``). A slide that fails is reported with its name; the others go on.

Stopping a cohort (Ctrl-C in the driver, or its consumer giving up) tells the workers first: each running slide
stops after its current batch, writes the rows embedded since its last chunk and releases its lock, slides not
started are cancelled, and only then does the caller's cluster close (:func:`iter_cohort`). A local worker process
that receives SIGTERM itself (a batch scheduler stops the whole job) stops its slides in the same way
(``_stops.stop_all``) and exits when the driver, stopped by the same signal, closes the cluster.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference._stops import running, running_slides, stop_event, stop_run
from napari_pathdistill.inference.cohort_slide import (
    CohortOptions,
    SlideOutcome,
    _describe,
    embed_one,
    quiet_slide_warnings,
    worker_model,
)

__all__ = ["CohortOptions", "SlideOutcome", "cohort_client", "embed_one", "iter_cohort", "worker_model"]

if TYPE_CHECKING:
    from distributed import Client


def cpu_count() -> int:
    """Cores this process may use (CPU affinity when the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def slide_task(slide: str, opts: CohortOptions, slots_by_host: dict[str, int], run: str = "") -> SlideOutcome:
    """Runs on a dask worker: cap torch threads to this worker's share of the host's cores, embed one slide.

    Args:
        slide: slide path, readable from the worker.
        opts: the cohort options.
        slots_by_host: concurrent task slots (sum of worker threads) per host name, so that
            slots * torch threads <= cores on every host.
        run: the cohort run's id: once :func:`stop_run` of it ran on this worker, the slide stops after its
            current batch with its rows written (an ``interrupted`` outcome).
    """
    from distributed import get_worker

    worker, cancel = get_worker(), stop_event(run)
    name = str(worker.name)
    with running(run):  # counted before the stop flag is read: a stop waits for this slide or sees it return
        if cancel.is_set():  # the driver stopped before this slide started
            return SlideOutcome(slide, error="interrupted", worker=name, interrupted=True)
        return replace(_slide_on_worker(slide, opts, slots_by_host, cancel, worker), worker=name)


def _slide_on_worker(
    slide: str, opts: CohortOptions, slots_by_host: dict[str, int], cancel: threading.Event, worker: Any
) -> SlideOutcome:
    """:func:`slide_task`'s body: the torch threads of this worker's share, then the slide (in a child process
    when ``opts.slide_timeout``)."""
    import torch

    quiet_slide_warnings()  # the outcome carries them to the CLI's report
    slots = slots_by_host.get(urlparse(worker.address).hostname or "", 0) or worker.state.nthreads
    torch.set_num_threads(max(1, cpu_count() // slots))
    if opts.slide_timeout:  # in this worker's child process, killed (and replaced) when the slide hangs
        process = _worker_process(opts, max(1, cpu_count() // slots))
        return process.run(slide, opts.slide_timeout, cancel=cancel)
    try:
        model = worker_model(opts)
    except Exception as exc:
        return SlideOutcome(slide, error=_describe(exc))
    return embed_one(slide, model, opts, cancel=cancel)


_PROCESSES: dict[tuple[CohortOptions, int], Any] = {}
_PROCESSES_LOCK = threading.Lock()


def _worker_process(opts: CohortOptions, threads: int) -> Any:
    """This worker thread's :class:`~napari_pathdistill.inference.slide_process.SlideProcess` for ``opts``
    (one per thread: a child runs one slide at a time)."""
    from napari_pathdistill.inference.slide_process import SlideProcess

    key = (opts, threading.get_ident())
    with _PROCESSES_LOCK:
        if key not in _PROCESSES:
            _PROCESSES[key] = SlideProcess(opts, threads=threads)
        return _PROCESSES[key]


def iter_cohort(
    slides: Iterable[str | Path],
    opts: CohortOptions,
    client: Client,
    stopping: Callable[[], None] | None = None,
) -> Iterator[SlideOutcome]:
    """Submit one :func:`slide_task` per slide to ``client``'s cluster; yield outcomes as slides finish.

    When the workers advertise a ``GPU`` resource every task asks for one, so a GPU never runs two slides.
    A task lost with its worker (e.g. killed for memory) is reported like any other failure. Stopped early (a
    KeyboardInterrupt while waiting for slides, or the generator closed: the CLI closes it on Ctrl-C), it stops
    the cohort before it re-raises (:func:`stop_cohort`; ``stopping`` is called once the workers were told).
    """
    from distributed import as_completed

    workers = client.scheduler_info(n_workers=-1)["workers"]
    slots: Counter[str] = Counter()
    for address, w in workers.items():
        slots[urlparse(address).hostname or ""] += int(w["nthreads"])
    gpu = any("GPU" in (w.get("resources") or {}) for w in workers.values())
    run = uuid.uuid4().hex
    futures = {
        client.submit(slide_task, str(s), opts, dict(slots), run, key=f"embed-{run[:8]}-{i}-{Path(s).name}",
                      pure=False, resources={"GPU": 1} if gpu else None): str(s)
        for i, s in enumerate(slides)
    }  # fmt: skip
    pending = dict(futures)
    try:
        for future in as_completed(futures):
            del pending[future]
            try:
                yield future.result()
            except Exception as exc:
                yield SlideOutcome(futures[future], error=_describe(exc), worker="?")
            finally:
                future.release()
    except (KeyboardInterrupt, GeneratorExit):  # Ctrl-C, or the consumer stopped: the workers keep their rows
        if pending:
            stop_cohort(client, list(pending), run, stopping)
        raise


def stop_cohort(client: Client, futures: list, run: str, stopping: Callable[[], None] | None = None) -> None:
    """Stop the slides of ``run``: every worker's running slide stops after its current batch (its rows written,
    its lock released), slides not yet on a worker are cancelled; returns once ``futures`` are done and no worker
    runs a slide of ``run`` any more.

    A second KeyboardInterrupt meanwhile propagates at once (the caller's cluster then closes and kills them).
    """
    import contextlib

    from distributed import wait

    with contextlib.suppress(Exception):  # a worker already gone: nothing of it to stop
        client.run(stop_run, run)
    if stopping is not None:
        stopping()
    with contextlib.suppress(Exception):  # queued on the scheduler: never started, nothing to keep
        on_workers = {key for keys in client.processing().values() for key in keys}
        client.cancel([f for f in futures if f.key not in on_workers])
    with contextlib.suppress(Exception):
        wait(futures)
    _wait_for_running_slides(client, run)


def _wait_for_running_slides(client: Client, run: str, poll_s: float = 0.1) -> None:
    """Return once no worker executes a slide of ``run``: a task that dask cancelled while it ran (the scheduler
    had not yet listed it as processing) is done for its future but goes on in its worker thread until its
    current batch ends, with its slide's lock held."""
    import time

    while True:
        try:  # a worker gone meanwhile has nothing left running
            counts = client.run(running_slides, run, on_error="ignore")
        except Exception:  # the cluster itself is gone
            return
        if not any(counts.values()):
            return
        time.sleep(poll_s)


def visible_gpus() -> list[str]:
    """CUDA device ids/UUIDs this process may use (``CUDA_VISIBLE_DEVICES`` order), [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (env or [str(i) for i in range(torch.cuda.device_count())])[: torch.cuda.device_count()]


@contextmanager
def cohort_client(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    max_workers: int = 0,
    startup_timeout: float = 300.0,
) -> Iterator[tuple[Client, str]]:
    """A dask Client: connected to ``scheduler``, or to a new LocalCluster closed on exit.

    The LocalCluster has worker processes with one thread each: with CUDA (``device`` "auto" or "cuda"),
    one worker per visible GPU (at most ``workers``), each seeing only its GPU; else ``workers`` CPU workers
    (at most the cores). ``max_workers`` (> 0, e.g. the number of slides) caps the worker count. Raises
    :class:`PathDistillError` when the local workers do not start within ``startup_timeout`` seconds.

    Yields:
        (client, device): the device string the slide tasks should use.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client, device
        return
    gpus = visible_gpus() if device in ("auto", "cuda") or device.startswith("cuda:") else []
    if device.startswith("cuda:") and gpus:
        gpus, device = [gpus[int(device.split(":")[1])]], "cuda"
    cap = min(n for n in (workers or 0, max_workers, len(gpus) or cpu_count()) if n > 0)
    cluster: Any
    if gpus:
        from napari_pathdistill.inference._gpu_cluster import PinnedGPUCluster

        cluster = PinnedGPUCluster(gpus[:cap])
    else:
        cluster = LocalCluster(n_workers=cap, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        try:
            client.wait_for_workers(len(cluster.worker_spec), timeout=startup_timeout)
        except TimeoutError as exc:
            raise PathDistillError(
                f"dask workers did not start within {startup_timeout:.0f} s; see the worker logs above."
            ) from exc
        from napari_pathdistill.inference._dask_plugins import WorkerSignals

        client.register_plugin(WorkerSignals())
        try:
            yield client, device
        except KeyboardInterrupt:
            # Ctrl-C: the cluster is torn down mid-task; its nannies' "still alive, killing" warnings and
            # CancelledError tracebacks would bury the one "interrupted" line (outputs stay resumable)
            import logging

            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            raise
