"""Each loss against values computed by hand (plain Python math, not torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed

from pathdistill_train.data.stain import hed_jitter, rgb_to_hed
from pathdistill_train.layers import DINOHead
from pathdistill_train.loss import DINOLoss, FeatureDistillLoss, iBOTPatchLoss
from pathdistill_train.loss.centering import sinkhorn_knopp
from pathdistill_train.loss.feature_distill_loss import resize_patch_grid


def _log_softmax(xs: list[float], temp: float) -> list[float]:
    z = [x / temp for x in xs]
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    return [v - lse for v in z]


def test_dino_loss_cross_view_matches_hand_computation():
    s = [[1.0, 0.0], [0.0, 2.0]]  # student views 0, 1 (B=1, K=2)
    t = [[0.9, 0.1], [0.3, 0.7]]  # teacher probabilities of views 0, 1
    expected = 0.0
    for i, j in ((0, 1), (1, 0)):  # teacher view i supervises student view j != i
        expected += -sum(tk * lk for tk, lk in zip(t[i], _log_softmax(s[j], 0.1)))
    expected /= 2
    loss = DINOLoss(2, student_temp=0.1)(torch.tensor(s).view(2, 1, 2), torch.tensor(t).view(2, 1, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dino_teacher_centering_and_temperature():
    loss = DINOLoss(2, center_momentum=0.9)
    logits = torch.tensor([[[1.0, 3.0]], [[3.0, 1.0]]])  # (V=2, B=1, K=2)
    probs = loss.teacher_probs(logits, 0.5)
    e = math.exp(2 / 0.5)
    assert probs[0, 0].tolist() == pytest.approx([1 / (1 + e), e / (1 + e)], rel=1e-5)
    loss.update_center(logits)  # batch mean (2, 2) -> centre 0.1 * 2
    assert loss.center[0].tolist() == pytest.approx([0.2, 0.2])


def test_sinkhorn_knopp_balances_prototypes():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)) * 3
    q = sinkhorn_knopp(logits, 1.0, n_iterations=50)
    assert q.sum(1).tolist() == pytest.approx([1.0] * 8, abs=1e-4)
    assert q.sum(0).tolist() == pytest.approx([2.0] * 4, abs=1e-2)  # M/K samples per prototype


def test_ibot_patch_loss_same_view_all_patches():
    s = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])  # (B=1, N=2, K=2)
    t = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])
    per_patch = [
        -sum(a * b for a, b in zip(t[0, n].tolist(), _log_softmax(s[0, n].tolist(), 0.1))) for n in (0, 1)
    ]
    loss = iBOTPatchLoss(2, student_temp=0.1)(s, t)
    assert loss.item() == pytest.approx(sum(per_patch) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="student"):
        iBOTPatchLoss(2)(s, t[:, :1])


def test_feature_loss_hand_values_and_adaptor():
    fl = FeatureDistillLoss(2, 2, normalize_teacher=False)
    out = fl(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 1, 2), torch.tensor([[0.0, 1.0]]), None)
    assert out["feat_cls"].item() == pytest.approx(1.0 + 0.5)  # (1 - cos 0) + smoothL1 mean(0.5, 0.5)
    assert out["feat_patch"].item() == 0.0
    fl2 = FeatureDistillLoss(4, 6)
    assert isinstance(fl2.patch_adaptor, torch.nn.Linear) and fl2.patch_adaptor.out_features == 6
    out2 = fl2(torch.randn(2, 4), torch.randn(2, 16, 4), torch.randn(2, 6), torch.randn(2, 4, 6))
    assert out2["feat_patch"].item() > 0


def test_feature_loss_centres_the_teacher_targets_by_hand():
    fl = FeatureDistillLoss(2, 3, normalize_teacher=False, center_teacher=True, center_momentum=0.5)
    # bias-free: the mean cannot hide there
    assert fl.cls_adaptor.bias is None and fl.patch_adaptor.bias is None
    t1, t2 = (
        torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]),
        torch.tensor([[6.0, 0.0, 0.0], [6.0, 0.0, 0.0]]),
    )
    fl.update_center(t1, None)  # the first step sets the centre: the batch mean (2, 2, 2)
    assert fl.cls_center.tolist() == [2.0, 2.0, 2.0] and fl.patch_center.tolist() == [0.0, 0.0, 0.0]
    fl.update_center(t2, None)  # then EMA: 0.5 * (2, 2, 2) + 0.5 * (6, 0, 0)
    assert fl.cls_center.tolist() == [4.0, 1.0, 1.0]
    with torch.no_grad():
        fl.cls_adaptor.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    s = torch.tensor([[1.0, 0.0]])  # adapted: (1, 0, 0); target (3, 2, 1) - (4, 1, 1) = (-1, 1, 0)
    cos = -1.0 / math.sqrt(2.0)
    l1 = (1.5 + 0.5 + 0.0) / 3  # smooth-L1 (beta 1) of the differences (2, 1, 0): 1.5, 0.5, 0
    loss = fl.cls_term(s, torch.tensor([[3.0, 2.0, 1.0]]))
    assert loss.item() == pytest.approx((1.0 - cos) + l1, rel=1e-6)
    off = FeatureDistillLoss(2, 3, normalize_teacher=False)
    off.update_center(t1, None)  # no-op without centring
    assert off.cls_center.abs().sum() == 0 and off.cls_adaptor.bias is not None


def _mean_pairwise_cosine(x: torch.Tensor) -> float:
    x = torch.nn.functional.normalize(x, dim=-1)
    c = x @ x.T
    return float(c[~torch.eye(len(x), dtype=torch.bool)].mean())


@pytest.mark.parametrize("center", [False, True])
def test_centring_and_spread_keep_student_features_apart(center: bool) -> None:
    """A student whose output norm carries a large constant (a ViT's final LayerNorm bias, e.g. after a warm
    start), distilled from a teacher whose features share a large mean (as ReLU-pooled CNN features do):
    without centring the adaptor's bias absorbs both means and nothing removes the constant (the student's
    pairwise cosine stays high, like bundled student v2's 0.99); with centred targets and the spread term
    it is driven out."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    teacher = torch.relu(x @ torch.randn(8, 32, generator=g)) + 3.0  # pairwise cosine ~0.9
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(4)
    torch.nn.init.constant_(norm.bias, 3.0)
    student = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4), norm)
    assert _mean_pairwise_cosine(student(x).detach()) > 0.8
    fl = FeatureDistillLoss(4, 32, center_teacher=center, spread_weight=1.0 if center else 0.0)
    opt = torch.optim.Adam([*student.parameters(), *fl.parameters()], lr=1e-2)
    for _ in range(400):
        y = student(x)
        loss = fl.cls_term(y, teacher) + fl.spread_term(y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        fl.update_center(teacher, None)
    with torch.no_grad():
        cos = _mean_pairwise_cosine(student(x))
    if center:
        assert abs(cos) < 0.2, cos
    else:
        assert _mean_pairwise_cosine(teacher) > 0.8 and cos > 0.5, cos


def test_patch_grid_interpolation_matches_bilinear():
    grid = torch.arange(4.0).view(1, 1, 2, 2)
    tokens = grid.flatten(2).transpose(1, 2)  # (1, 4, 1) row-major
    up = resize_patch_grid(tokens, 16)
    ref = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(up[0, :, 0], ref.flatten())
    assert up[0, 0, 0].item() == 0.0 and up[0, 5, 0].item() == pytest.approx(
        0.75
    )  # 0.75*0+0.25*(1+2)/... corner


def test_dino_head_outputs_prototype_cosines():
    head = DINOHead(8, 5, hidden_dim=16, bottleneck_dim=4)
    y = head(torch.randn(3, 8))
    assert y.shape == (3, 5) and y.abs().max() <= 1.0 + 1e-5  # unit-norm input, unit-norm prototypes


def test_hed_matches_skimage_and_identity():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.05, 1.0, (8, 8, 3))
    ours = rgb_to_hed(torch.tensor(rgb).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, rgb2hed(rgb), atol=1e-5)
    np.testing.assert_allclose(hed2rgb(rgb2hed(np.ones((1, 1, 3)))), 1.0, atol=1e-6)  # skimage's inverse
    back = hed_jitter(torch.tensor(rgb).permute(2, 0, 1).float(), 0.0, 0.0).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(back, rgb, atol=1e-4)  # no jitter, no change (test_hed_jitter_identity.py)
    jittered = hed_jitter(
        torch.tensor(rgb).permute(2, 0, 1).float(), 0.2, 0.05, torch.Generator().manual_seed(1)
    )
    assert (jittered.permute(1, 2, 0).numpy() - back).std() > 1e-3


def test_ibot_patch_centre_and_sinkhorn_share_the_dino_rules():
    torch.manual_seed(0)
    patch = iBOTPatchLoss(3, center_momentum=0.5)
    logits = torch.randn(2, 4, 3)  # (B, N, K)
    patch.update_center(logits)
    # EMA with the mean over every sample and patch, kept as a (1, 1, K) buffer
    assert patch.center.shape == (1, 1, 3)
    torch.testing.assert_close(patch.center, 0.5 * logits.reshape(-1, 3).mean(0).view(1, 1, 3))
    probs = patch.teacher_probs(logits, 0.1)
    torch.testing.assert_close(probs, torch.softmax((logits - patch.center) / 0.1, dim=-1))
    sk = iBOTPatchLoss(3, centering="sinkhorn_knopp").teacher_probs(logits, 0.1)
    torch.testing.assert_close(sk, sinkhorn_knopp(logits.reshape(8, 3), 0.1).reshape(2, 4, 3))
    cls = DINOLoss(3, centering="sinkhorn_knopp").teacher_probs(logits, 0.1)  # (V, B, K) the same way
    torch.testing.assert_close(cls, sk)
    with pytest.raises(ValueError, match="centering"):
        iBOTPatchLoss(3, centering="mean")
