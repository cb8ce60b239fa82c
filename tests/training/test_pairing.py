"""Cross-view pairing (H0-mini eq. 1) for every loss mode: the student's view j is matched to the teacher's view
i != j for the image-level terms (DINO, feature CLS), the same view for patch terms (eq. 2); ``same`` as an option.
Checked against losses computed by hand from the formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pathdistill_train.config import load_config
from pathdistill_train.errors import TrainConfigError
from pathdistill_train.loss import DINOLoss
from pathdistill_train.loss.views import view_pairs
from pathdistill_train.train.distill_meta_arch import DistillMetaArch

B, DIM, N = 3, 48, 16


def test_view_pairs() -> None:
    assert view_pairs(2, 2, "cross") == [(0, 1), (1, 0)]
    assert view_pairs(2, 4, "cross") == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    assert view_pairs(1, 1, "cross") == [(0, 0)]
    assert view_pairs(2, 4, "same") == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="pairing"):
        view_pairs(2, 2, "diagonal")


def _arch(pairing: str, mode: str = "feature", spread: float = 1.0) -> DistillMetaArch:
    cfg = load_config(
        "smoke_cpu",
        [f"loss.mode={mode}", f"loss.pairing={pairing}", f"student.model_kwargs.embed_dim={DIM}",
         f"loss.feature_spread_weight={spread}"],
    )  # fmt: skip
    return DistillMetaArch(cfg)


def _hand_term(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - mean cosine) + smooth-L1 (beta 1) against the layer-normalised teacher, written out."""
    t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-5)
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1)).clamp_min(1e-8)
    d = (s - t).abs()
    l1 = torch.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    return (1 - cos.mean()) + l1


def _tokens(seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    teacher = {"cls": torch.randn(2 * B, DIM, generator=g), "patch": torch.randn(2 * B, N, DIM, generator=g)}
    student = {"cls": torch.randn(2 * B, DIM, generator=g), "patch": torch.randn(2 * B, N, DIM, generator=g)}
    return teacher, student


@pytest.mark.parametrize("pairing", ["cross", "same"])
def test_feature_loss_pairs_views_as_configured(pairing: str) -> None:
    arch = _arch(pairing)
    teacher, student = _tokens(0)
    losses = arch.compute_losses({"tokens": [teacher]}, student)
    s, t = student["cls"].view(2, B, DIM), teacher["cls"].view(2, B, DIM)
    if pairing == "cross":  # teacher view 1 supervises student view 2 and back
        want_cls = (_hand_term(s[1], t[0]) + _hand_term(s[0], t[1])) / 2
    else:
        want_cls = (_hand_term(s[0], t[0]) + _hand_term(s[1], t[1])) / 2
    want_patch = _hand_term(student["patch"], teacher["patch"])  # patches: always the same view
    torch.testing.assert_close(losses["feat_cls"], want_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["feat_patch"], want_patch, atol=1e-5, rtol=1e-5)
    # spread: per view, the mean cosine over all pairs of the batch's student CLS tokens (self-pairs included)
    unit = s / s.norm(dim=-1, keepdim=True)
    want_spread = sum((unit[v] @ unit[v].T).mean() for v in range(2)) / 2
    torch.testing.assert_close(losses["feat_spread"], want_spread, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["loss"], want_cls + want_patch + want_spread, atol=1e-5, rtol=1e-5)


def test_a_student_copying_the_teacher_view_by_view_is_penalised_only_cross_view() -> None:
    teacher, student = _tokens(1)
    student["cls"] = F.layer_norm(teacher["cls"], (DIM,))  # identical to the teacher on each view
    same = _arch("same").compute_losses({"tokens": [teacher]}, student)["feat_cls"]
    cross = _arch("cross").compute_losses({"tokens": [teacher]}, student)["feat_cls"]
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    assert cross.item() > 0.5  # it must map view 2 onto the teacher's view 1: invariance is learned
    teacher["cls"] = teacher["cls"].view(2, B, DIM)[:1].expand(2, B, DIM).reshape(2 * B, DIM)  # equal views
    student["cls"] = F.layer_norm(teacher["cls"], (DIM,))
    cross_equal = _arch("cross").compute_losses({"tokens": [teacher]}, student)["feat_cls"]
    assert cross_equal.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("pairing", ["cross", "same"])
def test_dino_loss_pairing_by_hand(pairing: str) -> None:
    g = torch.Generator().manual_seed(2)
    s_logits = torch.randn(4, B, 8, generator=g)  # 2 global + 2 local student views
    t_probs = torch.softmax(torch.randn(2, B, 8, generator=g), -1)
    loss = DINOLoss(8, student_temp=0.1, pairing=pairing)(s_logits, t_probs)
    log_p = torch.log_softmax(s_logits / 0.1, -1)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)] if pairing == "cross" else [(0, 0), (1, 1)]
    want = sum((-(t_probs[i] * log_p[j]).sum(-1)).mean() for i, j in pairs) / len(pairs)
    torch.testing.assert_close(loss, want)


def test_both_mode_forward_on_real_tiny_models_is_cross_view() -> None:
    torch.manual_seed(0)
    arch = _arch("cross", mode="both").eval()
    views = torch.rand(2, B, 3, 56, 56)
    batch = {"global": views, "local": torch.zeros(0, B, 3, 1, 1)}
    t_out = arch.get_teacher_output(views, 0.04)
    s_out = arch.get_student_output(views, batch["local"])
    losses = arch.compute_losses(t_out, s_out)
    s, t = s_out["cls"].view(2, B, DIM), t_out["tokens"][0]["cls"].view(2, B, -1)
    fl = arch.feature_losses[0]
    want = arch.cfg.loss.feature_weight * (fl.cls_term(s[1], t[0]) + fl.cls_term(s[0], t[1])) / 2
    torch.testing.assert_close(losses["feat_cls"], want)
    assert set(losses) == {"dino", "ibot", "feat_cls", "feat_patch", "feat_spread", "loss"}
    with pytest.raises(TrainConfigError, match=r"loss\.pairing"):
        _arch("diagonal")
