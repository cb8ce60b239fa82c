"""Atomic training checkpoints with everything needed for an exact resume after a kill.

A checkpoint holds tensors and plain metadata only (dicts, lists, numbers, strings), so resuming reads it with
``torch.load(weights_only=True)``: a file planted at ``output_dir/checkpoint.pth`` is never unpickled into code.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from napari_pathdistill.atomic import atomic_path
from napari_pathdistill.models.torch_file import DamagedTorchFile, load_checked
from pathdistill_train.errors import TrainConfigError, TrainWriteError


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA RNG states, as tensors and plain lists (weights-only loadable)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # legacy=True: always a tuple
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_rng_state(states: list[dict[str, Any]] | dict[str, Any], rank: int) -> dict[str, Any] | None:
    """This rank's RNG states among a checkpoint's per-rank ones (None: none saved for this rank).

    ``states`` is the list :func:`save_training_checkpoint` writes (one entry per rank, in rank order), or
    the one dict of checkpoints written before ranks had their own streams (then rank 0's).
    """
    per_rank = [states] if isinstance(states, dict) else list(states)
    return per_rank[rank] if rank < len(per_rank) else None


def warn_world_size(states: list | dict, world_size: int) -> None:
    """Say so when a checkpoint written by another number of ranks is resumed: not an exact resume."""
    saved = 1 if isinstance(states, dict) else len(states)
    if saved != world_size:
        print(
            f"[pathdistill-train] the checkpoint holds the RNG states of {saved} rank(s), this run has "
            f"{world_size}: the ranks without one keep fresh streams, and the sampler splits the stream "
            "anew, so the next steps are not those of an uninterrupted run",
            flush=True,
        )


def _state_without_teachers(meta_arch: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``meta_arch.state_dict()`` minus ``teachers.*``, without running the teachers' state-dict hooks.

    Only rank 0 writes checkpoints; on an FSDP2-sharded teacher (``teacher.fsdp=true``) the state-dict hook
    reshards that rank's parameters alone, and the ranks' next all-gathers then mismatch and abort.
    """
    state: dict[str, torch.Tensor] = {}
    for name, child in meta_arch.named_children():
        if name != "teachers":
            state.update(child.state_dict(prefix=f"{name}."))
    state.update({n: t.detach() for n, t in meta_arch.named_parameters(recurse=False)})
    state.update({n: t for n, t in meta_arch.named_buffers(recurse=False)})
    return state


#: the run folder's files written through ``atomic.atomic_path`` (by this trainer alone: checkpoint, metrics.csv
#: truncated on resume, config.yaml); a kill mid-write leaves its temporary ``.<stem>.<8 mkstemp chars><suffix>``
ATOMIC_RUN_FILES = ("checkpoint.pth", "metrics.csv", "config.yaml")


def orphan_temps(out_dir: Path) -> list[Path]:
    """The temporary files that killed atomic writes of :data:`ATOMIC_RUN_FILES` left in ``out_dir``.

    Only names of exactly ``atomic_path``'s pattern for those files match (``.checkpoint.k3x_9a2b.pth``), so
    nothing else in the folder is ever touched. Call it before this run writes anything (rank 0 alone writes).
    """
    patterns = [
        re.compile(rf"\.{re.escape(Path(n).stem)}\.[a-z0-9_]{{8}}{re.escape(Path(n).suffix)}")
        for n in ATOMIC_RUN_FILES
    ]
    if not out_dir.is_dir():
        return []
    return sorted(
        p
        for p in out_dir.iterdir()
        if p.is_file() and not p.is_symlink() and any(r.fullmatch(p.name) for r in patterns)
    )


def save_training_checkpoint(
    path: Path,
    meta_arch: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    rng: list[dict[str, Any]] | None = None,
) -> None:
    """Write model (student, heads, EMA, centres), optimiser, step and RNG states; atomic rename.

    The frozen teacher backbones are not saved (they are rebuilt from the config).

    Args:
        rng: every rank's :func:`rng_state`, in rank order (default: this process's alone).
    """
    state = _state_without_teachers(meta_arch)
    rng = rng if rng is not None else [rng_state()]
    payload = {"model": state, "optimizer": optimizer.state_dict(), "step": step, "rng": rng}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_training_checkpoint(
    path: Path, meta_arch: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, Any]] | dict[str, Any]]:
    """Restore the model and optimiser of a checkpoint written by :func:`save_training_checkpoint`.

    Returns:
        The step to run next and the RNG states saved with it (per rank: see :func:`rank_rng_state`). The
        caller restores its rank's with :func:`set_rng_state` once everything that draws from the global
        RNGs before the first step (the DataLoader iterator's base seed) is built, as in the run that wrote
        the checkpoint.
    """
    payload = read_training_checkpoint(path)
    try:
        missing, unexpected = meta_arch.load_state_dict(payload["model"], strict=False)
    except RuntimeError as e:  # same names, other shapes
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise TrainConfigError(
            f"cannot resume from {path}: it holds another model ({first}); use another output_dir, or set "
            "train.resume=false train.overwrite=true"
        ) from e
    missing = [k for k in missing if not k.startswith("teachers.")]
    if missing or unexpected:
        raise TrainConfigError(
            f"cannot resume from {path}: it holds another model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); use another output_dir, or set train.resume=false train.overwrite=true"
        )
    try:
        optimizer.load_state_dict(payload["optimizer"])
    except ValueError as e:  # other parameter groups (e.g. optim.layerwise_decay changed)
        raise TrainConfigError(f"cannot resume from {path}: its optimiser state does not fit ({e})") from e
    return int(payload["step"]), payload["rng"]


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of ``path``, read weights-only (tensors and plain metadata; never unpickles code).

    Raises:
        TrainConfigError: the file is not a checkpoint this trainer wrote (e.g. a planted pickle, an older
            trainer's checkpoint with pickled RNG states, a truncated file, or one whose bytes changed after
            it was written: CRC-32s are checked, which torch does not).
    """
    try:
        payload = load_checked(path)
    except DamagedTorchFile as e:
        raise TrainConfigError(
            f"cannot resume: {e}. Restore a copy of it, or delete it to start afresh (or set "
            "train.resume=false)"
        ) from e
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainConfigError(
            f"cannot resume from {path}: not a weights-only training checkpoint ({reason}); it is never "
            "unpickled. Delete it to start afresh, or set train.resume=false"
        ) from e
    if not isinstance(payload, dict) or not {"model", "optimizer", "step", "rng"} <= payload.keys():
        raise TrainConfigError(f"cannot resume from {path}: not a pathdistill-train checkpoint")
    return payload


@contextlib.contextmanager
def writing(path: Path, step: int) -> Iterator[None]:
    """Turn a failed write of ``path`` into a :class:`TrainWriteError` naming it, the reason and the free space.

    torch.save reports a full disk (or quota, or file-size limit) as ``RuntimeError: [enforce fail at
    inline_container.cc:...] . unexpected pos N vs M``, safetensors as a ``SafetensorError``.
    """
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        try:
            free = f"{shutil.disk_usage(path.parent).free / 1e9:.1f} GB free there"
        except OSError:
            free = "free space unknown"
        raise TrainWriteError(
            f"cannot write {path} at step {step} ({type(e).__name__}: {reason}); {free}: is the disk full or a "
            "quota reached? checkpoint.pth and export/ are only ever replaced whole: once there is room, rerun "
            "the same command to resume from the last checkpoint written"
        ) from e
