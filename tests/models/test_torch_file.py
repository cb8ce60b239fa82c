"""torch.load never checks the CRC-32s torch.save writes: a flipped bit in a weights file or a training
checkpoint loaded silently as a wrong tensor. ``models.torch_file.load_checked`` refuses it, naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models._hub import save_for_hf

from _torch_zip_files import flip_bit_in_largest_entry
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.spec import build_module
from napari_pathdistill.models.testing import tiny_spec
from napari_pathdistill.models.torch_file import DamagedTorchFile, damaged_entry, load_checked


def test_torch_load_alone_loads_a_flipped_bit_and_load_checked_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / "state.pth"
    torch.save({"w": torch.arange(4096, dtype=torch.float32)}, path)
    assert damaged_entry(path) is None and torch.equal(load_checked(path)["w"], torch.arange(4096.0))
    entry = flip_bit_in_largest_entry(path)
    assert not torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4096.0))  # silently wrong
    assert damaged_entry(path) == entry
    with pytest.raises(DamagedTorchFile, match=f"entry {entry} fails its CRC-32"):
        load_checked(path)


def test_a_file_saved_without_crc32s_loads(tmp_path: Path) -> None:
    """``torch.serialization.set_crc32_options(False)`` (a faster save) writes CRC-32 0 for every entry; torch
    loads such a file. Before, load_checked refused it as damaged ('its entry .../data.pkl fails its CRC-32')."""
    path = tmp_path / "state.pth"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.arange(4096, dtype=torch.float32)}, path)
    finally:
        torch.serialization.set_crc32_options(True)
    assert damaged_entry(path) is None and torch.equal(load_checked(path)["w"], torch.arange(4096.0))


def test_a_truncated_or_legacy_file_is_left_to_torch(tmp_path: Path) -> None:
    path = tmp_path / "state.pth"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    assert damaged_entry(path) is None
    with pytest.raises(RuntimeError):  # torch's own message, as before
        load_checked(path)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert damaged_entry(legacy) is None and torch.equal(load_checked(legacy)["w"], torch.ones(3))


def test_a_damaged_pytorch_model_bin_download_is_a_clear_model_error(tmp_path: Path) -> None:
    folder = tmp_path / "H0-mini"
    save_for_hf(build_module(tiny_spec("h0-mini", tile_px=56)), str(folder),
                model_args={"mlp_layer": "swiglu_packed", "act_layer": "silu"})  # fmt: skip
    flip_bit_in_largest_entry(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin is damaged: .* copy or download it again"):
        load_model(str(folder), device="cpu")
