"""Plot a pathdistill-train run's metrics.csv: the loss terms per step and the images/s.

Usage: ``python scripts/plot_metrics.py outputs/student_v6/metrics.csv out.png --title "student v6"``.
Loss columns that are empty in the run (e.g. ``dino`` in a feature-loss run) are left out.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TERMS = ("loss", "dino", "ibot", "feat_cls", "feat_patch", "feat_spread", "relational", "cka")


def read_metrics(path: Path) -> dict[str, list[float]]:
    """Columns of a metrics.csv as float lists (an empty cell becomes NaN)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return {k: [float(r[k]) if r[k] not in ("", None) else float("nan") for r in rows] for k in rows[0]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    m = read_metrics(args.metrics)
    fig, (ax_loss, ax_speed) = plt.subplots(1, 2, figsize=(9, 3))
    for term in TERMS:
        if term in m and any(v == v for v in m[term]):
            ax_loss.plot(m["step"], m[term], lw=1, label=term)
    ax_loss.set(xlabel="step", ylabel="loss", title=args.title)
    ax_loss.legend(fontsize=8)
    ax_speed.plot(m["step"], m["images_per_s"], lw=1)
    ax_speed.set(xlabel="step", ylabel="images/s")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
