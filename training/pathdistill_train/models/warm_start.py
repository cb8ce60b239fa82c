"""Warm-start a student ViT from another ViT's weights (``student.init_weights``), dinov2-style.

dinov2's ``student.pretrained_weights`` loads a checkpoint into the student before training. Here the source
may have another patch size, grid or depth than the student (e.g. the v1 bundled student, ViT-Ti/14 with 12
blocks, into the v2 shape, ViT-Ti/16 with 8 blocks): the patch-embedding kernel is resampled with timm's
``resample_patch_embed`` (FlexiViT's pseudo-inverse resize, so a patch keeps its projection), the absolute
position embedding with ``resample_abs_pos_embed`` (bicubic over the patch grid), blocks the student has are
taken in order (``blocks.0`` .. ``blocks.{depth-1}``), blocks it lacks are dropped, and blocks the source lacks
stay randomly initialised. ``student.init_blocks`` picks which source blocks, in order, make a shallower student
(layer dropping as in DistilBERT's every-other-layer init, e.g. ``[0, 2, 4, 5, 7]`` of 8 blocks for 5). Any other tensor whose shape differs (e.g. another width) is an error: a silent
partial load would train a student that is neither warm nor documented as cold.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_pathdistill.models.pretrained import read_state_dict
from napari_pathdistill.models.torch_file import DamagedTorchFile
from pathdistill_train.errors import TrainConfigError

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def read_init_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a pathdistill export folder (``model.safetensors``) or the name of a shipped one, a
    ``.safetensors`` or a weights-only torch state dict; a ``model.`` prefix (TokenEncoder keys) is stripped."""
    from napari_pathdistill.models.factory import checkpoint_path

    p = checkpoint_path(str(path)) or Path(path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise TrainConfigError(f"student.init_weights: {p} not found")
    try:
        state = read_state_dict(p)
    except DamagedTorchFile as e:
        raise TrainConfigError(f"student.init_weights: {e}; copy or export it again") from e
    except Exception as e:
        raise TrainConfigError(f"student.init_weights: {p} is not a weights-only state dict ({e})") from e
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    return state


def _grid(model: Any) -> tuple[int, int]:
    return tuple(int(g) for g in model.patch_embed.grid_size)  # type: ignore[return-value]


def _adapt(key: str, src: torch.Tensor, dst: torch.Tensor, model: Any) -> torch.Tensor:
    """``src`` reshaped to ``dst``'s shape where a ViT resampling applies; otherwise an error."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    if src.shape == dst.shape:
        return src
    if key == "patch_embed.proj.weight" and src.shape[:2] == dst.shape[:2]:
        return resample_patch_embed(src.float(), list(dst.shape[-2:])).to(dst.dtype)
    if key == "pos_embed" and src.shape[-1] == dst.shape[-1]:
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        side = round((src.shape[1] - prefix) ** 0.5)
        if side * side == src.shape[1] - prefix:
            return resample_abs_pos_embed(src.float(), list(_grid(model)), [side, side], prefix).to(dst.dtype)
    raise TrainConfigError(
        f"student.init_weights: {key} has shape {tuple(src.shape)}, the student needs {tuple(dst.shape)}; "
        "only the patch size, the position grid and the depth may differ"
    )


def select_blocks(state: dict[str, torch.Tensor], blocks: list[int], depth: int) -> dict[str, torch.Tensor]:
    """``state`` with source blocks ``blocks`` renumbered ``0 .. len(blocks) - 1`` and every other block dropped.

    Raises:
        TrainConfigError: ``blocks`` does not name ``depth`` distinct source blocks in increasing order.
    """
    have = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    if len(blocks) != depth or sorted(set(blocks)) != list(blocks) or not set(blocks) <= have:
        raise TrainConfigError(
            f"student.init_blocks={list(blocks)} must list {depth} distinct source blocks in increasing order "
            f"(the student's depth), out of the source's {sorted(have)}"
        )
    index = {src: i for i, src in enumerate(blocks)}
    out = {}
    for key, value in state.items():
        m = _BLOCK.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(1)) in index:
            out[f"blocks.{index[int(m.group(1))]}.{key[m.end() :]}"] = value
    return out


def warm_start(
    model: nn.Module, state: dict[str, torch.Tensor], blocks: list[int] | None = None
) -> dict[str, Any]:
    """Load ``state`` into the timm ViT ``model`` (in place), adapting patch size, grid and depth.

    Args:
        model: the student's timm ViT (``TokenEncoder.model``).
        state: the source ViT's tensors.
        blocks: source block indices for the student's blocks, in order (``student.init_blocks``);
            None takes the first ``depth`` blocks.

    Returns:
        A record for logs and the export: loaded / resampled / dropped tensors and random blocks.

    Raises:
        TrainConfigError: a tensor the student has no place for outside dropped blocks, or a shape that
            cannot be resampled.
    """
    target = model.state_dict()
    depth = len(getattr(model, "blocks", []))
    skipped: list[int] = []
    if blocks:
        have = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
        state = select_blocks(state, list(blocks), depth)
        skipped = sorted(have - set(blocks))
    new: dict[str, torch.Tensor] = {}
    resampled, dropped = [], []
    for key, value in state.items():
        m = _BLOCK.match(key)
        if m and int(m.group(1)) >= depth:
            dropped.append(key)
            continue
        if key not in target:
            raise TrainConfigError(f"student.init_weights: {key} has no counterpart in the student")
        new[key] = _adapt(key, value, target[key], model)
        if new[key].shape != value.shape:
            resampled.append(key)
    src_blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    random_blocks = [i for i in range(depth) if i not in src_blocks]
    missing = [k for k in target if k not in new and not _in_blocks(k, random_blocks)]
    if missing:
        raise TrainConfigError(f"student.init_weights: the file lacks {missing[:5]} (of {len(missing)})")
    model.load_state_dict(new, strict=False)
    return {
        "loaded": len(new),
        "resampled": resampled,
        "dropped_blocks": skipped or sorted({int(_BLOCK.match(k).group(1)) for k in dropped}),  # type: ignore[union-attr]
        "random_blocks": random_blocks,
        "source_blocks": list(blocks) if blocks else None,
    }


def _in_blocks(key: str, blocks: list[int]) -> bool:
    m = _BLOCK.match(key)
    return m is not None and int(m.group(1)) in blocks


def describe(path: str | Path, record: dict[str, Any]) -> str:
    """One log line for a warm start."""
    keep = {
        k: record.get(k) for k in ("loaded", "resampled", "dropped_blocks", "random_blocks", "source_blocks")
    }
    return f"student warm-started from {path}: {json.dumps(keep)}"
