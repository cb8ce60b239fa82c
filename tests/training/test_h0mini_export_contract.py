"""The H0-mini reproduction config exports what the registry's ``h0-mini`` is: the same architecture, MLP,
normalisation, tile size, um/px and embedding (CLS ++ mean of the patch tokens, 1536-d, as Filiot et al. 2025
evaluate H0-mini), so a trained reproduction is embedded by the viewer as the published model is."""

from __future__ import annotations

from napari_pathdistill.models import get_spec
from napari_pathdistill.models.spec import timm_kwargs
from pathdistill_train.config import load_config
from pathdistill_train.train.export import student_spec

SHAPE = ("mlp_layer", "act_layer", "mlp_ratio", "img_size", "num_classes")


def test_the_h0_mini_reproduction_exports_h0_minis_contract() -> None:
    exported, published = student_spec(load_config("h0mini_from_hoptimus0")), get_spec("h0-mini")
    assert exported.arch == published.arch
    mine, theirs = timm_kwargs(exported.model_kwargs), timm_kwargs(published.model_kwargs)
    assert {k: mine.get(k) for k in SHAPE} == {k: theirs.get(k) for k in SHAPE}
    got = (exported.mean, exported.std, exported.tile_px, exported.mpp, exported.embedding)
    assert got == (published.mean, published.std, published.tile_px, published.mpp, published.embedding)
