"""Models named as on their Hugging Face page.

``bioptimus/H0-mini`` (what its model card shows) and ``hf-hub:bioptimus/H0-mini`` must get the registry's
contract of those weights (H0-mini: CLS ++ mean patch token, 1536-d, H-optimus-0's normalisation), not an unknown
name or a CLS-only 768-d embedding with a default normalisation; offline they fail at once saying where to put
the weights.
"""

from __future__ import annotations

import pytest

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.factory import resolve_spec
from napari_pathdistill.models.spec import HOPT_MEAN, HOPT_STD, IMAGENET_MEAN


@pytest.mark.parametrize(
    ("name", "entry", "embedding", "mean"),
    [("bioptimus/H0-mini", "h0-mini", "cls+mean", HOPT_MEAN), ("hf-hub:bioptimus/H0-mini", "h0-mini", "cls+mean", HOPT_MEAN),
     ("bioptimus/h-optimus-0", "h-optimus-0", "cls", HOPT_MEAN), ("hf-hub:MahmoodLab/UNI", "uni", "cls", IMAGENET_MEAN)],
)  # fmt: skip
def test_a_hub_name_of_registry_weights_gets_the_registry_contract(name, entry, embedding, mean) -> None:
    spec = resolve_spec(name)
    assert (spec.name, spec.embedding, spec.mean, spec.tile_px, spec.mpp) == (
        entry,
        embedding,
        mean,
        224,
        0.5,
    )


def test_h0_mini_by_its_hub_name_embeds_cls_and_mean_patch_1536d() -> None:
    """The architecture built for the hub name (random weights: none can be downloaded here) is H0-mini's."""
    model = load_model("hf-hub:bioptimus/H0-mini", device="cpu", pretrained=False)
    assert model.dim == 1536 and model.num_prefix_tokens == 5 and model.spec.std == HOPT_STD


@pytest.mark.parametrize("name", ["bioptimus/H-optimus-0", "bioptimus/H0-mini"])
def test_a_hub_name_offline_fails_at_once_saying_where_to_put_the_weights(name, monkeypatch, created) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as err:
        load_model(name, device="cpu")
    assert created == []  # no hub download (network retries), no random init of the model (ViT-H/g)
    msg = str(err.value)
    assert f"https://huggingface.co/{name}" in msg and "checkpoint folder" in msg and "HF_HUB_OFFLINE" in msg
