"""student.init_weights: a v1-shaped student (ViT-Ti/14, 12 blocks) warm-starts the v2 shape (ViT-Ti/16, 8)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pathdistill_train.errors import TrainConfigError
from pathdistill_train.models.build import build_student
from pathdistill_train.models.warm_start import read_init_state, warm_start

V2 = {"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 8, "num_heads": 3, "mlp_ratio": 4.0,
      "num_classes": 0}  # fmt: skip


V1 = {**V2, "patch_size": 14, "depth": 12}


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A v1-shaped export (random weights, so the test does not depend on which student is bundled)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("v1") / "model.safetensors"
    state = {
        f"model.{k}": v.contiguous() for k, v in _student(**V1).state_dict().items()
    }  # TokenEncoder keys
    save_file(state, str(path))
    return str(path.parent)


def _student(**over: object) -> torch.nn.Module:
    kw = {**V2, **over}
    return build_student("vit_small_patch14_reg4_dinov2", kw, (0.5,) * 3, (0.5,) * 3).model


def test_v1_into_v2_blocks_copied_patch_embed_resampled(v1_file: str) -> None:
    state = read_init_state(v1_file)
    model = _student()
    record = warm_start(model, state)
    assert record["dropped_blocks"] == [8, 9, 10, 11] and record["random_blocks"] == []
    assert set(record["resampled"]) == {"patch_embed.proj.weight", "pos_embed"}
    got = model.state_dict()
    for key in (
        "blocks.0.attn.qkv.weight",
        "blocks.7.mlp.fc2.weight",
        "cls_token",
        "reg_token",
        "norm.weight",
    ):
        assert torch.equal(got[key], state[key]), key
    assert got["pos_embed"].shape == (1, 14 * 14, 192)
    # FlexiViT resampling: a 14 px patch resized (bicubic, antialiased: timm's default) to 16 px projects (almost) as it did at 14 px
    x = torch.rand(5, 3, 14, 14)
    x16 = F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    w14, w16 = state["patch_embed.proj.weight"], got["patch_embed.proj.weight"]
    before = torch.einsum("bchw,dchw->bd", x, w14)
    after = torch.einsum("bchw,dchw->bd", x16, w16)
    assert torch.allclose(before, after, atol=1e-3 * before.abs().max().item())


def test_deeper_student_keeps_extra_blocks_random(v1_file: str) -> None:
    model = _student(depth=13, patch_size=14)
    init = model.state_dict()["blocks.12.attn.qkv.weight"].clone()
    record = warm_start(model, read_init_state(v1_file))
    assert record["random_blocks"] == [12] and record["resampled"] == []
    assert torch.equal(model.state_dict()["blocks.12.attn.qkv.weight"], init)


def test_other_width_is_refused(v1_file: str) -> None:
    with pytest.raises(TrainConfigError, match="only the patch size"):
        warm_start(_student(embed_dim=96), read_init_state(v1_file))


def test_missing_file_is_refused(tmp_path) -> None:
    with pytest.raises(TrainConfigError, match="not found"):
        read_init_state(tmp_path / "nope")


def test_init_blocks_pick_source_blocks_in_order(v1_file: str) -> None:
    """Layer dropping: the student's block i is the source's block ``blocks[i]``; the rest are dropped."""
    state = read_init_state(v1_file)
    model = _student(depth=3)
    record = warm_start(model, state, [0, 5, 11])
    assert record["source_blocks"] == [0, 5, 11] and record["random_blocks"] == []
    assert record["dropped_blocks"] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    got = model.state_dict()
    for i, src in enumerate([0, 5, 11]):
        for name in ("attn.qkv.weight", "mlp.fc2.bias", "norm1.weight"):
            assert torch.equal(got[f"blocks.{i}.{name}"], state[f"blocks.{src}.{name}"]), (i, name)
    assert torch.equal(got["norm.weight"], state["norm.weight"])


@pytest.mark.parametrize("blocks", [[0, 5], [5, 0, 11], [0, 0, 1], [0, 5, 12]])
def test_bad_init_blocks_are_refused(v1_file: str, blocks: list[int]) -> None:
    with pytest.raises(TrainConfigError, match="init_blocks"):
        warm_start(_student(depth=3), read_init_state(v1_file), blocks)
