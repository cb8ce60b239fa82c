"""A checkpoint path that does not exist says so, rather than "Unknown model"; an unknown org/name says how to
write a Hugging Face hub id."""

from __future__ import annotations

import pytest

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.factory import resolve_spec


@pytest.mark.parametrize(
    "path", ["./runs/s1/export", "/nonexistent/export", "student.safetensors", "~/runs/x"]
)
def test_a_checkpoint_path_that_does_not_exist_says_so(path) -> None:
    with pytest.raises(ModelLoadError, match=rf"Checkpoint '{path}' does not exist .*known: h-optimus-0"):
        load_model(path, device="cpu")


def test_an_unknown_org_name_points_at_the_hf_hub_prefix() -> None:
    with pytest.raises(ModelLoadError, match=r"no such file or folder.*write hf-hub:someorg/somemodel\."):
        resolve_spec("someorg/somemodel")
