"""Student-only stain/scanner augmentation: each batched op equals its per-image reference, p=0 is the identity,
the RNG makes it reproducible, and the teacher never sees the augmented images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

from pathdistill_train.config import load_config
from pathdistill_train.data.scanner_augment import (
    ScannerAugment,
    ScannerAugmentConfig,
    gaussian_blur_batch,
    hed_jitter_batch,
    jpeg_batch,
    resolution_batch,
)
from pathdistill_train.data.stain import hed_to_rgb, rgb_to_stains
from pathdistill_train.train.distill_meta_arch import DistillMetaArch


@pytest.fixture(scope="module")
def tiles(histolab_tiles) -> torch.Tensor:
    """Four real H&E/IHC tiles, (4, 3, 64, 64) float in [0, 1]."""
    from PIL import Image

    files = sorted(histolab_tiles.glob("*.png"))[:4]
    imgs = [torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((64, 64)))) for f in files]
    return torch.stack(imgs).permute(0, 3, 1, 2).float() / 255.0


def test_hed_jitter_batch_equals_the_per_image_formula(tiles: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    alpha, beta = (
        1 + 0.1 * (torch.rand(4, 3, generator=g) * 2 - 1),
        0.03 * (torch.rand(4, 3, generator=g) * 2 - 1),
    )
    got = hed_jitter_batch(tiles, alpha, beta)
    for i in range(4):
        want = hed_to_rgb(rgb_to_stains(tiles[i]) * alpha[i, :, None, None] + beta[i, :, None, None])
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)


def test_blur_jpeg_resolution_equal_their_references(tiles: torch.Tensor) -> None:
    sigma = torch.tensor([0.5, 1.0, 1.5, 0.2])
    got = gaussian_blur_batch(tiles, sigma)
    radius = int(torch.ceil(3 * sigma.max()))
    for i in range(4):
        want = TF.gaussian_blur(tiles[i], [2 * radius + 1] * 2, [float(sigma[i])] * 2)
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)
    u8 = (tiles * 255).round().to(torch.uint8)
    want_jpeg = torch.stack([decode_jpeg(encode_jpeg(t, quality=50)) for t in u8]).float() / 255
    torch.testing.assert_close(jpeg_batch(tiles, 50), want_jpeg)
    torch.testing.assert_close(resolution_batch(tiles, torch.ones(4)), tiles, atol=1e-6, rtol=0)
    low = resolution_batch(tiles, torch.full((4,), 0.5))
    detail = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert detail(low) < 0.8 * detail(tiles)  # a coarser optical resolution loses fine detail


def test_module_identity_at_p0_reproducible_and_in_range(tiles: torch.Tensor) -> None:
    assert ScannerAugment(ScannerAugmentConfig(p=0.0))(tiles) is tiles
    aug = ScannerAugment(ScannerAugmentConfig(p=1.0))
    a = aug(tiles, torch.Generator().manual_seed(3))
    b = aug(tiles, torch.Generator().manual_seed(3))
    c = aug(tiles, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert (a - c).abs().mean() > 1e-3 and (a - tiles).abs().mean() > 1e-2
    assert a.shape == tiles.shape and a.min() >= 0 and a.max() <= 1


def test_teacher_sees_raw_views_student_the_augmented_ones(tiles: torch.Tensor) -> None:
    cfg = load_config("smoke_cpu", ["augmentation.student_p=1.0", "loss.mode=feature"])
    arch = DistillMetaArch(cfg)
    views = torch.nn.functional.interpolate(tiles[:2], size=(56, 56)).unsqueeze(0).expand(2, 2, 3, 56, 56)
    no_local = torch.zeros(0, 2, 3, 1, 1)
    arch.train()
    teacher_train = arch.get_teacher_output(views, 0.04)["tokens"][0]["cls"]
    torch.manual_seed(0)
    student_train = arch.get_student_output(views, no_local)["cls"]
    arch.eval()
    teacher_eval = arch.get_teacher_output(views, 0.04)["tokens"][0]["cls"]
    student_eval = arch.get_student_output(views, no_local)["cls"]
    torch.testing.assert_close(teacher_train, teacher_eval)  # the teacher's input is never augmented
    assert (student_train - student_eval).abs().max() > 1e-4  # the student's is, while training
