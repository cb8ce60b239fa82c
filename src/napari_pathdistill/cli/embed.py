"""``pathdistill embed SLIDES... --model M --out DIR``: tile embeddings of slides into HDF5 (resumable)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``embed`` sub-command."""
    p = sub.add_parser("embed", help="embed the tissue tiles of slides into <out>/<slide>.h5")
    p.add_argument("slides", nargs="+")
    p.add_argument(
        "--model", default="pathdistill-student", help="registry name, checkpoint folder or hf-hub: id"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--tile-px", type=int, default=None)
    p.add_argument("--mpp", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--format", default="h5", help="comma list of h5, plism (<out>/<model>/<slide>/features.npy)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Embed each slide in turn with a tqdm bar; returns 0."""
    from tqdm import tqdm

    from napari_pathdistill.inference.embed import embed_slide, write_plism
    from napari_pathdistill.models.registry import load_model

    model = load_model(args.model, device=args.device)
    for slide in args.slides:
        bar = tqdm(desc=str(slide), unit="tile")

        def tick(p, bar=bar):
            bar.total = p.total
            bar.n = p.done
            bar.refresh()

        path = embed_slide(
            slide,
            model,
            args.out,
            tile_px=args.tile_px,
            mpp=args.mpp,
            batch_size=args.batch_size,
            progress=tick,
        )
        bar.close()
        print(path)
        if "plism" in args.format.split(","):
            print(write_plism(path, args.out))
    return 0
