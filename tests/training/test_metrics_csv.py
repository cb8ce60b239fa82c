"""metrics.csv: every LOG_KEYS column is written (data_wait_frac included); a file from before a column was
added keeps its rows on resume."""

from __future__ import annotations

import csv

from pathdistill_train.train.metric_logger import LOG_KEYS, MetricLogger, truncate_csv


def test_logged_rows_carry_data_wait_frac(tmp_path) -> None:
    logger = MetricLogger(tmp_path, enabled=True, tensorboard=False)
    logger.log({"step": 0, "loss": 1.0, "images_per_s": 3.0, "data_wait_frac": 0.25})
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows[0]["data_wait_frac"] == "0.25" and list(rows[0]) == list(LOG_KEYS)


def test_resume_keeps_rows_of_a_file_without_the_new_column(tmp_path) -> None:
    old = [k for k in LOG_KEYS if k != "data_wait_frac"]
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old)
        w.writeheader()
        w.writerows({"step": s, "loss": 2.0 - s / 10} for s in range(5))
        f.write("5,1.4")  # a row cut short by a kill
    truncate_csv(path, 3)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and list(rows[0]) == list(LOG_KEYS)
    assert all(r["data_wait_frac"] == "" for r in rows)
