"""The H0-mini recipe wired through the meta-architecture, against sums written out by hand.

Tiny, randomly initialised models of the exact architectures (ViT/14 with 4 registers, SwiGLUPacked + SiLU
student); the expected losses are explicit loops over views, samples, patches and prototypes.
"""

from __future__ import annotations

import math

import pytest
import torch

from pathdistill_train.config import load_config
from pathdistill_train.train.distill_meta_arch import DistillMetaArch
from pathdistill_train.train.schedules import build_schedules

TINY_H0MINI = [
    "student.model_kwargs={img_size: 56, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 5.33334,"
    " mlp_layer: swiglu_packed, act_layer: silu, drop_path_rate: 0.0, num_classes: 0}",
    "teacher.name=''",
    "teacher.arch=vit_giant_patch14_reg4_dinov2",
    "teacher.model_kwargs={img_size: 56, embed_dim: 48, depth: 2, num_heads: 2, num_classes: 0}",
    "teacher.weights=random",
    "teacher.fsdp=false",
    "heads.dino_out_dim=8",
    "heads.ibot_out_dim=6",
    "heads.hidden_dim=16",
    "heads.dino_bottleneck_dim=4",
    "heads.ibot_bottleneck_dim=4",
    "crops.global_size=56",
    "train.device=cpu",
]


def _meta(*extra: str) -> DistillMetaArch:
    torch.manual_seed(0)
    meta = DistillMetaArch(load_config("h0mini_from_hoptimus0", [*TINY_H0MINI, *extra]))
    with torch.no_grad():  # heads initialised with std 0.02 barely depend on the input: make views differ
        for name, p in meta.named_parameters():
            if "head" in name and ".mlp." in name and p.ndim == 2:
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(len(name)))
    return meta


def _views(b: int = 3) -> torch.Tensor:
    return torch.rand(2, b, 3, 56, 56, generator=torch.Generator().manual_seed(1))


def _xent(t: list[float], s: list[float], student_temp: float) -> float:
    """-sum_k t_k log softmax(s / tau)_k, in plain Python."""
    z = [v / student_temp for v in s]
    lse = max(z) + math.log(sum(math.exp(v - max(z)) for v in z))
    return -sum(tk * (zk - lse) for tk, zk in zip(t, z))


def _softmax(x: list[float], temp: float) -> list[float]:
    e = [math.exp((v - max(x)) / temp) for v in x]
    return [v / sum(e) for v in e]


def test_h0mini_losses_are_eq1_cross_view_and_eq2_all_patches_same_view():
    meta = _meta()
    views, temp = _views(), 0.05
    t_out = meta.get_teacher_output(views, temp)
    s_out = meta.get_student_output(views, torch.zeros(0, 3, 3, 1, 1))
    losses = meta.compute_losses(t_out, s_out)
    # teacher probabilities by hand from the raw head scores (centre 0 at the first step)
    t_dino = t_out["dino_logits"].tolist()  # (2, B, K)
    s_dino = s_out["dino_logits"].tolist()
    b = len(t_dino[0])
    eq1 = sum(
        _xent(_softmax(t_dino[i][n], temp), s_dino[j][n], 0.1) for i, j in ((0, 1), (1, 0)) for n in range(b)
    ) / (2 * b)
    assert losses["dino"].item() == pytest.approx(eq1, rel=1e-4)
    same_view = sum(
        _xent(_softmax(t_dino[i][n], temp), s_dino[i][n], 0.1) for i in (0, 1) for n in range(b)
    ) / (2 * b)
    assert abs(same_view - eq1) > 1e-3  # the check can tell the pairings apart
    # eq. 2: every patch (P = 16 of a 4x4 grid, no mask), teacher and student of the SAME view j
    t_ibot, s_ibot = t_out["ibot_logits"].tolist(), s_out["ibot_logits"].tolist()  # (2B, P, K)
    assert len(t_ibot[0]) == len(s_ibot[0]) == 16
    eq2 = sum(
        _xent(_softmax(t_ibot[r][p], temp), s_ibot[r][p], 0.1) for r in range(2 * b) for p in range(16)
    ) / (2 * b * 16)
    assert losses["ibot"].item() == pytest.approx(eq2, rel=1e-4)
    assert losses["loss"].item() == pytest.approx(eq1 + eq2, rel=1e-4)


def test_centres_update_after_the_loss_with_the_batch_mean_of_raw_scores():
    meta = _meta()
    views = _views()
    meta({"global": views, "local": torch.zeros(0, 3, 3, 1, 1)}, 0.04)
    t_out = meta.get_teacher_output(views, 0.04)  # same frozen teacher and heads: same raw scores
    dino_mean = t_out["dino_logits"].reshape(-1, 8).mean(0)
    ibot_mean = t_out["ibot_logits"].reshape(-1, 6).mean(0)
    torch.testing.assert_close(meta.dino_loss.center.view(-1), 0.1 * dino_mean)  # 0.9 * 0 + 0.1 * mean
    torch.testing.assert_close(meta.ibot_loss.center.view(-1), 0.1 * ibot_mean)
    # the second step's teacher probabilities use that centre
    expected = torch.softmax((t_out["dino_logits"] - meta.dino_loss.center) / 0.04, dim=-1)
    torch.testing.assert_close(t_out["dino_probs"], expected)


def test_h0mini_recipe_has_no_stochastic_depth_no_koleo_and_dinov2_schedules():
    cfg = load_config("h0mini_from_hoptimus0")
    # Table 5
    assert (cfg.optim.warmup_epochs, cfg.loss.warmup_teacher_temp_epochs, cfg.optim.weight_decay_end) == (
        16,
        30,
        0.4,
    )
    assert cfg.optim.epochs * cfg.optim.epoch_length == 105_000
    assert cfg.train.batch_size_per_gpu * 128 == 2048
    assert (cfg.heads.dino_out_dim, cfg.heads.ibot_out_dim) == (131072, 131072)
    assert (cfg.heads.dino_bottleneck_dim, cfg.heads.ibot_bottleneck_dim) == (384, 256)
    # dinov2 defaults the paper keeps
    assert (cfg.loss.student_temp, cfg.loss.warmup_teacher_temp, cfg.loss.teacher_temp) == (0.1, 0.04, 0.07)
    assert (cfg.ema.momentum, cfg.ema.final_momentum, cfg.optim.clip_grad) == (0.992, 1.0, 3.0)
    assert cfg.augmentation.local_crops_number == 0 and cfg.augmentation.student_p == 0.0  # two views
    meta = _meta()
    assert all(isinstance(blk.drop_path1, torch.nn.Identity) for blk in meta.student.model.blocks)
    assert not any("koleo" in n.lower() for n, _ in meta.named_modules())
    sched = build_schedules(cfg, 128)
    ep = cfg.optim.epoch_length
    assert sched["lr"][16 * ep] == pytest.approx(0.004 * math.sqrt(2048 / 1024))  # sqrt_wrt_1024 peak
    assert sched["teacher_temp"][0] == pytest.approx(0.04) and sched["teacher_temp"][30 * ep] == 0.07
    assert sched["wd"][0] == pytest.approx(0.04) and sched["wd"][105_000] == pytest.approx(0.4)
    assert sched["momentum"][0] == pytest.approx(0.992)


def test_weight_decay_groups_follow_dinov2():
    """dinov2's ``get_params_groups_with_decay``: no decay for ``.bias``, norms and LayerScale ``gamma``; the CLS,
    register and position embeddings are decayed (they were not, timm's no_weight_decay set); the patch
    embedding's LR x 0.2 (Table 5 / dinov2 ``patch_embed_lr_mult``)."""
    from pathdistill_train.train.schedules import param_groups

    meta = _meta()
    groups = {g["name"]: g for g in param_groups(meta, 2, 1.0, 0.2)}
    wd = {n: g["wd_multiplier"] for n, g in groups.items()}
    for name in (
        "cls_token",
        "reg_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
    ):
        assert wd[f"student.model.{name}"] == 1.0, name
    for name in ("blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.ls1.gamma", "norm.weight",
                 "blocks.1.mlp.fc1.bias", "patch_embed.proj.bias"):  # fmt: skip
        assert wd[f"student.model.{name}"] == 0.0, name
    assert groups["student.model.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.2)
    heads = [n for n in wd if "head" in n]
    assert heads and all(wd[n] == (0.0 if n.endswith(".bias") else 1.0) for n in heads)
    assert all(g["is_last_layer"] == ("last_layer" in n) for n, g in groups.items())


def test_the_exported_model_is_the_ema_student():
    meta = _meta()
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in meta.ema_student.parameters()]
    meta.update_ema(0.75)
    for e, b0, s in zip(meta.ema_student.parameters(), before, meta.student.parameters()):
        torch.testing.assert_close(e, 0.75 * b0 + 0.25 * s)


def test_gradients_are_clipped_per_module_as_dinov2():
    """dinov2 clips the backbone, the DINO head and the iBOT head each to ``clip_grad`` on its own: with a limit
    between their norms, the modules under it keep their gradients and the others are scaled to the limit."""
    import copy
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from pathdistill_train.train.train import _step

    meta = _meta()
    batch = {"global": _views(), "local": torch.zeros(0, 3, 3, 1, 1)}
    ref = copy.deepcopy(meta)  # same centres: the unclipped reference gradients
    ref(batch, 0.05)["loss"].backward()
    modules = {"student.": ref.student, "dino_head.": ref.dino_head, "ibot_head.": ref.ibot_head}
    norms = {
        k: float(torch.nn.utils.get_total_norm([p.grad for p in m.parameters()])) for k, m in modules.items()
    }
    limit = sorted(norms.values())[1]  # the median module norm
    captured: dict[str, torch.Tensor] = {}
    optimizer = torch.optim.SGD(meta.parameters(), lr=0.0)
    optimizer.step = lambda *a, **k: captured.update(  # type: ignore[method-assign]
        {n: p.grad.clone() for n, p in meta.named_parameters() if p.grad is not None}
    )
    cfg = copy.deepcopy(meta.cfg)
    OmegaConf.update(cfg, "optim.clip_grad", limit)
    env = SimpleNamespace(device=torch.device("cpu"))
    row = _step(meta, meta, optimizer, batch, {"teacher_temp": 0.05, "momentum": 0.9}, cfg, env)
    assert row["grad_norm"] == pytest.approx(math.sqrt(sum(n * n for n in norms.values())), rel=1e-4)
    for name, p in ref.named_parameters():
        if p.grad is not None:
            prefix = next(k for k in modules if name.startswith(k))
            scale = min(1.0, limit / (norms[prefix] + 1e-6))
            torch.testing.assert_close(captured[name], p.grad * scale, rtol=1e-4, atol=1e-9)


def test_last_layer_lr_is_the_lr_schedule_zeroed_while_frozen():
    """dinov2 ``build_schedulers``: ``last_layer_lr = CosineScheduler(**lr)`` with its first
    ``freeze_last_layer_epochs`` epochs set to 0 (not a warm-up delayed by the freeze)."""
    sched = build_schedules(load_config("h0mini_from_hoptimus0"), 128)
    for step in (0, 1249, 1250, 5000, 19_999, 20_000, 60_000, 104_999):
        expected = 0.0 if step < 1250 else sched["lr"][step]
        assert sched["last_layer_lr"][step] == pytest.approx(expected, rel=1e-9, abs=1e-12), step


def test_each_teacher_is_centred_by_its_own_running_centre():
    """Multi-teacher with heads: each teacher's probabilities are its own scores minus its own EMA centre."""
    extra = (
        "teacher.extra=[{name: '', arch: vit_small_patch14_reg4_dinov2, weights: random, "
        "model_kwargs: {img_size: 56, embed_dim: 24, depth: 1, num_heads: 2, num_classes: 0}, "
        "mean: [], std: [], extra: []}]"
    )
    meta = _meta(extra)
    batch = {"global": _views(), "local": torch.zeros(0, 3, 3, 1, 1)}
    meta(batch, 0.05)  # first step: centres = 0.1 * batch means
    t_out = meta.get_teacher_output(batch["global"], 0.05)
    images = batch["global"].flatten(0, 1)
    dino, ibot = [], []
    with torch.no_grad():  # each teacher's raw scores, by hand from its frozen backbone and heads
        for teacher, d_head, i_head in zip(meta.teachers, meta.teacher_dino_heads, meta.teacher_ibot_heads):
            tok = teacher(images)
            x, y = d_head(tok["cls"]).view(2, 3, 8), i_head(tok["patch"])  # (2, B, K), (2B, 16, K)
            dino.append(torch.softmax((x - 0.1 * x.reshape(-1, 8).mean(0)) / 0.05, dim=-1))
            ibot.append(torch.softmax((y - 0.1 * y.reshape(-1, 6).mean(0)) / 0.05, dim=-1))
    torch.testing.assert_close(t_out["dino_probs"], torch.stack(dino).mean(0))
    torch.testing.assert_close(t_out["ibot_probs"], torch.stack(ibot).mean(0))
