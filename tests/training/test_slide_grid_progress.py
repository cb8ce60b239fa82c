"""Progress while the tissue grids of the training slides are made.

Each slide's tissue is found on its thumbnail before the first step (about a second a slide: 2-3 s for the small
slides here); until 2026-12-07 a run over thousands of slides printed nothing for that hour (on every restart).
"""

from __future__ import annotations

from pathdistill_train.data.sources import WSISource
from pathdistill_train.train.train import main


def test_the_slide_source_reports_slides_done(cmu_svs, tcga_svs):
    calls: list[tuple[int, int]] = []
    source = WSISource([cmu_svs, tcga_svs], 70, 2.0, 0.5, 0.25, lambda d, n: calls.append((d, n)), every_s=0)
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert len(source) == sum(e["tiles"] for e in source.describe())
    calls.clear()
    WSISource([cmu_svs, tcga_svs], 70, 2.0, 0.5, 0.25, lambda d, n: calls.append((d, n)))
    assert calls == [(0, 2), (2, 2)]  # 30 s between lines: the first and the last
    WSISource([cmu_svs], 70, 2.0, 0.5, 0.25, lambda d, n: calls.append((d, n)), every_s=0)
    assert calls == [(0, 2), (2, 2)]  # one slide: nothing to count


def test_the_trainer_prints_the_grids_progress(tmp_path, capsys, cmu_svs, tcga_svs):
    args = ["--config", "smoke_cpu", "loss.mode=feature", "train.max_steps=1", f"output_dir={tmp_path}"]
    assert main([*args, f"data.slides=[{cmu_svs},{tcga_svs}]", "data.mpp=2.0", "data.mpp_override=0.25"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "tissue grids" in ln]
    assert lines[0] == "[pathdistill-train] tissue grids: 0/2 slides (0 slides/s)", lines
    assert lines[-1].startswith("[pathdistill-train] tissue grids: 2/2 slides (") and "ETA" not in lines[-1]
