"""Cohorts: embed many slides in-process, or one slide per task on a dask.distributed cluster.

Every slide goes through :func:`~napari_pathdistill.inference.embed.embed_slide`, so outputs are atomic and a
rerun resumes. On a cluster the model is loaded once per worker process (cached by model, device and amp),
GPU workers see one GPU each and take one slide at a time (``resources={"GPU": 1}``), and CPU workers split
the cores (``torch.set_num_threads``). A slide that fails is reported with its name; the others go on.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.embed import embed_slide, write_plism
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from distributed import Client


@dataclass(frozen=True)
class CohortOptions:
    """What every slide task needs (plain values: they are pickled to the workers).

    Attributes:
        model: registry name, checkpoint folder or ``hf-hub:`` id, resolvable on every worker.
        out_dir: output folder (shared by all workers): ``<out_dir>/<slide stem>.h5``.
        tile_px, mpp: tile side and um/px (None: the model's).
        fallback_mpp: level-0 um/px of slides whose file states none (the others keep their own).
        formats: output layouts, "h5" always and "plism" for ``<out>/<model>/<slide>/features.npy``.
        overwrite: recompute slides whose complete output exists (default: skip them).
        slide_timeout: seconds one slide may take (None: no limit); with a limit every slide runs in a child
            process that is killed when it exceeds it (see :mod:`~napari_pathdistill.inference.slide_process`).
    """

    model: str
    out_dir: str
    device: str = "auto"
    amp: str = "auto"
    tile_px: int | None = None
    mpp: float | None = None
    fallback_mpp: float | None = None
    min_tissue: float = 0.5
    batch_size: int = 32
    num_workers: int = 2
    formats: tuple[str, ...] = ("h5",)
    overwrite: bool = False
    slide_timeout: float | None = None


@dataclass(frozen=True)
class SlideOutcome:
    """Result of one slide: the files written (or kept: ``skipped``), or the error (``"<Type>: <message>"``).

    ``warnings`` are the output's ``warning`` attr (e.g. the slide has no MPP).
    """

    slide: str
    outputs: tuple[str, ...] = ()
    error: str | None = None
    worker: str = "local"
    skipped: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the slide was embedded."""
        return self.error is None


def embed_one(
    slide: str | Path,
    model: EmbeddingModel,
    opts: CohortOptions,
    progress: Callable[[Progress], None] | None = None,
) -> SlideOutcome:
    """Embed one slide with a loaded model; any error becomes ``SlideOutcome.error`` instead of raising.

    A complete output of the same embedding is kept (``skipped``) unless ``opts.overwrite``.
    """
    stages: list[str] = []

    def seen(p: Progress) -> None:
        stages.append(p.stage)
        if progress is not None:
            progress(p)

    try:
        h5 = embed_slide(
            slide, model, opts.out_dir, tile_px=opts.tile_px, mpp=opts.mpp, fallback_mpp=opts.fallback_mpp,
            min_tissue=opts.min_tissue, batch_size=opts.batch_size, num_workers=opts.num_workers,
            overwrite=opts.overwrite, progress=seen,
        )  # fmt: skip
        outputs = [h5]
        if "plism" in opts.formats:
            outputs.append(write_plism(h5, opts.out_dir))
        skipped = stages[-1:] == ["skipped"]
        return SlideOutcome(str(slide), tuple(map(str, outputs)), skipped=skipped, warnings=_warnings(h5))
    except Exception as exc:  # per-slide failure: reported, the cohort goes on
        return SlideOutcome(str(slide), error=_describe(exc))


def _warnings(h5: Path) -> tuple[str, ...]:
    """The ``warning`` attr of an embedding HDF5 and its skipped (undecodable) tiles, as a tuple."""
    import h5py

    from napari_pathdistill.inference.outputs import skipped_message

    with h5py.File(h5, "r") as f:
        w, n_skipped = f.attrs.get("warning"), int(f.attrs.get("skipped_tiles", 0))
    return ((str(w),) if w else ()) + ((skipped_message(n_skipped),) if n_skipped else ())


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PathDistillError) else f"{type(exc).__name__}: {exc}"


_MODELS: dict[tuple[str, str, str], EmbeddingModel] = {}
_MODELS_LOCK = threading.Lock()


def worker_model(opts: CohortOptions) -> EmbeddingModel:
    """The model of ``opts``, loaded once per process (cached by model, device and amp)."""
    from napari_pathdistill.models.factory import load_model

    key = (opts.model, opts.device, opts.amp)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(opts.model, opts.device, amp=opts.amp)
        return _MODELS[key]


def cpu_count() -> int:
    """Cores this process may use (CPU affinity when the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def slide_task(slide: str, opts: CohortOptions, slots_by_host: dict[str, int]) -> SlideOutcome:
    """Runs on a dask worker: cap torch threads to this worker's share of the host's cores, embed one slide.

    Args:
        slide: slide path, readable from the worker.
        opts: the cohort options.
        slots_by_host: concurrent task slots (sum of worker threads) per host name, so that
            slots * torch threads <= cores on every host.
    """
    import torch
    from distributed import get_worker

    worker = get_worker()
    slots = slots_by_host.get(urlparse(worker.address).hostname or "", 0) or worker.state.nthreads
    torch.set_num_threads(max(1, cpu_count() // slots))
    name = str(worker.name)
    if opts.slide_timeout:  # in this worker's child process, killed (and replaced) when the slide hangs
        return replace(_worker_process(opts, max(1, cpu_count() // slots)).run(slide, opts.slide_timeout),
                       worker=name)  # fmt: skip
    try:
        model = worker_model(opts)
    except Exception as exc:
        return SlideOutcome(slide, error=_describe(exc), worker=name)
    return replace(embed_one(slide, model, opts), worker=name)


_PROCESSES: dict[tuple[CohortOptions, int], Any] = {}


def _worker_process(opts: CohortOptions, threads: int) -> Any:
    """This worker thread's :class:`~napari_pathdistill.inference.slide_process.SlideProcess` for ``opts``
    (one per thread: a child runs one slide at a time)."""
    from napari_pathdistill.inference.slide_process import SlideProcess

    key = (opts, threading.get_ident())
    with _MODELS_LOCK:
        if key not in _PROCESSES:
            _PROCESSES[key] = SlideProcess(opts, threads=threads)
        return _PROCESSES[key]


def iter_cohort(slides: Iterable[str | Path], opts: CohortOptions, client: Client) -> Iterator[SlideOutcome]:
    """Submit one :func:`slide_task` per slide to ``client``'s cluster; yield outcomes as slides finish.

    When the workers advertise a ``GPU`` resource every task asks for one, so a GPU never runs two slides.
    A task lost with its worker (e.g. killed for memory) is reported like any other failure.
    """
    from distributed import as_completed

    workers = client.scheduler_info(n_workers=-1)["workers"]
    slots: Counter[str] = Counter()
    for address, w in workers.items():
        slots[urlparse(address).hostname or ""] += int(w["nthreads"])
    gpu = any("GPU" in (w.get("resources") or {}) for w in workers.values())
    futures = {
        client.submit(slide_task, str(s), opts, dict(slots), key=f"embed-{i}-{Path(s).name}", pure=False,
                      resources={"GPU": 1} if gpu else None): str(s)
        for i, s in enumerate(slides)
    }  # fmt: skip
    for future in as_completed(futures):
        try:
            yield future.result()
        except Exception as exc:
            yield SlideOutcome(futures[future], error=_describe(exc), worker="?")
        finally:
            future.release()


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
        yield client, device
