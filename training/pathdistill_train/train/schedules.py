"""Step-indexed schedules (dinov2 ``utils.CosineScheduler``) and the optimiser's parameter groups."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


class CosineScheduler:
    """Linear warm-up from ``start_warmup_value`` then cosine from ``base_value`` to ``final_value``.

    Args:
        base_value: value at the end of warm-up.
        final_value: value at ``total_iters``.
        total_iters: schedule length in steps (indices past it return ``final_value``).
        warmup_iters: warm-up steps.
        start_warmup_value: value at step 0.
    """

    def __init__(
        self,
        base_value: float,
        final_value: float,
        total_iters: int,
        warmup_iters: int = 0,
        start_warmup_value: float = 0.0,
    ) -> None:
        self.final_value = final_value
        warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
        n = max(total_iters - warmup_iters, 0)
        iters = np.arange(n)
        cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(n, 1)))
        self.schedule = np.concatenate((warmup, cosine))

    def __getitem__(self, it: int) -> float:
        return float(self.schedule[it]) if it < len(self.schedule) else float(self.final_value)


def teacher_temp_schedule(warmup_temp: float, temp: float, warmup_iters: int, total_iters: int) -> np.ndarray:
    """Teacher temperature: linear warm-up to ``temp`` over ``warmup_iters`` steps, then constant."""
    warm = np.linspace(warmup_temp, temp, warmup_iters)
    return np.concatenate((warm, np.full(max(total_iters - warmup_iters, 0) + 1, temp)))


def _layer_id(name: str, depth: int) -> int:
    """0 for embeddings, i + 1 for ``blocks.i``, depth + 1 for the rest (norm, heads, adaptors)."""
    if name.startswith("student.model."):
        rest = name[len("student.model.") :]
        if rest.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed", "mask_token")):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
    return depth + 1


def param_groups(
    module: nn.Module, depth: int, layerwise_decay: float, patch_embed_lr_mult: float
) -> list[dict]:
    """One group per trainable parameter with ``lr_multiplier``, ``wd_multiplier`` and ``is_last_layer``.

    As dinov2's ``get_params_groups_with_decay``: biases, norms and LayerScale gammas get no weight decay, every
    other parameter (the class, register and position embeddings included) the scheduled one; layer-wise LR
    decay multiplies block ``i``'s LR by ``decay ** (depth + 1 - layer_id)``.
    """
    groups: list[dict[str, Any]] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult = layerwise_decay ** (depth + 1 - _layer_id(name, depth))
        if "patch_embed" in name:
            lr_mult *= patch_embed_lr_mult
        no_wd = name.endswith(".bias") or "norm" in name or "gamma" in name
        groups.append(
            {
                "params": [p],
                "name": name,
                "lr_multiplier": lr_mult,
                "wd_multiplier": 0.0 if no_wd else 1.0,
                "is_last_layer": "last_layer" in name,
            }
        )
    return groups


def clip_groups(module: nn.Module) -> list[list[nn.Parameter]]:
    """Trainable parameters grouped as dinov2 clips them: one group per child module (the student backbone, the
    DINO head, the iBOT head, ...) and per element of a child ``ModuleList`` (each teacher's heads, each feature
    loss's adaptors)."""
    groups: list[list[nn.Parameter]] = []
    for child in module.children():
        parts = list(child) if isinstance(child, nn.ModuleList) else [child]
        groups += [g for g in ([p for p in m.parameters() if p.requires_grad] for m in parts) if g]
    return groups


def clip_gradients(module: nn.Module, max_norm: float) -> float:
    """Clip the gradient norm of each :func:`clip_groups` group to ``max_norm`` separately (dinov2's
    ``for v in model.student.values(): v.clip_grad_norm_(clip)``), so the heads' large gradients do not shrink
    the backbone's.

    Args:
        module: the meta-architecture (not its DDP wrapper).
        max_norm: per-group norm limit (``<= 0``: no clipping).

    Returns:
        The total gradient norm over all groups before clipping.
    """
    limit = max_norm if max_norm > 0 else math.inf
    norms = [torch.nn.utils.clip_grad_norm_(g, limit) for g in clip_groups(module)]
    return float(torch.stack(norms).norm()) if norms else 0.0


def scaled_lr(base_lr: float, total_batch: int, rule: str) -> float:
    """dinov2 LR scaling: ``sqrt_wrt_1024`` (base * sqrt(B / 1024)), ``linear_wrt_256`` or ``none``."""
    if rule == "sqrt_wrt_1024":
        return base_lr * math.sqrt(total_batch / 1024.0)
    if rule == "linear_wrt_256":
        return base_lr * total_batch / 256.0
    if rule == "none":
        return base_lr
    raise ValueError(f"optim.scaling_rule must be sqrt_wrt_1024, linear_wrt_256 or none; got {rule!r}")


def build_schedules(cfg: Any, world_size: int) -> dict[str, Any]:
    """LR, weight decay, EMA momentum, teacher temperature and last-layer LR schedules (dinov2 semantics)."""
    o, ep = cfg.optim, cfg.optim.epoch_length
    total = o.epochs * ep
    peak = scaled_lr(o.base_lr, cfg.train.batch_size_per_gpu * world_size, o.scaling_rule)
    last_layer_lr = CosineScheduler(peak, o.min_lr, total, int(o.warmup_epochs * ep), 0.0)
    last_layer_lr.schedule[: int(o.freeze_last_layer_epochs * ep)] = 0.0  # dinov2: the LR schedule, zeroed
    return {
        "total": total,
        "lr": CosineScheduler(peak, o.min_lr, total, int(o.warmup_epochs * ep), 0.0),
        "wd": CosineScheduler(o.weight_decay, o.weight_decay_end, total),
        "momentum": CosineScheduler(cfg.ema.momentum, cfg.ema.final_momentum, total),
        "teacher_temp": teacher_temp_schedule(
            cfg.loss.warmup_teacher_temp,
            cfg.loss.teacher_temp,
            int(cfg.loss.warmup_teacher_temp_epochs * ep),
            total,
        ),
        "last_layer_lr": last_layer_lr,
    }


def apply_schedules(optimizer: torch.optim.Optimizer, sched: dict[str, Any], step: int) -> dict[str, float]:
    """Set each group's lr / weight decay for ``step``; return the scalar values."""
    lr, wd, last_lr = sched["lr"][step], sched["wd"][step], sched["last_layer_lr"][step]
    for g in optimizer.param_groups:
        g["lr"] = (last_lr if g["is_last_layer"] else lr) * g["lr_multiplier"]
        g["weight_decay"] = wd * g["wd_multiplier"]
    temp = float(sched["teacher_temp"][min(step, len(sched["teacher_temp"]) - 1)])
    return {"lr": lr, "wd": wd, "momentum": sched["momentum"][step], "teacher_temp": temp}
