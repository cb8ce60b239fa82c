"""Distillation meta-architecture: frozen teacher(s), student + heads, EMA student, losses (H0-mini).

``forward(batch, teacher_temp)`` runs :meth:`get_teacher_output` (once per batch, both global views
stacked), :meth:`get_student_output` and :meth:`compute_losses`; DDP wraps this module (frozen teachers and
the EMA student hold no trainable parameters and are ignored by DDP).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from pathdistill_train.config import ENUMS, validate
from pathdistill_train.data.scanner_augment import ScannerAugment
from pathdistill_train.errors import TrainConfigError
from pathdistill_train.loss import (
    CKADistillLoss,
    DINOLoss,
    FeatureDistillLoss,
    RelationalDistillLoss,
    iBOTPatchLoss,
)
from pathdistill_train.loss.feature_distill_loss import resize_patch_grid
from pathdistill_train.models import build_student, build_teacher, check_image_size
from pathdistill_train.models.warm_start import describe, read_init_state, warm_start
from pathdistill_train.train.feature_terms import cls_view_triples, feature_terms
from pathdistill_train.train.meta_parts import (
    build_head,
    center_crop_tokens,
    head_losses,
    scanner_config,
    student_kwargs,
)

HEAD_MODES = ENUMS["teacher.heads"]
LOSS_MODES = ENUMS["loss.mode"]


class DistillMetaArch(nn.Module):
    """Teacher(s) -> student distillation with DINO (CLS), iBOT (all patches) and/or feature losses.

    Args:
        cfg: the full resolved config (see ``configs/default.yaml``).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg, lc = cfg, cfg.loss
        validate(cfg)  # a config built without load_config: each bad choice named with its key
        if cfg.teacher.heads == "learn" and lc.centering == "sinkhorn_knopp":
            raise TrainConfigError(
                "teacher.heads=learn needs loss.centering=centering (Sinkhorn-Knopp has no gradient)"
            )
        teachers = [build_teacher(t) for t in [cfg.teacher, *cfg.teacher.extra]]
        self.teachers = nn.ModuleList(teachers)
        dims = [t.embed_dim for t in teachers]
        self.student = build_student(cfg.student.arch, student_kwargs(cfg), cfg.student.mean, cfg.student.std)
        roles = ["teacher", *(f"teacher.extra[{i}]" for i in range(len(teachers) - 1)), "student"]
        for encoder, role in zip([*teachers, self.student], roles):  # both see crops.global_size px views
            check_image_size(encoder, cfg.crops.global_size, role)
        if cfg.student.get("init_blocks") and not cfg.student.init_weights:
            raise TrainConfigError("student.init_blocks needs student.init_weights (the blocks' source)")
        if cfg.student.init_weights:
            blocks = list(cfg.student.init_blocks) if cfg.student.get("init_blocks") else None
            record = warm_start(self.student.model, read_init_state(cfg.student.init_weights), blocks)
            print(f"[pathdistill-train] {describe(cfg.student.init_weights, record)}", flush=True)
        sd = self.student.embed_dim
        self.use_heads, self.use_feature = lc.mode in ("dino_ibot", "both"), lc.mode in ("feature", "both")
        if self.use_heads:
            self.dino_head, self.ibot_head = build_head(cfg, sd, "dino"), build_head(cfg, sd, "ibot")
            self.teacher_dino_heads = nn.ModuleList([build_head(cfg, d, "dino") for d in dims])
            self.teacher_ibot_heads = nn.ModuleList([build_head(cfg, d, "ibot") for d in dims])
            self._setup_teacher_heads()
            self.dino_loss, self.ibot_loss = head_losses(cfg)
            # each extra teacher's heads score differently: each is centred by its own running centres
            extra = [head_losses(cfg) for _ in dims[1:]]
            self.extra_dino_losses = nn.ModuleList(d for d, _ in extra)
            self.extra_ibot_losses = nn.ModuleList(i for _, i in extra)
        if self.use_feature:
            self.feature_losses = nn.ModuleList(
                FeatureDistillLoss(
                    sd,
                    d,
                    lc.feature_cos_weight,
                    lc.feature_smooth_l1_weight,
                    lc.feature_patch_weight,
                    lc.feature_beta,
                    center_teacher=lc.feature_center_teacher,
                    center_momentum=lc.center_momentum,
                    spread_weight=lc.feature_spread_weight,
                )
                for d in dims
            )
            self.cka_loss = CKADistillLoss()
            self.relational_loss = RelationalDistillLoss(
                lc.relational_teacher_temp, lc.relational_student_temp
            )
        self.ema_student = copy.deepcopy(self.student).requires_grad_(False).eval()
        self.student_augment = ScannerAugment(scanner_config(cfg.augmentation))

    def _setup_teacher_heads(self) -> None:
        """Apply ``teacher.heads``: load from safetensors, keep random and frozen, or learn."""
        mode = self.cfg.teacher.heads
        if mode == "load":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            if not self.cfg.teacher.heads_weights:
                raise TrainConfigError("teacher.heads=load needs teacher.heads_weights (a .safetensors file)")
            path = self.cfg.teacher.heads_weights
            try:
                sd = load_file(path)
                self.teacher_dino_heads[0].load_state_dict(
                    {k[10:]: v for k, v in sd.items() if k.startswith("dino_head.")}
                )
                self.teacher_ibot_heads[0].load_state_dict(
                    {k[10:]: v for k, v in sd.items() if k.startswith("ibot_head.")}
                )
            except (OSError, RuntimeError, SafetensorError) as e:
                first = str(e).strip().splitlines()[:2]
                raise TrainConfigError(
                    f"teacher.heads_weights {path}: not the dino_head.* / ibot_head.* tensors of heads.* "
                    f"({' '.join(x.strip() for x in first)[:300]})"
                ) from e
        if mode != "learn":
            self.teacher_dino_heads.requires_grad_(False)
            self.teacher_ibot_heads.requires_grad_(False)

    def ddp_ignored_names(self) -> list[str]:
        """Parameter/buffer names DDP must not broadcast or reduce (frozen teachers, EMA student)."""
        names = [n for n, _ in self.named_parameters() if n.startswith(("teachers.", "ema_student."))]
        return names + [n for n, _ in self.named_buffers() if n.startswith(("teachers.", "ema_student."))]

    def _teacher_images(self, images: torch.Tensor) -> torch.Tensor:
        """In cross-magnification mode the teacher sees the central field at full resolution."""
        if not self.cfg.crossmag.enabled:
            return images
        size = images.shape[-1] // self.cfg.crossmag.factor
        start = (images.shape[-1] - size) // 2
        return images[..., start : start + size, start : start + size]

    def _student_images(self, images: torch.Tensor) -> torch.Tensor:
        """In cross-magnification mode the student sees the whole field downsampled to the global size."""
        if not self.cfg.crossmag.enabled:
            return images
        size = self.cfg.crops.global_size
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """Student-only stain/scanner augmentation of (N, 3, H, W) images while training (identity in eval)."""
        if not self.training:
            return images
        with record_function("student_augment"):
            return self.student_augment(images)

    def get_teacher_output(self, global_views: torch.Tensor, teacher_temp: float) -> dict[str, Any]:
        """Frozen teacher forward, computed once for both global views.

        Args:
            global_views: (2, B, 3, G, G) float in [0, 1].
            teacher_temp: teacher temperature at this step.

        Returns:
            ``tokens``: per teacher ``{"cls": (2B, Dt), "patch": (2B, Nt, Dt)}``; with heads also
            ``dino_probs`` (2, B, K) and ``ibot_probs`` (2B, Nt, K) averaged over teachers (each centred by its
            own centres), the raw scores of every teacher ``dino_logits_all`` / ``ibot_logits_all`` for the
            centre updates, and the first teacher's as ``dino_logits`` / ``ibot_logits``.
        """
        v, b = global_views.shape[:2]
        images = self._teacher_images(global_views.flatten(0, 1))
        with torch.no_grad():
            tokens = [t(images) for t in self.teachers]
        out: dict[str, Any] = {"tokens": tokens}
        if not self.use_heads:
            return out
        with torch.set_grad_enabled(self.cfg.teacher.heads == "learn"):
            dino = [h(tok["cls"].float()).view(v, b, -1) for h, tok in zip(self.teacher_dino_heads, tokens)]
            ibot = [h(tok["patch"].float()) for h, tok in zip(self.teacher_ibot_heads, tokens)]
            n = min(x.shape[1] for x in ibot)
            ibot = [resize_patch_grid(x, n) for x in ibot]
            d_losses, i_losses = self._centerers()
            out["dino_probs"] = torch.stack(
                [c.teacher_probs(x, teacher_temp) for c, x in zip(d_losses, dino)]
            ).mean(0)
            out["ibot_probs"] = torch.stack(
                [c.teacher_probs(x, teacher_temp) for c, x in zip(i_losses, ibot)]
            ).mean(0)
        out["dino_logits_all"], out["ibot_logits_all"] = (
            [x.detach() for x in dino],
            [x.detach() for x in ibot],
        )
        out["dino_logits"], out["ibot_logits"] = out["dino_logits_all"][0], out["ibot_logits_all"][0]
        return out

    def _centerers(self) -> tuple[list[DINOLoss], list[iBOTPatchLoss]]:
        """The DINO and iBOT losses holding each teacher's centres, in teacher order (the first teacher's are
        ``dino_loss`` / ``ibot_loss``)."""
        dino: list[DINOLoss] = [self.dino_loss, *self.extra_dino_losses]  # type: ignore[list-item]
        ibot: list[iBOTPatchLoss] = [self.ibot_loss, *self.extra_ibot_losses]  # type: ignore[list-item]
        return dino, ibot

    def get_student_output(
        self, global_views: torch.Tensor, local_views: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Student forward on global (and local) views.

        Args:
            global_views: (2, B, 3, G, G).
            local_views: (L, B, 3, l, l), L may be 0.

        Returns:
            ``cls`` (2B, Ds), ``patch`` (2B, Ns, Ds); with heads ``dino_logits`` (2 + L, B, K) and
            ``ibot_logits`` (2B, Ns', K) (Ns' = Ns, or the central grid in cross-magnification mode).
        """
        v, b = global_views.shape[:2]
        tok = self.student(self._augment(self._student_images(global_views.flatten(0, 1))))
        patch = tok["patch"]
        if self.cfg.crossmag.enabled:
            patch = center_crop_tokens(patch, self.cfg.crossmag.factor)
        out = {"cls": tok["cls"], "patch": patch}
        if self.use_heads:
            cls_all = [tok["cls"].view(v, b, -1)]
            if local_views.shape[0] > 0:
                cls_all.append(
                    self.student(self._augment(local_views.flatten(0, 1)))["cls"].view(
                        local_views.shape[0], b, -1
                    )
                )
            out["dino_logits"] = self.dino_head(torch.cat(cls_all))
            out["ibot_logits"] = self.ibot_head(patch)
        return out

    def compute_losses(
        self, teacher: dict[str, Any], student: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Weighted DINO + iBOT and/or feature losses; ``loss`` is their sum."""
        lc, losses = self.cfg.loss, {}
        if self.use_heads:
            t_ibot = teacher["ibot_probs"]
            if (
                t_ibot.shape[1] != student["ibot_logits"].shape[1]
            ):  # different grids: interpolate and renormalise
                t_ibot = resize_patch_grid(t_ibot, student["ibot_logits"].shape[1])
                t_ibot = t_ibot / t_ibot.sum(-1, keepdim=True)
            losses["dino"] = lc.dino_weight * self.dino_loss(student["dino_logits"], teacher["dino_probs"])
            losses["ibot"] = lc.ibot_weight * self.ibot_loss(student["ibot_logits"], t_ibot)
        if self.use_feature:
            for key, values in feature_terms(
                self.feature_losses, teacher["tokens"], student, lc.pairing
            ).items():
                losses[key] = lc.feature_weight * torch.stack(values).mean()
            triples = (
                cls_view_triples(self.feature_losses, teacher["tokens"], student, lc.pairing)
                if lc.cka_weight or lc.relational_weight
                else []
            )
            if lc.cka_weight > 0:  # student view j vs teacher view i
                cka = [self.cka_loss(q, t) for q, _, t in triples]
                losses["cka"] = lc.cka_weight * torch.stack(cka).mean()
            if lc.relational_weight > 0:  # student view j queries its view i, teacher view i targets
                rel = [self.relational_loss(q, k, t) for q, k, t in triples]
                losses["relational"] = lc.relational_weight * torch.stack(rel).mean()
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def forward(self, batch: dict[str, torch.Tensor], teacher_temp: float) -> dict[str, torch.Tensor]:
        """One distillation step's losses (centres are updated after the loss is computed)."""
        with record_function("teacher"):  # named ranges for torch.profiler (train_throughput.py --profile)
            t_out = self.get_teacher_output(batch["global"], teacher_temp)
        with record_function("student"):
            s_out = self.get_student_output(batch["global"], batch["local"])
        with record_function("losses"):
            losses = self.compute_losses(t_out, s_out)
        if self.use_heads and self.cfg.loss.centering == "centering":
            d_losses, i_losses = self._centerers()
            pairs = [*zip(d_losses, t_out["dino_logits_all"]), *zip(i_losses, t_out["ibot_logits_all"])]
            for centred, scores in pairs:
                centred.update_center(scores)
        if self.use_feature:
            for fl, tok in zip(self.feature_losses, t_out["tokens"]):
                fl.update_center(tok["cls"], tok["patch"])  # type: ignore[operator]
        return losses

    @torch.no_grad()
    def update_ema(self, momentum: float) -> None:
        """EMA of the student: ``ema = m * ema + (1 - m) * student`` (buffers copied)."""
        ema_p: list[torch.Tensor] = list(self.ema_student.parameters())
        st_p = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(ema_p, momentum)
        torch._foreach_add_(ema_p, st_p, alpha=1 - momentum)
        for eb, sb in zip(self.ema_student.buffers(), self.student.buffers()):
            eb.copy_(sb)
