"""Relational distillation (``loss.relational_weight``): the student's cross-view cosine neighbourhoods in a batch
against the teacher's same-view ones, checked against the formula written out, and wired cross-view."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pathdistill_train.config import load_config
from pathdistill_train.loss import RelationalDistillLoss
from pathdistill_train.train.distill_meta_arch import DistillMetaArch

B, DIM = 4, 48


def _hand_kl(q: torch.Tensor, k: torch.Tensor, t: torch.Tensor, tau_t: float, tau_s: float) -> float:
    """Mean over rows b of sum_c p_bc log(p_bc / s_bc), loops over plain floats."""

    def cos(a, b):
        return float((a @ b) / (a.norm() * b.norm()))

    total = 0.0
    for b in range(len(q)):
        pt = [math.exp(cos(t[b], t[c]) / tau_t) for c in range(len(q))]
        ps = [math.exp(cos(q[b], k[c]) / tau_s) for c in range(len(q))]
        zt, zs = sum(pt), sum(ps)
        total += sum((p / zt) * math.log((p / zt) / (s / zs)) for p, s in zip(pt, ps))
    return total / len(q)


def test_relational_loss_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, t = (
        torch.randn(B, DIM, generator=g),
        torch.randn(B, DIM, generator=g),
        torch.randn(B, 96, generator=g),
    )
    loss = RelationalDistillLoss(teacher_temp=0.1, student_temp=0.2)(q, k, t)
    assert loss.item() == pytest.approx(_hand_kl(q, k, t, 0.1, 0.2), rel=1e-4)


def test_zero_when_the_student_reproduces_the_teachers_cosines_and_gradients_reach_both_views() -> None:
    g = torch.Generator().manual_seed(1)
    t = torch.randn(B, DIM, generator=g)
    rot = torch.linalg.qr(torch.randn(DIM, DIM, generator=g))[0]  # cosines are rotation invariant
    fn = RelationalDistillLoss(0.1, 0.1)
    assert fn(t @ rot, 3.0 * t @ rot, t).item() == pytest.approx(0.0, abs=1e-5)
    # all student tokens nearly parallel (a constant component): penalised, unlike the adaptor-based terms
    q = (torch.ones(B, DIM) + 0.01 * torch.randn(B, DIM, generator=g)).requires_grad_()
    k = q.detach().clone().requires_grad_()
    loss = fn(q, k, t)
    loss.backward()
    assert loss.item() > 0.5 and q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same rows"):
        fn(q[:2], k, t)
    with pytest.raises(ValueError, match="temperatures"):
        RelationalDistillLoss(0.0, 0.1)


def _meta_arch_losses(
    pairing: str, seed: int, *overrides: str
) -> tuple[dict, dict, torch.Tensor, torch.Tensor, list]:
    """compute_losses of a feature-mode meta-arch on random tokens: (losses, tokens, student CLS (2, B, D), the
    layer-normalised teacher CLS (2, B, D), the (teacher view, student view) pairs written out)."""
    cfg = load_config("smoke_cpu", ["loss.mode=feature", f"loss.pairing={pairing}", f"student.model_kwargs.embed_dim={DIM}",
                                    *overrides])  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    teacher = {"cls": torch.randn(2 * B, DIM, generator=g), "patch": torch.randn(2 * B, 16, DIM, generator=g)}
    student = {"cls": torch.randn(2 * B, DIM, generator=g), "patch": torch.randn(2 * B, 16, DIM, generator=g)}
    losses = DistillMetaArch(cfg).compute_losses({"tokens": [teacher]}, student)
    s, t = student["cls"].view(2, B, DIM), F.layer_norm(teacher["cls"], (DIM,)).view(2, B, DIM)
    pairs = [(0, 1), (1, 0)] if pairing == "cross" else [(0, 0), (1, 1)]
    return losses, {"teacher": teacher, "student": student}, s, t, pairs


@pytest.mark.parametrize("pairing", ["cross", "same"])
def test_meta_arch_pairs_student_view_j_with_its_view_i_and_the_teacher_view_i(pairing: str) -> None:
    losses, tokens, s, t, pairs = _meta_arch_losses(pairing, 2, "loss.relational_weight=0.5",
                                                    "loss.relational_teacher_temp=0.1",
                                                    "loss.relational_student_temp=0.1")  # fmt: skip
    want = 0.5 * sum(_hand_kl(s[j], s[i], t[i], 0.1, 0.1) for i, j in pairs) / 2
    assert losses["relational"].item() == pytest.approx(want, rel=1e-4)
    others = sum(v for key, v in losses.items() if key not in ("loss", "relational"))
    torch.testing.assert_close(losses["loss"], others + losses["relational"])
    off = DistillMetaArch(
        load_config("smoke_cpu", ["loss.mode=feature", f"student.model_kwargs.embed_dim={DIM}"])
    )
    # off by default
    assert "relational" not in off.compute_losses({"tokens": [tokens["teacher"]]}, tokens["student"])


def test_batch_cka_equals_the_evaluation_metric_and_ignores_rotation_scale_and_a_constant() -> None:
    from napari_pathdistill.metrics.agreement import linear_cka
    from pathdistill_train.loss import CKADistillLoss
    from pathdistill_train.loss.cka_distill_loss import batch_linear_cka

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, DIM, generator=g), torch.randn(16, 96, generator=g)
    assert batch_linear_cka(x, y).item() == pytest.approx(linear_cka(x.numpy(), y.numpy()), rel=1e-4)
    rot = torch.linalg.qr(torch.randn(DIM, DIM, generator=g))[0]
    student = 5.0 * x @ rot + 100.0  # rotated, scaled, plus a constant component shared by every tile
    assert CKADistillLoss()(student, x).item() == pytest.approx(0.0, abs=1e-4)
    # unrelated (16 rows: CKA is biased upwards when B < D)
    assert CKADistillLoss()(y[:, :DIM], x).item() > 0.2
    with pytest.raises(ValueError, match="same B"):
        batch_linear_cka(x[:1], y[:1])


@pytest.mark.parametrize("pairing", ["cross", "same"])
def test_meta_arch_cka_term_pairs_student_view_j_with_teacher_view_i(pairing: str) -> None:
    from napari_pathdistill.metrics.agreement import linear_cka

    losses, _, s, t, pairs = _meta_arch_losses(pairing, 4, "loss.cka_weight=2.0")
    want = 2.0 * sum(1 - linear_cka(s[j].numpy(), t[i].numpy()) for i, j in pairs) / 2
    assert losses["cka"].item() == pytest.approx(want, rel=1e-4)
    assert "relational" not in losses
