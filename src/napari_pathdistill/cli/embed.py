"""``pathdistill embed SLIDES... --model M --out DIR``: tile embeddings of slides into HDF5 (resumable).

Serial in this process by default; ``--workers N`` starts a dask LocalCluster (one slide per task, one
worker per GPU with CUDA) and ``--scheduler ADDRESS`` uses an existing dask cluster. A slide that fails is
reported with its name and the others go on; the exit code is 1 when any slide failed. ``--slide-timeout S``
(default: none) gives up a slide after S seconds ("FAILED <slide>: timed out after S s"); slides then run in a
child process (per dask worker on a cluster), killed and replaced on a timeout.
"""

from __future__ import annotations

import argparse
import sys
import warnings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``embed`` sub-command."""
    p = sub.add_parser("embed", help="embed the tissue tiles of slides into <out>/<slide>.h5")
    p.add_argument("slides", nargs="+")
    p.add_argument(
        "--model", default="pathdistill-student", help="registry name, checkpoint folder or hf-hub: id"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--tile-px", type=int, default=None, help="tile side in px (default: the model's)")
    p.add_argument("--mpp", type=float, default=None, help="tile um/px (default: the model's)")
    p.add_argument("--mpp-override", type=float, default=None, metavar="UM_PER_PX",
                   help="level-0 um/px of slides whose file states none (slides with an MPP keep theirs)")  # fmt: skip
    p.add_argument("--min-tissue", type=float, default=0.5, help="minimum tissue fraction of a tile (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="tile-reading threads per slide (default: up to 16 on CUDA, enough to feed a GPU; 2 on CPU)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="autocast dtype (auto: bf16 on CUDA, fp32 elsewhere)")  # fmt: skip
    p.add_argument(
        "--format", default="h5", help="comma list of h5, plism (<out>/<model>/<slide>/features.npy)"
    )
    p.add_argument("--overwrite", action="store_true",
                   help="recompute slides whose complete <out>/<slide>.h5 exists (default: skip them)")  # fmt: skip
    p.add_argument("--slide-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up a slide after SECONDS (reported 'timed out', the cohort goes on; its partial "
                   "output stays resumable). Each slide then runs in a child process. Default: no limit")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="run on a dask LocalCluster of N worker processes (with CUDA: one per GPU, at most N)")  # fmt: skip
    where.add_argument("--scheduler", default=None, help="dask scheduler address of an existing cluster, e.g. "
                       "tcp://host:8786 (workers: dask worker ADDRESS --nworkers 1 --resources GPU=1 per GPU)")  # fmt: skip
    p.set_defaults(func=run)


def _options(args: argparse.Namespace):
    from napari_pathdistill.inference.cohort import CohortOptions

    return CohortOptions(
        model=args.model, out_dir=args.out, device=args.device, amp=args.amp, tile_px=args.tile_px,
        mpp=args.mpp, fallback_mpp=args.mpp_override, min_tissue=args.min_tissue, batch_size=args.batch_size,
        formats=tuple(f.strip() for f in args.format.split(",") if f.strip()), overwrite=args.overwrite,
        slide_timeout=args.slide_timeout or None, num_workers=args.num_workers,
    )  # fmt: skip


def _report(outcomes, total: int) -> int:
    """Show a slides bar over ``outcomes``; print outputs (stdout) and failures (stderr); 1 if any failed."""
    from tqdm import tqdm

    failed, skipped = [], 0
    with tqdm(total=total, desc="slides", unit="slide", file=sys.stderr) as bar:
        for o in outcomes:
            for w in o.warnings:
                tqdm.write(f"WARNING {o.slide}: {w}", file=sys.stderr)
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
            bar.update(1)
            bar.set_postfix(failed=len(failed), skipped=skipped)
    if failed:
        print(
            f"{len(failed)} of {total} slides failed: {', '.join(o.slide for o in failed)}", file=sys.stderr
        )
    return 1 if failed else 0


def _serial(args: argparse.Namespace, opts):
    """In-process: load the model once, then one slide after another with a tiles bar each."""
    from tqdm import tqdm

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
            with tqdm(desc=str(slide), unit="tile", file=sys.stderr, leave=False) as bar:

                def tick(p, bar=bar):
                    bar.total = p.total
                    bar.n = p.done
                    bar.refresh()

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
        yield from iter_cohort(args.slides, dataclasses.replace(opts, device=device), client)


def run(args: argparse.Namespace) -> int:
    """Embed the slides; returns 0, 1 when any slide failed, 2 when nothing could start."""
    from napari_pathdistill.errors import CorruptTileWarning, PathDistillError
    from napari_pathdistill.inference.embed import NoMPPWarning

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoMPPWarning)  # _report prints it once per slide, with its name
            warnings.simplefilter("ignore", CorruptTileWarning)  # likewise ("skipped N unreadable tiles")
            return _report(outcomes, len(args.slides))
    except (PathDistillError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
