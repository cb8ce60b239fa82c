"""Bad inputs to ``pathdistill eval``, ``tiles`` and ``qupath``: one clear line and exit code 2 (argument) or 1
(failing run), never a traceback or a silent substitution. Models named ``no-such-model`` prove that the inputs
are checked before any model loads (an unknown model would be the error otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill.cli.main import main


def _argument_error(argv: list[str], capsys, *needles: str) -> None:
    """``argv`` is refused by argparse (exit 2) with a message holding every needle."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert all(n in err for n in needles), err


def _run_error(argv: list[str], capsys, *needles: str) -> str:
    """``argv`` fails (exit 1) with one ``error:`` line holding every needle."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("error: "))
    assert all(n in line for n in needles), err
    return line


def _compare(tiles: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "compare", "--teacher", "no-such-model", "--student", "no-such-model", "--tiles",
            str(tiles), "--device", "cpu", "--out", str(out), *extra]  # fmt: skip


def test_compare_checks_robustness_folders_before_loading_models(tmp_path, histolab_tiles, capsys) -> None:
    argv = _compare(histolab_tiles, tmp_path, "--teacher-robustness", str(tmp_path / "nonexist"))
    _run_error(argv, capsys, "--teacher-robustness", "nonexist", "no summary.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text('{"leaderboard": 1}')
    argv = _compare(histolab_tiles, tmp_path, "--student-robustness", str(tmp_path / "bad"))
    _run_error(argv, capsys, "--student-robustness", "not a summary.json written by")


def test_compare_finds_the_one_summary_below_a_benchmark_folder(tmp_path, histolab_tiles, capsys) -> None:
    """`--teacher-robustness OUT` of `eval offline-benchmark --out OUT` (its summary is OUT/metrics/summary.json)
    or of `eval robustness --metrics-dir M` (M/<n>_tiles/<extractor>/) was refused as "no summary.json there";
    the one summary below is read, and several are listed."""
    summary = '{"summary": {"all": {"cosine_similarity": {"median": 0.8}}}}'
    (tmp_path / "off" / "metrics").mkdir(parents=True)
    (tmp_path / "off" / "metrics" / "summary.json").write_text(summary)
    argv = _compare(histolab_tiles, tmp_path, "--teacher-robustness", str(tmp_path / "off"))
    line = _run_error(argv, capsys, "no-such-model")  # past the robustness check, at the models
    assert "summary.json" not in line
    for extractor in ("a", "b"):
        (tmp_path / "m" / "8139_tiles" / extractor).mkdir(parents=True)
        (tmp_path / "m" / "8139_tiles" / extractor / "summary.json").write_text(summary)
    argv = _compare(histolab_tiles, tmp_path, "--teacher-robustness", str(tmp_path / "m"))
    _run_error(argv, capsys, "no summary.json there", str(Path("8139_tiles") / "a" / "summary.json"), "b")


@pytest.mark.parametrize("n", ["0", "1", "-4"])
def test_compare_max_tiles_below_two_is_an_argument_error(tmp_path, histolab_tiles, capsys, n) -> None:
    _argument_error(_compare(histolab_tiles, tmp_path, "--max-tiles", n), capsys, "--max-tiles", ">= 2")


def test_probe_csv_with_a_missing_tile_names_its_line(tmp_path, histolab_tiles, capsys) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(f"path,label\n{histolab_tiles / 'no-tissue.png'},bg\nmissing.png,tissue\n")
    argv = ["eval", "probe", "--tiles", str(csv), "--model", "no-such-model", "--out", str(tmp_path)]
    _run_error(argv, capsys, "t.csv, line 3", "tile image not found", "missing.png")


@pytest.mark.parametrize("flag,value", [("--knn-k", "0"), ("--n-splits", "1"), ("--batch-size", "0")])
def test_probe_bad_numbers_are_argument_errors(tmp_path, histolab_tiles, capsys, flag, value) -> None:
    argv = ["eval", "probe", "--tiles", str(histolab_tiles), "--model", "no-such-model", flag, value]
    _argument_error(argv, capsys, flag)


def test_robustness_tile_subset_is_checked(tmp_path, capsys) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("slide,stain,scanner,path\n")
    argv = ["eval", "robustness", "--manifest", str(manifest), "--out", str(tmp_path), "--tile-subset"]
    _run_error([*argv, str(tmp_path / "nope.npy")], capsys, "tile subset not found", "nope.npy")
    (tmp_path / "text.npy").write_text("1 2 3")
    _run_error([*argv, str(tmp_path / "text.npy")], capsys, "is not a .npy file")
    np.save(tmp_path / "neg.npy", np.array([3, -1]))
    _run_error([*argv, str(tmp_path / "neg.npy")], capsys, "negative indices")
    _argument_error([*argv[:-1], "--top-k", "0 5"], capsys, "top-k values must be >= 1")


@pytest.mark.parametrize(
    "flag,value,needle",
    [("--max-size", "0", ">= 1"), ("--mpp", "0", "> 0"), ("--mpp", "-0.5", "> 0"), ("--tile-px", "0", ">= 1"),
     ("--min-tissue", "1.5", "[0, 1]"), ("--save-tiles", "-1", ">= 0")],
)  # fmt: skip
def test_tiles_bad_numbers_are_argument_errors(tmp_path, cmu_svs, capsys, flag, value, needle) -> None:
    _argument_error(["tiles", str(cmu_svs), "--out", str(tmp_path / "o"), flag, value], capsys, flag, needle)
    assert not (tmp_path / "o").exists()


def test_tiles_on_a_slide_without_mpp_says_mpp_could_not_apply(tmp_path, tcga_svs, capsys) -> None:
    assert (
        main(["tiles", str(tcga_svs), "--out", str(tmp_path / "o"), "--max-size", "512", "--mpp", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "tiles of 224 px at level-0 px" in out
    assert "the slide states no MPP, so --mpp 1 could not apply" in out and "--mpp-override" in out


def test_robustness_manifest_with_a_nan_feature_names_the_file(tmp_path, capsys) -> None:
    """One NaN value used to raise a pair's top-1 silently and print ``leaderboard: nan = mean of ...``."""
    import h5py

    rng = np.random.default_rng(0)
    base, rows = rng.normal(size=(20, 8)), ["slide,stain,scanner,path"]
    for stain, scanner in (("HE", "A"), ("HE", "B"), ("IHC", "A"), ("IHC", "B")):
        feats = (base + 0.5 * rng.normal(size=base.shape)).astype(np.float32)
        if (stain, scanner) == ("IHC", "B"):
            feats[3, 0] = np.nan
        with h5py.File(tmp_path / f"{stain}_{scanner}.h5", "w") as f:
            f["features"], f["coords"] = feats, np.c_[np.arange(20) * 224, np.zeros(20)]
        rows.append(f"{stain}_{scanner},{stain},{scanner},{stain}_{scanner}.h5")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    argv = ["eval", "robustness", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"),
            "--device", "cpu"]  # fmt: skip
    line = _run_error(argv, capsys, "'IHC_B'", "IHC_B.h5", "1 of 20 tiles have non-finite")
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "o" / "summary.json").exists(), line


def test_embed_checks_a_read_only_out_before_loading_the_model(
    tmp_path, cmu_svs, capsys, monkeypatch
) -> None:
    """Was: the model loaded (a minute for H-optimus-0) before the first slide found the folder read-only."""
    import errno
    import os

    from napari_pathdistill import atomic  # folder_problem

    real_open = os.open

    def read_only(path, flags, *args):  # as a read-only mount (tests may run as root, whom modes do not stop)
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(atomic.os, "open", read_only)
    argv = ["embed", str(cmu_svs), "--model", "no-such-model", "--out", str(tmp_path), "--device", "cpu"]
    _argument_error(argv, capsys, "--out", str(tmp_path), "Read-only file system")
    a_file = tmp_path / "features.h5"
    a_file.write_bytes(b"")
    argv[argv.index(str(tmp_path))] = str(a_file)
    _argument_error(argv, capsys, "--out", "cannot write into", str(a_file))


def test_embed_into_a_read_only_out_holding_every_output_is_no_error(tmp_path, cmu_svs, monkeypatch) -> None:
    """Complete outputs are kept read-only (skipped): the early check lets the run go on to say so."""
    import os

    from napari_pathdistill.cli import embed as cli_embed

    (tmp_path / "CMU-1-Small-Region.h5").write_bytes(b"")
    monkeypatch.setattr(os, "open", None)  # any write probe would fail
    import argparse

    args = argparse.Namespace(slides=[str(cmu_svs)], out=str(tmp_path), overwrite=False, scheduler=None)
    assert cli_embed._out_message(args) is None
    args.overwrite = True  # replacing them needs a writable folder
    with pytest.raises(TypeError):
        cli_embed._out_message(args)


def test_probe_on_a_flat_folder_without_labels_says_how_to_label_before_the_model_loads(
    tmp_path, shared_data, capsys
) -> None:
    """Unlabelled tiles in a flat folder were all labelled 'tissue' (histolab names): after embedding every tile,
    'classification probes need at least two classes'. Now refused first (the model is never loaded)."""
    for name in ("source_image.png", "norm_macenko.png", "norm_reinhard.png"):
        (tmp_path / name).write_bytes((shared_data / "stain_norm" / "tiatoolbox" / name).read_bytes())
    argv = ["eval", "probe", "--tiles", str(tmp_path), "--model", "no-such-model", "--out", str(tmp_path)]
    _run_error(
        argv,
        capsys,
        "has no class sub-folders",
        "all 3 tiles are 'tissue'",
        "one sub-folder of tiles per class",
    )
