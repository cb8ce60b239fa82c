"""Where the benchmarks find the real data: ``../shared/data`` beside the repository, or the folder named by
``$PATHDISTILL_SHARED_DATA`` (the override the tests honour too, tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PATHDISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CMU = DATA / "wsi" / "CMU-1-Small-Region.svs"
