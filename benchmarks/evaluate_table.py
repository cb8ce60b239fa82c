"""Benchmark: showing a big report in the Evaluate dock's table (a teacher-vs-student run on N tiles).

Side by side in one run, each in a fresh child process (its own peak RSS): the former fill, one
``QTableWidgetItem`` per cell, against ``_qt.report_table.ReportTable.show_rows`` (a model that formats the cells
Qt paints). Both then paint once. Prints main-thread seconds, the peak RSS increase and their ratios, with the
load average (a shared machine slows both alike). Run under Xvfb from the repository root::

    xvfb-run -a python benchmarks/evaluate_table.py [--rows 10000 50000 100000]

Measured 2026-12-07 (2 shared cores, load 5.9): 100,000 rows 2.66 s / +179 MB with items, 0.18 s / +7 MB with
the model (15x); see docs/widgets.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
from qtpy.QtWidgets import QApplication, QTableWidget, QTableWidgetItem
app = QApplication.instance() or QApplication([])
from napari_pathdistill._qt.report_table import ReportTable, cell_text
kind, n = sys.argv[1], int(sys.argv[2])
rows = [{"tile": f"tile_{i:06d}.png", "label": "tissue", "knn5_overlap": (i % 97) / 97} for i in range(n)]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if kind == "items":  # the former EvaluateWidget._fill_table
    table = QTableWidget()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table.setRowCount(len(rows)); table.setColumnCount(len(keys)); table.setHorizontalHeaderLabels(keys)
    for i, row in enumerate(rows):
        for j, key in enumerate(keys):
            table.setItem(i, j, QTableWidgetItem(cell_text(row.get(key, ""))))
    table.resizeColumnsToContents()
else:
    table = ReportTable()
    table.show_rows(rows)
table.resize(420, 300); table.show(); app.processEvents()
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}))
"""


def _run(kind: str, n: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, kind, str(n)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the {kind} fill of {n} rows failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run both fills per row count; returns one dict per count (rows, items/model seconds and MB, ratio)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'rows':>8} {'items s':>8} {'model s':>8} {'ratio':>6} {'items MB':>9} {'model MB':>9}")
    results = []
    for n in args.rows:
        old, new = _run("items", n), _run("model", n)
        ratio = old["s"] / max(new["s"], 1e-9)
        results.append({"rows": n, "items": old, "model": new, "ratio": ratio})
        print(f"{n:8d} {old['s']:8.2f} {new['s']:8.3f} {ratio:6.1f} {old['mb']:9.0f} {new['mb']:9.0f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return results


if __name__ == "__main__":
    main()
