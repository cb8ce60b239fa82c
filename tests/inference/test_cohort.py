"""Cohorts on real dask.distributed clusters (worker processes) and the serial CLI path, on the two real slides.

Outputs of the cluster paths must equal the in-process ``embed_slide`` outputs bit for bit; a bad slide fails
alone, named, with the reader's message, and the exit code says so.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.inference.cohort import CohortOptions, embed_one, iter_cohort
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

distributed = pytest.importorskip("distributed")

# 56 px tiles at 1 um/px, every grid tile (no tissue detection, to stay fast): 494 tiles on
# CMU-1-Small-Region (its own 0.499 um/px), 285 on the TCGA slide (no MPP in its metadata: the 0.25 um/px
# fallback of --mpp-override)
TILES = {"mpp": 1.0, "fallback_mpp": 0.25, "min_tissue": 0.0, "batch_size": 16}
CLI_TILES = [
    "--mpp",
    "1",
    "--mpp-override",
    "0.25",
    "--min-tissue",
    "0",
    "--batch-size",
    "16",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny ViT written in the training package's checkpoint format."""
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def serial(ckpt, cmu_svs, tcga_svs, tmp_path_factory):
    """The in-process reference: embed_slide on each slide."""
    out, model = tmp_path_factory.mktemp("serial"), load_model(str(ckpt), device="cpu")
    return {s.stem: embed_slide(s, model, out, **TILES) for s in (cmu_svs, tcga_svs)}


def _assert_same(serial: dict, out_dir) -> None:
    for stem, ref in serial.items():
        with h5py.File(ref) as a, h5py.File(out_dir / f"{stem}.h5") as b:
            assert len(a["coords"]) > 100
            np.testing.assert_array_equal(a["features"][()], b["features"][()])
            np.testing.assert_array_equal(a["coords"][()], b["coords"][()])
            assert {k: a.attrs[k] for k in a.attrs} == {k: b.attrs[k] for k in b.attrs}


def test_cli_local_cluster_equals_serial_and_a_bad_slide_fails_alone(
    ckpt, serial, cmu_svs, tcga_svs, tmp_path, capsys
):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide at all")
    out = tmp_path / "out"
    slides = [str(cmu_svs), str(broken), str(tcga_svs)]
    rc = main(["embed", *slides, "--model", str(ckpt), "--out", str(out), *CLI_TILES, "--workers", "2",
               "--format", "h5,plism"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "dask: 2 workers" in err
    assert f"FAILED {broken}: broken.svs is not a whole-slide image" in err
    assert f"1 of 3 slides failed: {broken}" in err
    _assert_same(serial, out)
    assert len(list(out.glob("tiny-vit/*/features.npy"))) == 2 and not list(out.glob("broken*"))


def test_scheduler_address_with_gpu_pinned_workers(ckpt, serial, cmu_svs, tcga_svs, tmp_path):
    """PinnedGPUCluster on a CPU machine: each worker sees its own CUDA_VISIBLE_DEVICES and GPU=1 resource;
    the slide tasks (device auto -> CPU here) go through --scheduler."""
    from napari_pathdistill.inference._gpu_cluster import PinnedGPUCluster

    with PinnedGPUCluster(["0", "1"]) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        assert sorted(client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"]).values()) == ["0", "1"]
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted((w["name"], w["resources"]["GPU"], w["nthreads"]) for w in workers) == [
            ("gpu-0", 1, 1), ("gpu-1", 1, 1)
        ]  # fmt: skip
        out = tmp_path / "out"
        rc = main(["embed", str(cmu_svs), str(tcga_svs), "--model", str(ckpt), "--out", str(out), *CLI_TILES,
                   "--scheduler", cluster.scheduler_address])  # fmt: skip
        assert rc == 0
        _assert_same(serial, out)

        opts = CohortOptions("no-such-model", str(tmp_path / "bad"))
        outcomes = list(iter_cohort([cmu_svs, tcga_svs], opts, client))
    assert {o.slide for o in outcomes} == {str(cmu_svs), str(tcga_svs)}
    assert all(not o.ok and "Unknown model 'no-such-model'" in o.error for o in outcomes)
    assert {o.worker for o in outcomes} <= {"gpu-0", "gpu-1"}


def test_serial_cli_reports_each_failed_slide_and_goes_on(ckpt, serial, cmu_svs, tmp_path, capsys):
    missing = tmp_path / "nowhere.svs"
    out = tmp_path / "out"
    rc = main(["embed", str(missing), str(cmu_svs), "--model", str(ckpt), "--out", str(out), *CLI_TILES])
    captured = capsys.readouterr()
    assert rc == 1 and f"FAILED {missing}: {missing} does not exist" in captured.err
    assert str(out / "CMU-1-Small-Region.h5") in captured.out
    _assert_same({"CMU-1-Small-Region": serial["CMU-1-Small-Region"]}, out)


def test_embed_one_turns_errors_into_outcomes(tmp_path):
    outcome = embed_one(tmp_path / "x.svs", tiny_model(), CohortOptions("tiny", str(tmp_path)))
    assert not outcome.ok and outcome.slide.endswith("x.svs") and "does not exist" in outcome.error
    assert main(["embed", "a.svs", "--model", "no-such-model", "--out", str(tmp_path)]) == 2
