"""The command line's tqdm bars into a log file (a batch job's stderr): a few lines, not one per tile."""

from __future__ import annotations

from napari_pathdistill.cli._bars import advance, progress_bar


def test_a_tiles_bar_into_a_file_draws_a_few_times_not_once_per_tick(capsys) -> None:
    with progress_bar(desc="slide.svs", unit="tile", leave=False) as bar:
        for done in range(1, 20_001, 32):  # `pathdistill embed`'s tick: one per batch of 32 tiles
            advance(bar, done, 20_000)
    err = capsys.readouterr().err
    assert 1 <= err.count("\r") <= 6, err.count("\r")


def test_stage_and_total_changes_are_shown_at_the_next_draw(capsys) -> None:
    with progress_bar(desc="eval", unit="step") as bar:
        advance(bar, 5, 10, "embedding")
        advance(bar, 0, None, "robustness")  # a new stage restarts the count, total unknown
        advance(bar, 3, 205, "robustness")
    last = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert "3/205" in last and "robustness" in last
