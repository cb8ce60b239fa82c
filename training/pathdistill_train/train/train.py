"""``pathdistill-train``: the distillation loop (torchrun-ready, exact resume, CSV/TensorBoard logging)."""

from __future__ import annotations

import argparse
import inspect
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function

from napari_pathdistill.errors import PathDistillError
from pathdistill_train import distributed
from pathdistill_train.config import load_config, save_config
from pathdistill_train.data.loaders import build_batches
from pathdistill_train.errors import (
    TrainConfigError,
    TrainDivergedError,
    TrainInterrupted,
    TrainTerminated,
    worker_message,
)
from pathdistill_train.train.checkpointing import (
    load_training_checkpoint,
    rank_rng_state,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
    warn_world_size,
    writing,
)
from pathdistill_train.train.distill_meta_arch import DistillMetaArch
from pathdistill_train.train.export import export_student
from pathdistill_train.train.metric_logger import MetricLogger, elapsed_before, format_duration, truncate_csv
from pathdistill_train.train.preemption import TermSignal, any_rank, close_workers
from pathdistill_train.train.run_dir import (
    check_inputs,
    git_commit,
    package_version,
    prepare_output_dir,
    tidy_after_kill,
    utc_now,
)
from pathdistill_train.train.schedules import apply_schedules, build_schedules, clip_gradients, param_groups

#: what ``pathdistill-train --help`` says first (the module docstring is for developers)
DESCRIPTION = (
    "Distil a frozen teacher into a ViT student (DINO + iBOT or feature distillation; torchrun-ready, exact "
    "resume, CSV/TensorBoard logging). Bundled configs include smoke_cpu and h0mini_from_hoptimus0."
)


def _setup(
    cfg: Any, env: distributed.DistEnv
) -> tuple[DistillMetaArch, torch.optim.Optimizer, dict, int, dict | None]:
    """Model, optimiser, schedules, the first step and, when resuming from ``checkpoint.pth``, this rank's RNG
    states (restored by the caller after the data iterator is made, see :func:`load_training_checkpoint`)."""
    torch.manual_seed(cfg.train.seed)  # identical init on every rank
    meta = DistillMetaArch(cfg).to(env.device)
    distributed.seed_rank(cfg.train.seed, env.rank)  # then each rank its own random augmentation parameters
    if cfg.teacher.fsdp and env.world_size > 1:
        from torch.distributed.fsdp import fully_shard

        for t in meta.teachers:
            for blk in getattr(t.model, "blocks", []):
                fully_shard(blk)
            fully_shard(t)
    depth = len(getattr(meta.student.model, "blocks", []))
    groups = param_groups(meta, depth, cfg.optim.layerwise_decay, cfg.optim.patch_embed_lr_mult)
    optimizer = torch.optim.AdamW(groups, betas=(cfg.optim.adamw_beta1, cfg.optim.adamw_beta2))
    sched = build_schedules(cfg, env.world_size)
    ckpt, start, rng = Path(cfg.output_dir) / "checkpoint.pth", 0, None
    if cfg.train.resume and ckpt.exists():
        start, states = load_training_checkpoint(ckpt, meta, optimizer)
        rng = rank_rng_state(states, env.rank)
        if env.is_main:
            print(f"[pathdistill-train] resumed from {ckpt} at step {start}", flush=True)
            warn_world_size(states, env.world_size)
    if env.is_main and cfg.train.resume:  # rows a killed run logged past its checkpoint (all, without one)
        truncate_csv(Path(cfg.output_dir) / "metrics.csv", start)
    return meta, optimizer, sched, start, rng


def _step(model, meta, optimizer, batch, values: dict, cfg: Any, env) -> dict[str, float]:
    """Forward/backward/clip/step/EMA for one batch; returns the losses averaged over ranks and the gradient
    norm."""
    use_bf16 = env.device.type == "cuda" and cfg.train.amp == "bf16"
    with torch.autocast(device_type=env.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        losses = model(batch, values["teacher_temp"])
    optimizer.zero_grad(set_to_none=True)
    with record_function("backward"):
        losses["loss"].backward()
    grad_norm = clip_gradients(meta, cfg.optim.clip_grad)  # per module, as dinov2
    with record_function("optimizer+ema"):
        optimizer.step()
        meta.update_ema(values["momentum"])
    out = distributed.mean_over_ranks(losses)  # the global batch's losses (and NaN seen by every rank)
    out["grad_norm"] = float(grad_norm)
    if not math.isfinite(out["loss"]):
        raise TrainDivergedError(
            f"loss is {out['loss']} at step {values.get('step')}: lower optim.base_lr (or check the data)"
        )
    return out


def _no_buffer_sync() -> dict[str, Any]:
    """DDP kwarg that stops per-forward buffer broadcasts (centres are all-reduced by the losses)."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )


def train(cfg: Any, command: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Run (or resume) a distillation; returns the logged rows of this process (rank 0: all steps run).

    Args:
        cfg: the resolved config.
        command: the command line recorded in the export (default: ``sys.argv``).

    Raises:
        TrainConfigError: missing inputs, a run folder that cannot be resumed or would be overwritten.
        TrainInterrupted: Ctrl-C; the message says which checkpoint a rerun resumes from.
        TrainTerminated: SIGTERM; the step in progress was finished and checkpointed.
    """
    check_inputs(cfg)
    env = distributed.enable(cfg.distributed.backend, cfg.train.device)
    out_dir = Path(cfg.output_dir)
    if env.is_main:
        tidy_after_kill(out_dir)
    distributed.barrier()  # the other ranks check the folder once rank 0 has tidied it
    prepare_output_dir(cfg, clear=env.is_main)
    meta, optimizer, sched, start, rng = _setup(cfg, env)
    if env.is_main:  # written once the checkpoint (if any) is known to fit
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    if start >= sched["total"]:  # a finished run: no data pipeline to build (tissue grids, tile store)
        _finished(env, out_dir, start, sched["total"])
        return []
    model: torch.nn.Module = meta
    if env.world_size > 1:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(meta, meta.ddp_ignored_names())
        ids = [env.local_rank] if env.device.type == "cuda" else None
        model = DistributedDataParallel(meta, device_ids=ids, **_no_buffer_sync())
    run = _run_record(command, start)
    it = build_batches(cfg, env.rank, env.world_size, start, env.device, summary=run["data"])
    try:
        if rng is not None:  # after the DataLoader iterator drew its base seed, as the first invocation did
            set_rng_state(rng)
        history = _loop(cfg, env, model, meta, optimizer, sched, start, it, run)
    finally:
        close_workers(it)
    distributed.cleanup()
    return history


def _finished(env: distributed.DistEnv, out_dir: Path, start: int, total: int) -> None:
    """Say (rank 0) that the checkpoint is at the schedule's end, so this invocation trains nothing."""
    if env.is_main:
        print(
            f"[pathdistill-train] nothing to train: {out_dir / 'checkpoint.pth'} is at step {start} of {total}, "
            f"the end of the schedule, and {out_dir / 'export'} holds its EMA student (to train on, raise "
            "optim.epochs; the schedules then change from this step on)",
            flush=True,
        )
    distributed.cleanup()


def _run_record(command: Sequence[str] | None, start: int) -> dict[str, Any]:
    """The run record exported with the student; ``data`` is filled by the data pipeline."""
    return {
        "command": shlex.join(command if command is not None else sys.argv),
        "started": utc_now(),
        "resumed_from_step": start,
        "data": [],
        "version": package_version(),
        "git_commit": git_commit(),
        "t0": time.monotonic(),
    }


def _loop(cfg, env, model, meta, optimizer, sched, start: int, it, run: dict) -> list[dict[str, float]]:
    """The training steps from ``start``; Ctrl-C becomes :class:`TrainInterrupted`, SIGTERM a checkpoint of the
    step in progress (finished) and :class:`TrainTerminated`."""
    logger = MetricLogger(Path(cfg.output_dir), env.is_main, cfg.train.tensorboard)
    end = sched["total"] if cfg.train.max_steps < 0 else min(sched["total"], start + cfg.train.max_steps)
    history: list[dict[str, float]] = []
    saved, step, t0 = start, start, time.perf_counter()
    offset = elapsed_before(Path(cfg.output_dir) / "metrics.csv") if env.is_main else 0.0
    try:
        with TermSignal() as term:
            for step in range(start, end):
                row = _timed_step(cfg, env, model, meta, optimizer, sched, step, it, t0)
                t0 = time.perf_counter()
                row["elapsed_s"] = offset + time.monotonic() - run["t0"]
                history.append(row)
                logger.log(row)
                eta = (time.monotonic() - run["t0"]) / (step + 1 - start) * (end - step - 1)
                _progress(env, step, (end, sched["total"]), row, cfg.train.log_every, eta)
                stop = any_rank(term.received, env.device)  # SIGTERM: checkpoint this step, then stop
                if (step + 1) % cfg.train.checkpoint_every == 0 or step == end - 1 or stop:
                    run["final_loss"] = row["loss"]
                    _checkpoint(cfg, env, meta, optimizer, step + 1, run)
                    saved = step + 1
                if stop:
                    raise TrainTerminated(step + 1)
    except KeyboardInterrupt:
        raise TrainInterrupted(step, saved) from None
    return history


def _timed_step(cfg, env, model, meta, optimizer, sched, step: int, it, t0: float) -> dict[str, float]:
    """Fetch a batch and run one step; the row holds its losses, schedule values and timings."""
    with record_function("data"):
        batch = {k: v.to(env.device, non_blocking=True) for k, v in next(it).items()}
        if cfg.train.sync_timing and env.device.type == "cuda":
            torch.cuda.synchronize(env.device)  # the GPU-side view making counts as data time
    t_data = time.perf_counter()
    values = {"step": step, **apply_schedules(optimizer, sched, step)}
    row = {**values, **_step(model, meta, optimizer, batch, values, cfg, env)}
    t1 = time.perf_counter()
    row["images_per_s"] = cfg.train.batch_size_per_gpu * env.world_size / max(t1 - t0, 1e-9)
    row["data_wait_frac"] = (t_data - t0) / max(t1 - t0, 1e-9)  # waiting for (or making) the batch
    row["time"] = time.time()  # wall clock at the step's end (returned, not logged)
    return row


def _progress(env, step: int, ends: tuple[int, int], row: dict[str, float], every: int, eta_s: float) -> None:
    """Print a progress line on rank 0 every ``every`` steps and at the last step.

    Args:
        ends: (last step of this run + 1, the schedule's total steps).
        eta_s: seconds this run still needs at its mean step time so far.
    """
    end, total = ends
    if env.is_main and (step % every == 0 or step == end - 1):
        left = f" ETA {format_duration(eta_s)}" if step < end - 1 else ""
        print(
            f"[pathdistill-train] step {step + 1}/{total} loss {row['loss']:.4f} "
            f"lr {row['lr']:.2e} {row['images_per_s']:.1f} img/s "
            f"data wait {row['data_wait_frac']:.0%}{left}",
            flush=True,
        )


def _checkpoint(cfg: Any, env, meta: DistillMetaArch, optimizer, step: int, run: dict[str, Any]) -> None:
    """Rank 0 writes the resumable checkpoint (with every rank's RNG states) and exports the EMA student with the
    run record; all ranks wait."""
    states = distributed.gather_to_main(rng_state())  # a collective: every rank sends its own
    if env.is_main:
        out_dir = Path(cfg.output_dir)
        with writing(out_dir / "checkpoint.pth", step):
            save_training_checkpoint(out_dir / "checkpoint.pth", meta, optimizer, step, states)
        record = {k: v for k, v in run.items() if k != "t0"}
        record.update(ended=utc_now(), wall_s=round(time.monotonic() - run["t0"], 3))
        with writing(out_dir / "export", step):
            export_student(meta.ema_student.model, cfg, out_dir / "export", step, record)
    distributed.barrier()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``pathdistill-train --config X.yaml key=value ...``.

    Returns:
        0; 2 for a config error; 1 for any other error the trainer explains (data, device, divergence);
        130 after Ctrl-C; 143 after SIGTERM (128 + 15, the signal's usual status), once the step in progress
        is finished and checkpointed. Each error is one ``pathdistill-train: error: ...`` line on stderr.
    """
    parser = argparse.ArgumentParser(prog="pathdistill-train", description=DESCRIPTION)
    parser.add_argument(
        "--config", default=None, help="experiment yaml (path or bundled name, e.g. smoke_cpu)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size_per_gpu=64")
    args = parser.parse_args(argv)
    command = ["pathdistill-train", *(sys.argv[1:] if argv is None else argv)]
    try:
        train(load_config(args.config, args.overrides), command)
    except TrainConfigError as e:
        return _fail(e, 2)
    except TrainInterrupted as e:
        return _fail(e, 130, prefix="")
    except TrainTerminated as e:
        return _fail(e, 143, prefix="")
    except KeyboardInterrupt:
        return _fail("interrupted before training started", 130, prefix="")
    except (PathDistillError, FloatingPointError) as e:
        return _fail(e, 1)
    return 0


def _fail(message: object, code: int, prefix: str = "error: ") -> int:
    """Print ``message`` as one ``pathdistill-train:`` line on stderr; return ``code``."""
    text = " ".join(line.strip() for line in worker_message(str(message)).splitlines() if line.strip())
    text = text or type(message).__name__
    sys.stderr.write(f"pathdistill-train: {prefix}{text}\n")  # one write: ranks' lines stay whole in a pipe
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
