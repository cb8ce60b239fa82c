"""Where the tests find the real data: ``../shared/data`` beside the repository, or the folder named by
``$PATHDISTILL_SHARED_DATA`` (a plain helper module: the ``shared_data`` fixtures and module-level paths share it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PATHDISTILL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
