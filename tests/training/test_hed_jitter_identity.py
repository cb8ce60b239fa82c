"""HED stain jitter (Tellez et al. 2018) against Beer-Lambert by hand: zero jitter leaves a real H&E tile as it is,
and an eosin shift multiplies each channel's transmitted light by exp(-delta OD) along Ruifrok & Johnston's eosin
vector, also on pixels (red blood cells) whose haematoxylin concentration is negative."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from pathdistill_train.data.scanner_augment import hed_jitter_batch
from pathdistill_train.data.stain import hed_jitter, rgb_to_hed, rgb_to_stains

# Ruifrok & Johnston (2001) eosin optical-density vector (skimage's rgb_from_hed row 1), and skimage's
# concentration unit: optical density / ln(1e6)
_EOSIN = torch.tensor([0.07, 0.99, 0.11])
_UNIT_OD = math.log(1e6)


def _tile(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0


def test_zero_jitter_leaves_a_tile_with_red_blood_cells_unchanged(histolab_tiles) -> None:
    # a lung adenocarcinoma tile with red blood cells: 2 % of its pixels lie outside the H/E/DAB cone
    rgb = _tile(histolab_tiles / "high-nuclei-score-level0.png")[:, :256, :256]
    assert rgb.min() > 0  # no pixel at the 1e-6 floor of the optical density
    torch.testing.assert_close(hed_jitter(rgb, 0.0, 0.0), rgb, atol=1e-4, rtol=0)
    ones, zeros = torch.ones(1, 3), torch.zeros(1, 3)
    torch.testing.assert_close(hed_jitter_batch(rgb[None], ones, zeros)[0], rgb, atol=1e-4, rtol=0)


def test_an_eosin_shift_follows_beer_lambert_on_a_red_blood_cell_pixel() -> None:
    rbc = torch.tensor([0.80, 0.20, 0.25]).view(1, 3, 1, 1)  # red: its haematoxylin concentration is < 0
    assert rgb_to_hed(rbc)[0, 0] == 0  # (skimage's rgb2hed clamps it to 0)
    beta = torch.tensor([[0.0, 0.01, 0.0]])
    got = hed_jitter_batch(rbc, torch.ones(1, 3), beta).flatten()
    # 0.01 more eosin adds 0.01 * ln(1e6) * (0.07, 0.99, 0.11) optical density: light x exp(-that)
    want = torch.tensor([0.80, 0.20, 0.25]) * torch.exp(-0.01 * _UNIT_OD * _EOSIN)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_the_trainer_and_the_benchmark_make_the_same_stain_change(histolab_tiles) -> None:
    # the trainer jitters in torch on the device (pathdistill_train.data.stain), the offline benchmark's "stain"
    # slides in numpy (evaluation.perturbations): one definition of a stain change, so the same draw must give the
    # same image, red blood cells (negative haematoxylin) included
    from skimage.color import hed2rgb

    from napari_pathdistill.evaluation.perturbations import rgb_to_stains as numpy_stains

    rgb = _tile(histolab_tiles / "high-nuclei-score-level0.png")[:, :128, :128]
    want_stains = numpy_stains(rgb.permute(1, 2, 0).double().numpy())  # (H, W, 3)
    assert (want_stains < 0).any()  # the tile has pixels outside the H/E/DAB cone
    got_stains = rgb_to_stains(rgb.double()).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got_stains, want_stains, atol=1e-6, rtol=0)
    alpha, beta = torch.tensor([1.04, 0.96, 1.02]), torch.tensor([-0.015, 0.02, 0.005])
    numpy_rgb = hed2rgb(want_stains * alpha.numpy() + beta.numpy())
    torch_rgb = hed_jitter_batch(rgb[None], alpha[None], beta[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(torch_rgb, numpy_rgb, atol=1e-4, rtol=0)
