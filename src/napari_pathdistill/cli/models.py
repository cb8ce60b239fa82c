"""``pathdistill models``: the model registry and where each model's weights are expected."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``models`` sub-command."""
    p = sub.add_parser("models", help="list the registered models and where their weights come from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per model: name, architecture, embedding, tile px, um/px, weights source."""
    from napari_pathdistill.models.registry import SHIPPED, get_spec, list_models

    for name in list_models():
        try:
            s = get_spec(name)
            print(
                f"{name:32s} {s.arch:36s} {s.embedding:9s} {s.tile_px}px {s.mpp}um/px  {getattr(s, 'weights', '')}"
            )
        except Exception:
            print(f"{name:32s} checkpoint folder {SHIPPED / name}")
    return 0
