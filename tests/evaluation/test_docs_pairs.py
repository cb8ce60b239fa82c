"""The slide-pair CSVs shipped in docs/pairs point at real files (the shared data beside the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_pathdistill.evaluation.manifest import read_pairs

DOCS_PAIRS = Path(__file__).resolve().parents[2] / "docs" / "pairs"


@pytest.mark.parametrize("name", ["birl_anhir_pairs.csv", "os2_scanner_pair.csv"])
def test_docs_pair_csv_paths_exist(name: str, shared_data: Path) -> None:
    pairs = read_pairs(DOCS_PAIRS / name)
    assert pairs
    for a, b in pairs:
        assert a.is_file() and b.is_file(), (a, b)
        assert shared_data.resolve() in a.resolve().parents  # the shared data, never a copy in the repo


def test_every_csv_in_docs_pairs_is_covered() -> None:
    assert sorted(p.name for p in DOCS_PAIRS.glob("*.csv")) == [
        "birl_anhir_pairs.csv",
        "os2_scanner_pair.csv",
    ]
