"""One slide of a cohort: the options every slide shares, its outcome, and embedding it with a cached model.

A leaf of :mod:`~napari_pathdistill.inference.cohort` (the in-process loop and the dask cluster) and of
:mod:`~napari_pathdistill.inference.slide_process` (the child process of ``--slide-timeout``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.clam_output import write_clam
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.plism_output import write_plism
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress


@dataclass(frozen=True)
class CohortOptions:
    """What every slide task needs (plain values: they are pickled to the workers).

    Attributes:
        model: registry name, checkpoint folder or ``hf-hub:`` id, resolvable on every worker.
        out_dir: output folder (shared by all workers): ``<out_dir>/<slide stem>.h5``.
        tile_px, mpp: tile side and um/px (None: the model's).
        fallback_mpp: level-0 um/px of slides whose file states none (the others keep their own).
        formats: output layouts, "h5" always, "plism" for ``<out>/<model>/<slide>/features.npy`` and "clam" for
            ``<out>/h5_files/<slide>.h5`` + ``<out>/pt_files/<slide>.pt`` (``inference.clam_output``).
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
    num_workers: int | None = None  # reader threads per slide; None: reader_threads(device)
    formats: tuple[str, ...] = ("h5",)
    overwrite: bool = False
    slide_timeout: float | None = None


@dataclass(frozen=True)
class SlideOutcome:
    """Result of one slide: the files written (or kept: ``skipped``), or the error (``"<Type>: <message>"``).

    ``warnings`` are the lines of the output's ``warning`` attr (e.g. the slide has no MPP, tissue detection
    met undecodable tiles) and its skipped tiles; ``tiles`` the rows of its output (None: failed); ``resumed``
    the rows an earlier run had embedded into its partial output (0: none); ``interrupted`` a slide stopped by
    its cancel event (its embedded rows are kept in the partial output, the next run resumes them).
    """

    slide: str
    outputs: tuple[str, ...] = ()
    error: str | None = None
    worker: str = "local"
    skipped: bool = False
    warnings: tuple[str, ...] = ()
    tiles: int | None = None
    resumed: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when the slide was embedded."""
        return self.error is None


def embed_one(
    slide: str | Path,
    model: EmbeddingModel,
    opts: CohortOptions,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> SlideOutcome:
    """Embed one slide with a loaded model; any error becomes ``SlideOutcome.error`` instead of raising.

    A complete output of the same embedding is kept (``skipped``) unless ``opts.overwrite``. When ``cancel`` is
    set the slide stops after its current batch, with its embedded rows written (``interrupted``).
    """
    stages: list[str] = []
    resumed = 0

    def seen(p: Progress) -> None:
        nonlocal resumed
        stages.append(p.stage)
        if p.stage == "resumed":
            resumed = p.done
        if progress is not None:
            progress(p)

    try:
        h5 = embed_slide(
            slide, model, opts.out_dir, tile_px=opts.tile_px, mpp=opts.mpp, fallback_mpp=opts.fallback_mpp,
            min_tissue=opts.min_tissue, batch_size=opts.batch_size,
            num_workers=reader_threads(model.device) if opts.num_workers is None else opts.num_workers,
            overwrite=opts.overwrite, progress=seen, cancel=cancel,
        )  # fmt: skip
        if h5.name.endswith(".partial"):  # cancelled: its rows are kept for the next run
            return SlideOutcome(str(slide), error="interrupted", resumed=resumed, interrupted=True)
        outputs = [h5]
        if "plism" in opts.formats:
            outputs.append(write_plism(h5, opts.out_dir))
        if "clam" in opts.formats:
            outputs.extend(write_clam(h5, opts.out_dir))
        skipped = stages[-1:] == ["skipped"]
        said, tiles = _facts(h5)
        return SlideOutcome(str(slide), tuple(map(str, outputs)), skipped=skipped, warnings=said, tiles=tiles,
                            resumed=resumed)  # fmt: skip
    except Exception as exc:  # per-slide failure: reported, the cohort goes on
        return SlideOutcome(str(slide), error=_describe(exc))


def quiet_slide_warnings() -> None:
    """Silence, in this process, the warnings that a :class:`SlideOutcome` carries to the report (a slide without
    MPP, undecodable tiles): for the processes that embed slides for a cohort (dask workers, ``--slide-timeout``
    children), whose own ``file:line: NoMPPWarning: ...`` lines would repeat the CLI's ``WARNING SLIDE: ...``."""
    import warnings

    from napari_pathdistill.errors import CorruptTileWarning
    from napari_pathdistill.inference.embed import NoMPPWarning

    for quiet in (NoMPPWarning, CorruptTileWarning):
        warnings.simplefilter("ignore", quiet)


def reader_threads(device: object) -> int:
    """Default reader threads for one slide: enough to feed a GPU (decoding releases the GIL; 2 threads
    capped an H100 at ~1,350 tiles/s), two on a CPU, whose cores the model itself needs."""
    if getattr(device, "type", str(device)) == "cuda":
        return max(2, min(16, (os.cpu_count() or 2) - 1))
    return 2


def _facts(h5: Path) -> tuple[tuple[str, ...], int]:
    """The ``warning`` attr lines of an embedding HDF5 and its skipped (undecodable) tiles; its rows."""
    import h5py

    from napari_pathdistill.inference.outputs import skipped_message

    with h5py.File(h5, "r") as f:
        w, n_skipped = f.attrs.get("warning"), int(f.attrs.get("skipped_tiles", 0))
        rows = int(f["coords"].shape[0])
    return tuple(str(w or "").splitlines()) + ((skipped_message(n_skipped),) if n_skipped else ()), rows


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
