"""``pathdistill models``: the model registry and where each model's weights are expected."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``models`` sub-command."""
    p = sub.add_parser("models", help="list the registered models and where their weights come from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per model: name, architecture, embedding, tile px, um/px, weights source.

    Shipped checkpoints (``models/weights/<name>``) show the spec of their ``config.json``. The architecture is
    the timm name, followed in brackets by the shape its ``model_kwargs`` set over that name's defaults
    (:attr:`ModelSpec.shape_summary`, e.g. ``[ViT patch16 d192 x5 h3]`` for the bundled student).
    """
    from napari_pathdistill.errors import ModelLoadError
    from napari_pathdistill.models.factory import checkpoint_path, resolve_spec
    from napari_pathdistill.models.registry import list_models

    for name in list_models():
        try:
            s = resolve_spec(name)
        except ModelLoadError as exc:  # a shipped folder with a broken config.json
            print(f"{name:32s} unreadable: {exc}")
            continue
        source = s.weights if checkpoint_path(name) is None else f"checkpoint {checkpoint_path(name)}"
        arch = f"{s.arch} [{s.shape_summary}]" if s.shape_summary else s.arch
        print(f"{name:32s} {arch:56s} {s.embedding:9s} {s.tile_px}px {s.mpp}um/px  {source}")
    return 0
