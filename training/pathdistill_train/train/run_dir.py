"""The run folder before training starts: inputs that exist, a resume that fits, no run overwritten unasked.

Also the run record exported with the student (command, times, data, version, commit, final loss).
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pathdistill_train.errors import TrainConfigError
from pathdistill_train.train.checkpointing import orphan_temps
from pathdistill_train.train.export import recover_export

# Settings that shape the checkpoint's tensors (model, heads, loss buffers), and the student's input
# normalisation: a resume must keep them.
RESUME_KEYS = (
    "teacher.name",
    "teacher.arch",
    "teacher.model_kwargs",
    "teacher.extra",
    "teacher.heads",
    "student.arch",
    "student.model_kwargs",
    # not tensors, but what the weights were trained on: every checkpoint's export records them
    "student.mean",
    "student.std",
    "loss.mode",
    "loss.centering",
    "loss.feature_center_teacher",
)
HEAD_KEYS = ("heads",)  # only with DINO/iBOT heads (loss.mode dino_ibot or both)
RUN_FILES = ("checkpoint.pth", "metrics.csv", "export/model.safetensors")
_MISSING = object()


def check_inputs(cfg: Any) -> None:
    """Refuse, before any model is built, data and files that do not exist and a device that is not here.

    Raises:
        TrainConfigError: no data, a missing slide / tile folder / heads file, or ``train.device=cuda``
            without CUDA.
    """
    if not cfg.data.slides and not cfg.data.tile_dirs:
        raise TrainConfigError("no training data: set data.slides and/or data.tile_dirs")
    for slide in cfg.data.slides or []:
        if not Path(slide).expanduser().exists():
            raise TrainConfigError(f"data.slides: slide {slide} not found")
    for folder in cfg.data.tile_dirs or []:
        if not Path(folder).expanduser().is_dir():
            raise TrainConfigError(f"data.tile_dirs: tile folder {folder} not found")
    if cfg.teacher.heads == "load":
        if not cfg.teacher.heads_weights:
            raise TrainConfigError("teacher.heads=load needs teacher.heads_weights (a .safetensors file)")
        if not Path(cfg.teacher.heads_weights).expanduser().is_file():
            raise TrainConfigError(f"teacher.heads_weights: {cfg.teacher.heads_weights} not found")
    if cfg.train.device != "auto":
        from napari_pathdistill.device import resolve_device
        from napari_pathdistill.errors import DeviceError

        try:
            resolve_device(cfg.train.device)  # the plugin's check: cuda without CUDA, mps off a Mac, ...
        except DeviceError as exc:
            raise TrainConfigError(f"train.device={cfg.train.device}: {exc}") from None


def prepare_output_dir(cfg: Any, clear: bool = True) -> None:
    """Check that ``output_dir`` may be (re)used; with ``train.overwrite`` clear the previous run's files.

    Every rank checks (so all stop together); only the one called with ``clear`` (rank 0) deletes.

    Raises:
        TrainConfigError: resuming a checkpoint of other model settings (named), or, without
            ``train.overwrite=true``, ``train.resume=false`` on a folder holding a run or a folder holding an
            exported student but no checkpoint (deleted to save space, or another run's export copied there).
            A folder with only ``metrics.csv`` (a run killed before its first checkpoint) starts again.
    """
    out = Path(cfg.output_dir)
    held = [name for name in RUN_FILES if (out / name).exists()]
    exported = (out / "export" / "model.safetensors").exists()
    if cfg.train.resume and (out / "checkpoint.pth").exists():
        diffs = resume_conflicts(out / "config.yaml", cfg)
        if diffs:
            raise TrainConfigError(
                f"cannot resume from {out / 'checkpoint.pth'}: it was trained with other settings "
                f"({'; '.join(diffs)}); use another output_dir, set those back, or set train.resume=false "
                "train.overwrite=true to replace that run"
            )
        changed = changed_settings(out / "config.yaml", cfg)
        if changed and clear:  # rank 0: config.yaml is about to hold the new values only
            print(f"[pathdistill-train] resuming with changed settings: {'; '.join(changed)}", flush=True)
    elif held and (not cfg.train.resume or exported):  # an export is written after its checkpoint
        if not cfg.train.overwrite:
            why = (
                "train.resume=false would overwrite it"
                if not cfg.train.resume
                else "no checkpoint.pth to resume from, so a new run from step 0 would overwrite it"
            )
            raise TrainConfigError(
                f"output_dir {out} holds a run ({', '.join(held)}) and {why}: use another output_dir, "
                "remove that folder, or add train.overwrite=true"
            )
        if clear:
            (out / "checkpoint.pth").unlink(missing_ok=True)
            (out / "metrics.csv").unlink(missing_ok=True)
            shutil.rmtree(out / "export", ignore_errors=True)


def tidy_after_kill(out_dir: Path) -> None:
    """Remove the temporary files of atomic writes a kill (SIGKILL, SLURM's KillWait) interrupted and finish or
    undo an interrupted export swap; one log line says what (a checkpoint's temporary file can be GBs)."""
    done = recover_export(out_dir / "export")
    for tmp in orphan_temps(out_dir):
        size = tmp.stat().st_size
        tmp.unlink()
        done.append(f"removed {tmp.name} ({size / 1e9:.2f} GB)")
    if done:
        print(f"[pathdistill-train] leftovers of a killed write in {out_dir}: {'; '.join(done)}", flush=True)


def resume_conflicts(old_yaml: Path, cfg: Any) -> list[str]:
    """The model settings of ``cfg`` that differ from the run's ``config.yaml``, as ``key: old -> new``."""
    if not old_yaml.is_file():
        return []
    old = OmegaConf.load(old_yaml)
    keys = RESUME_KEYS + (HEAD_KEYS if cfg.loss.mode != "feature" else ())
    diffs = []
    for key in keys:
        before = OmegaConf.select(old, key, default=_MISSING)
        if before is _MISSING:  # a config.yaml from before that key existed
            continue
        a, b = _plain(before), _plain(OmegaConf.select(cfg, key))
        if a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return diffs


#: settings that only steer this invocation, not what is trained (output_dir: a run folder moved elsewhere)
INVOCATION_KEYS = ("output_dir", "train.max_steps", "train.resume", "train.overwrite", "train.log_every")


def changed_settings(old_yaml: Path, cfg: Any) -> list[str]:
    """Every other setting of ``cfg`` that differs from the run's ``config.yaml``, as ``key: old -> new`` (a
    resume overwrites that file: the log line is then the only record of the earlier values)."""
    if not old_yaml.is_file():
        return []
    old, new = _flat(OmegaConf.to_container(OmegaConf.load(old_yaml))), _flat(_plain(cfg))
    keys = sorted((old.keys() & new.keys()) - set(INVOCATION_KEYS))
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys if old[k] != new[k]]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": leaf}`` (lists and empty dicts are leaves)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the source checkout this package runs from, or None (installed copy, no git)."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def package_version() -> str:
    """The installed napari-pathdistill version (the trainer ships with it)."""
    from napari_pathdistill import __version__

    return str(__version__)
