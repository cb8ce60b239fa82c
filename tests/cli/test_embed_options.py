"""``pathdistill embed`` refuses bad option values, a device this machine lacks and slides of the same file
name before any work; it keeps complete outputs of another model and reports tissue detection's unreadable
tiles."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

FAST = ["--mpp", "4", "--min-tissue", "0", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny ViT checkpoints of the same spec with other weights (a retrained model)."""
    out = []
    for seed in (0, 1):
        model = tiny_model("vit", seed=seed)
        out.append(save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp(f"ckpt{seed}")))
    return out[0], out[1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model is loaded (the refusals must come first)."""
    from napari_pathdistill.models import factory

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(factory, "load_model", refuse)


def _refused(argv: list[str], capsys) -> str:
    """The error line of an argparse refusal (exit code 2) of ``argv``."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--batch-size", "0", "integer >= 1"),
        ("--tile-px", "0", "integer >= 1"),
        ("--mpp", "0", "number > 0"),
        ("--num-workers", "-1", "integer >= 1"),
        ("--mpp-override", "-1", "number > 0"),
        ("--min-tissue", "1.5", "in [0, 1]"),
        ("--format", "csv", "comma list of h5, plism"),
        ("--slide-timeout", "-5", "seconds >= 0"),
        ("--workers", "0", "integer >= 1"),
    ],
)
def test_bad_option_values_are_argparse_errors(cmu_svs, tmp_path, capsys, no_model_load, option, value, says):
    line = _refused(["embed", str(cmu_svs), "--out", str(tmp_path / "o"), option, value], capsys)
    assert f"argument {option}: " in line and says in line and "fallback_mpp" not in line
    assert not (tmp_path / "o").exists()


def test_format_and_timeout_values_that_are_meant(tmp_path) -> None:
    from napari_pathdistill.cli.embed import _options
    from napari_pathdistill.cli.main import build_parser

    args = build_parser().parse_args(
        ["embed", "s.svs", "--out", "o", "--format", "h5, plism", "--slide-timeout", "0"]
    )
    opts = _options(args)
    assert opts.formats == ("h5", "plism") and opts.slide_timeout is None  # 0: no limit, as the help says
    assert _options(build_parser().parse_args(["embed", "s.svs", "--out", "o"])).formats == ("h5",)


def test_a_device_this_machine_lacks_is_refused_before_the_model_loads(
    cmu_svs, tmp_path, capsys, monkeypatch, no_model_load
) -> None:
    import torch

    from napari_pathdistill.device import resolve_device
    from napari_pathdistill.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _refused(["embed", str(cmu_svs), "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert "argument --device: device 'cuda': CUDA is not available here (no NVIDIA GPU or driver" in line
    line = _refused(["embed", str(cmu_svs), "--out", str(tmp_path), "--device", "gpu0"], capsys)
    assert "unknown device 'gpu0'" in line
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:1")
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "mps")


def test_slides_of_the_same_file_name_are_refused_up_front(cmu_svs, tmp_path, capsys, no_model_load) -> None:
    other = tmp_path / "copy" / cmu_svs.name
    other.parent.mkdir()
    shutil.copy(cmu_svs, other)
    out = tmp_path / "out"
    line = _refused(["embed", str(cmu_svs), str(other), "--out", str(out), *FAST], capsys)
    assert f"{cmu_svs} and {other} -> {out / 'CMU-1-Small-Region.h5'}" in line
    assert "separate --out folders" in line and not out.exists()


def test_a_complete_output_of_another_model_is_kept_unless_overwrite(
    cmu_svs, ckpts, tmp_path, capsys
) -> None:
    first, second = ckpts
    h5 = tmp_path / f"{cmu_svs.stem}.h5"
    assert main(["embed", str(cmu_svs), "--model", str(first), "--out", str(tmp_path), *FAST]) == 0
    with h5py.File(h5) as f:
        weights, stamp = f.attrs["weights"], h5.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["embed", str(cmu_svs), "--model", str(second), "--out", str(tmp_path), *FAST]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {cmu_svs}: {h5} is a complete embedding with other settings (" in err
    assert f"weights {weights} there, " in err and "--overwrite" in err and "1 of 1 slides failed" in err
    assert h5.stat().st_mtime_ns == stamp  # the first model's features are kept
    argv = ["embed", str(cmu_svs), "--model", str(second), "--out", str(tmp_path), *FAST, "--overwrite"]
    assert main(argv) == 0
    with h5py.File(h5) as f:
        assert f.attrs["weights"] != weights


def test_tissue_detection_s_undecodable_tiles_are_reported_and_recorded(
    cmu_svs, ckpts, tmp_path, capsys
) -> None:
    bad = tmp_path / "bad.svs"
    shutil.copy(cmu_svs, bad)
    with bad.open("r+b") as fh:  # a corrupt region: tissue detection reads those tiles as background
        fh.seek(800_000)
        fh.write(bytes(300_000))
    argv = ["embed", str(bad), "--model", str(ckpts[0]), "--out", str(tmp_path / "o"), "--mpp", "4",
            "--device", "cpu"]  # fmt: skip
    for _run in range(2):  # embedded, then kept: the note is printed both times
        assert main(argv) == 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "tissue detection:" in line]
        assert len(lines) == 1 and f"WARNING {bad}: tissue detection: " in lines[0], err
        assert "cannot be decoded" in lines[0] and "count as background" in lines[0]
    with h5py.File(tmp_path / "o" / "bad.h5") as f:
        assert (
            f.attrs["warning"].startswith("tissue detection: ") and "cannot be decoded" in f.attrs["warning"]
        )
