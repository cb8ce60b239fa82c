"""Config values of the wrong shape and text that is not YAML are one ``pathdistill-train: error:`` line naming
the key, exit 2, before anything is built.

Before, ``data.tile_dirs=/data/tiles`` (a string, not a list) was read one folder per character ("tile folder t
not found"), ``teacher.mean=0.5`` or ``train=3`` (a scalar for a list / a section) died in a TypeError traceback,
and an unclosed ``[`` in an override, a mapping for a list, or a broken experiment yaml in a yaml traceback.
"""

from __future__ import annotations

import pytest

from pathdistill_train.config import load_config
from pathdistill_train.train.train import main

BASE = ["--config", "smoke_cpu", "train.max_steps=1"]


@pytest.mark.parametrize(
    ("override", "text"),
    [
        ("data.tile_dirs=/data/tiles", "data.tile_dirs='/data/tiles': expected a list, e.g. data.tile_dirs='[/data/tiles]'"),
        ("data.slides=/data/a.svs", "data.slides='/data/a.svs': expected a list"),
        ("teacher.mean=0.5", "teacher.mean=0.5: expected a list"),
        ("train=3", "train=3: expected a section of keys, set one key at a time (train.<key>=..."),
        ("student.model_kwargs=3", "student.model_kwargs=3: expected a section of keys"),
        ("data.slides=[/data/a.svs", "invalid config override data.slides=[/data/a.svs: not valid YAML"),
        ("teacher.extra={a: 1}", "invalid config override teacher.extra={a: 1}: Cannot merge"),
    ],
)  # fmt: skip
def test_wrong_shapes_and_bad_yaml_are_one_line_naming_the_key(tmp_path, capsys, override, text):
    assert main([*BASE, f"output_dir={tmp_path / 'out'}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("pathdistill-train: error: ") and text in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("train:\n  batch_size_per_gpu: [4\n", "not valid YAML at line 3"),
        ("- a\n- b\n", "must map config keys"),
    ],
)
def test_a_broken_experiment_yaml_is_one_line(tmp_path, capsys, content, text):
    exp = tmp_path / "mine.yaml"
    exp.write_text(content)
    assert main(["--config", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"pathdistill-train: error: {exp}: ") and text in err


def test_lists_and_sections_given_right_still_load():
    cfg = load_config(
        "smoke_cpu", ["data.tile_dirs=[/a,/b]", "data.slides=null", "teacher.mean=[0.5,0.5,0.5]"]
    )
    assert list(cfg.data.tile_dirs) == ["/a", "/b"] and cfg.data.slides is None


def test_an_extra_teacher_lists_only_the_keys_it_sets():
    """Before, an entry without all seven keys died building the model (``Key 'arch' is not in struct``)."""
    from pathdistill_train.models.build import build_teacher

    cfg = load_config("smoke_cpu", ["teacher.extra=[{name: efficientnet-lite2-imagenet, weights: random}]"])
    (entry,) = cfg.teacher.extra
    assert (entry.arch, entry.mean, entry.std, dict(entry.model_kwargs)) == ("", [], [], {})
    assert build_teacher(entry).model.default_cfg["architecture"] == "tf_efficientnet_lite2"
    assert load_config("smoke_cpu", ["teacher.extra=null"]).teacher.extra == []


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        ("{name: h0-mini, wieghts: random}", "unknown config key teacher.extra[0].wieghts: a teacher.extra entry takes"),
        ("{name: h0-mini, fsdp: true}", "unknown config key teacher.extra[0].fsdp"),
        ("h0-mini", "teacher.extra[0]='h0-mini': expected a mapping of teacher keys"),
        ("{name: h0-mini, mean: 0.5}", "teacher.extra[0].mean=0.5: expected a list"),
        ("{name: h0-mini, extra: [{name: h0-mini}]}", "teacher.extra[0].extra: list every further teacher"),
    ],
)  # fmt: skip
def test_a_wrong_extra_teacher_is_one_line_naming_its_key(tmp_path, capsys, entry, text):
    """Before, a mistyped key was accepted (and the run then died in a traceback for the key it lacked)."""
    assert main([*BASE, f"output_dir={tmp_path / 'out'}", f"teacher.extra=[{entry}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pathdistill-train: error: ") and text in err, err
