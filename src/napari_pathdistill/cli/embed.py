"""``pathdistill embed SLIDES... --model M --out DIR``: tile embeddings of slides into HDF5 (resumable).

Serial in this process by default; ``--workers N`` starts a dask LocalCluster (one slide per task, one
worker per GPU with CUDA) and ``--scheduler ADDRESS`` uses an existing dask cluster. A slide that fails is
reported with its name and the others go on; the exit code is 1 when any slide failed. ``--slide-timeout S``
(default: none) gives up a slide after S seconds ("FAILED <slide>: timed out after S s"); slides then run in a
child process (per dask worker on a cluster), killed and replaced on a timeout.

Refused before any work, with one ``error:`` line and exit code 2: out-of-range option values (argparse), a
``--device`` this machine lacks, and two different slides of the same file name (both would write
``<out>/<stem>.h5``). A complete output made with other settings or from another slide is kept and its slide
reported failed, unless ``--overwrite``. Each slide's outcome (embedded, kept or failed and why, its tiles, outputs
and warnings) is also a row of ``<out>/embed_summary.csv`` (:mod:`~napari_pathdistill.cli._embed_summary`), which
reruns update in place.

Ctrl-C (and SIGTERM of this process, or of the whole job with its local dask workers) ends with ``interrupted``
(exit code 130; 143 ``terminated``) once the rows embedded so far are written and the slides' locks released, on a
cluster by its workers (a second Ctrl-C quits at once); a rerun resumes them (``resumed SLIDE: k of N tiles ...``).
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from napari_pathdistill.atomic import folder_problem
from napari_pathdistill.cli._argtypes import checked_float, fraction, positive_float, positive_int

#: the output layouts of ``--format`` (``h5`` is always written: plism's and CLAM's are copied from it)
FORMATS = ("h5", "plism", "clam")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``embed`` sub-command."""
    p = sub.add_parser("embed", help="embed the tissue tiles of slides into <out>/<slide>.h5")
    p.add_argument(
        "slides", nargs="+", help="slide files or DICOM folders (different file names: <out>/<stem>.h5)"
    )
    p.add_argument(
        "--model", default="pathdistill-student", help="registry name, checkpoint folder or hf-hub: id"
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: <out>/<slide>.h5 per slide and embed_summary.csv (created if needed)",
    )
    p.add_argument(
        "--tile-px", type=positive_int, default=None, help="tile side in px (default: the model's)"
    )
    p.add_argument("--mpp", type=positive_float, default=None, help="tile um/px (default: the model's)")
    p.add_argument("--mpp-override", type=positive_float, default=None, metavar="UM_PER_PX",
                   help="level-0 um/px of slides whose file states none (slides with an MPP keep theirs)")  # fmt: skip
    p.add_argument("--min-tissue", type=fraction, default=0.5,
                   help="minimum tissue fraction of a tile, 0 to 1 (default 0.5; 0: every tile, no tissue detection)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=32, help="tiles per forward pass (default 32)")
    p.add_argument("--num-workers", type=positive_int, default=None, metavar="N",
                   help="tile-reading threads per slide (default: up to 16 on CUDA, enough to feed a GPU; 2 on CPU)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="autocast dtype (auto: bf16 on CUDA, fp32 elsewhere)")  # fmt: skip
    p.add_argument("--format", default="h5", type=_formats, metavar="FORMATS",
                   help="comma list of h5 (always written), plism (<out>/<model>/<slide>_to_GMH_S60.tif/features.npy) "
                   "and clam (<out>/h5_files/<slide>.h5 and <out>/pt_files/<slide>.pt, as CLAM's extract_features_fp "
                   "writes them; CLAM's main.py loads <data_root_dir>/<task folder>/pt_files/<slide>.pt: --out "
                   "DATA_ROOT/<task folder>, then main.py --data_root_dir DATA_ROOT --embed_dim D)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="recompute slides whose complete <out>/<slide>.h5 exists, also one of other "
                   "settings or of another slide of the same name (default: keep a matching one, refuse "
                   "another)")  # fmt: skip
    p.add_argument("--slide-timeout", type=_timeout, default=None, metavar="SECONDS",
                   help="give up a slide after SECONDS (reported 'timed out', the cohort goes on; its partial "
                   "output stays resumable). Each slide then runs in a child process. 0 or default: "
                   "no limit")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, default=None,
                       help="run on a dask LocalCluster of N worker processes (with CUDA: one per GPU, at most N)")  # fmt: skip
    where.add_argument("--scheduler", default=None, help="dask scheduler address of an existing cluster, e.g. "
                       "tcp://host:8786 (workers: dask worker ADDRESS --nworkers 1 --resources GPU=1 per GPU)")  # fmt: skip
    p.set_defaults(func=functools.partial(run, parser=p))


def _formats(text: str) -> tuple[str, ...]:
    """``--format``: a comma list of :data:`FORMATS`, else an argparse error."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(FORMATS)}, got {text!r}"
            + (f" ({', '.join(unknown)} unknown)" if unknown else "")
        )
    return formats


def _timeout(text: str) -> float:
    """``--slide-timeout``: seconds >= 0 (0: no limit), else an argparse error."""
    return checked_float(text, lambda v: v >= 0, "seconds >= 0 (0: no limit)")


def _clash_message(slides: Sequence[str], out: str) -> str | None:
    """The error line when different slides would write the same ``<out>/<stem>.h5``, else None."""
    from napari_pathdistill.inference.embed import output_clashes, output_path

    clashes = output_clashes(slides)
    if not clashes:
        return None
    groups = "; ".join(f"{' and '.join(g)} -> {output_path(g[0], out)}" for g in clashes)
    return (
        f"slides with the same file name would write the same output: {groups}. Embed them into separate "
        "--out folders (one run each)"
    )


def _device_message(args: argparse.Namespace) -> str | None:
    """Why ``--device`` cannot run here, else None (not checked with ``--scheduler``: its workers decide)."""
    if args.scheduler is not None:
        return None
    from napari_pathdistill.device import resolve_device
    from napari_pathdistill.errors import DeviceError

    try:
        resolve_device(args.device)
    except DeviceError as exc:
        return f"argument --device: {exc}"
    return None


def _out_message(args: argparse.Namespace) -> str | None:
    """Why ``--out`` cannot take the outputs still to write, else None: checked before the model loads (an
    H-optimus-0 takes a minute to load before the first slide would have found a read-only folder). A folder
    that already holds every slide's output is fine read-only (complete outputs are kept), and workers behind
    ``--scheduler`` write on their own machines."""
    from napari_pathdistill.inference.embed import output_path

    out = Path(args.out).expanduser()
    if args.scheduler is not None or (
        not args.overwrite and all(output_path(s, out).is_file() for s in args.slides)
    ):
        return None
    problem = folder_problem(out)
    return None if problem is None else f"argument --out: {problem}"


def _options(args: argparse.Namespace):
    from napari_pathdistill.inference.cohort import CohortOptions

    return CohortOptions(
        model=args.model, out_dir=args.out, device=args.device, amp=args.amp, tile_px=args.tile_px,
        mpp=args.mpp, fallback_mpp=args.mpp_override, min_tissue=args.min_tissue, batch_size=args.batch_size,
        formats=args.format, overwrite=args.overwrite,
        slide_timeout=args.slide_timeout or None, num_workers=args.num_workers,
    )  # fmt: skip


def _report(outcomes, total: int, summary) -> int:
    """Show a slides bar over ``outcomes``; print outputs (stdout) and failures (stderr); record each in
    ``summary`` (an :class:`~napari_pathdistill.cli._embed_summary.EmbedSummary`); 1 if any failed."""
    from tqdm import tqdm

    from napari_pathdistill.cli._bars import progress_bar

    failed, skipped = [], 0
    with progress_bar(total=total, desc="slides", unit="slide") as bar:
        for o in outcomes:
            summary.add(o)
            for w in o.warnings:
                tqdm.write(f"WARNING {o.slide}: {w}", file=sys.stderr)
            if o.resumed:
                tqdm.write(f"resumed {o.slide}: {o.resumed} of {o.tiles} tiles were embedded by an earlier run",
                           file=sys.stderr)  # fmt: skip
            if o.skipped:
                skipped += 1
                tqdm.write(
                    f"skipped {o.slide}: complete output kept (--overwrite recomputes it)", file=sys.stderr
                )
            if o.ok:
                for path in o.outputs:
                    tqdm.write(path, file=sys.stdout)
            else:
                failed.append(o)
                tqdm.write(f"FAILED {o.slide}: {o.error}", file=sys.stderr)
            bar.set_postfix(failed=len(failed), skipped=skipped, refresh=False)
            bar.update(1)
    if failed:
        print(
            f"{len(failed)} of {total} slides failed: {', '.join(o.slide for o in failed)}", file=sys.stderr
        )
    if (path := summary.write()) is not None:
        print(f"summary: {path}", file=sys.stderr)
    return 1 if failed else 0


def _serial(args: argparse.Namespace, opts):
    """In-process: load the model once, then one slide after another with a tiles bar each."""
    from napari_pathdistill.cli._bars import advance, progress_bar
    from napari_pathdistill.inference.cohort import embed_one
    from napari_pathdistill.inference.slide_process import SlideProcess
    from napari_pathdistill.models.factory import load_model

    # with a time limit each slide runs in a child process, killed when it takes longer
    process = SlideProcess(opts) if opts.slide_timeout else None
    model = None if process else load_model(opts.model, device=opts.device, amp=opts.amp)

    def run_one(slide, tick):
        if process is not None:
            return process.run(str(slide), opts.slide_timeout, tick)
        return embed_one(slide, model, opts, progress=tick)

    try:
        for slide in args.slides:
            with progress_bar(desc=str(slide), unit="tile", leave=False) as bar:

                def tick(p, bar=bar):
                    advance(bar, p.done, p.total)

                yield run_one(slide, tick)
    finally:
        if process is not None:
            process.close()


def _distributed(args: argparse.Namespace, opts):
    """One slide per dask task, on a new LocalCluster or on the cluster behind ``--scheduler``."""
    import dataclasses

    from napari_pathdistill.inference.cohort import cohort_client, iter_cohort

    with cohort_client(
        scheduler=args.scheduler, workers=args.workers, device=opts.device, max_workers=len(args.slides)
    ) as (client, device):
        n = len(client.scheduler_info(n_workers=-1)["workers"])
        print(f"dask: {n} workers ({client.scheduler.address})", file=sys.stderr)
        yield from iter_cohort(args.slides, dataclasses.replace(opts, device=device), client, _stopping)


def _stopping() -> None:
    """Said on Ctrl-C while the dask workers write their rows (which may take a batch's time on each)."""
    print("stopping: each worker writes the rows it has embedded and releases its slide (Ctrl-C again to quit "
          "at once)", file=sys.stderr, flush=True)  # fmt: skip


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Embed the slides; returns 0, 1 when any slide failed, 2 when nothing could start.

    Slides that would write the same output and a ``--device`` this machine lacks are refused before any
    work (``parser.error``: exit code 2).
    """
    from napari_pathdistill.cli._embed_summary import EmbedSummary
    from napari_pathdistill.errors import CorruptTileWarning, PathDistillError
    from napari_pathdistill.inference.embed import NoMPPWarning

    problem = _clash_message(args.slides, args.out) or _device_message(args) or _out_message(args)
    if problem is not None:
        if parser is not None:
            parser.error(problem)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    opts = _options(args)
    distributed = args.workers is not None or args.scheduler is not None
    if distributed:
        try:
            import distributed as _  # noqa: F401
        except ImportError:
            print("error: --workers/--scheduler need dask.distributed: pip install "
                  "'napari-pathdistill[distributed]'", file=sys.stderr)  # fmt: skip
            return 2
    outcomes = _distributed(args, opts) if distributed else _serial(args, opts)
    summary = EmbedSummary(args.out, create=args.scheduler is None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoMPPWarning)  # _report prints it once per slide, with its name
            # likewise ("skipped N unreadable tiles", "tissue detection: N tiles of level L cannot be ...")
            warnings.simplefilter("ignore", CorruptTileWarning)
            return _report(outcomes, len(args.slides), summary)
    except (PathDistillError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        try:  # on Ctrl-C the cluster's workers first write their rows and release their slides
            outcomes.close()
        finally:  # also on Ctrl-C: the slides finished so far
            summary.write()
