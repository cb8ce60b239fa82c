"""Huge slides without a pyramid are tiled in bounded memory: the thumbnail is built block by block.

A 24,000 px tiled TIFF (OpenSlide; before: one read_region of the whole level, 2.3 GB of RGBA) and a
40,000 x 24,000 striped TIFF (tifffile; before: a 21 GiB float64 resize) run ``pathdistill tiles`` / ``embed`` in a child
process whose peak RSS is measured; a single strip too large to decode is refused with a clear message. The
files are a few MB on disk: sparse tiles, or the same pre-compressed strip written many times.
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.transform import resize

from napari_pathdistill.errors import WSIError
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi._blocks import reduced_level
from napari_pathdistill.wsi.levels import PyramidLevel
from napari_pathdistill.wsi.tiling import tissue_mask_from_rgb

PINK = (200, 100, 150)
MAX_RSS_KB = 1_500_000  # 1.5 GB; the whole-level reads needed 2.3 GB of RGBA + 1.7 GB of RGB (tiled) and 21 GiB (striped)
# the child's peak RSS: VmHWM of its own address space (ru_maxrss would include the pytest process's peak,
# which Linux carries over fork and exec)
_CHILD = (
    "import re, sys\n"
    "from napari_pathdistill.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print('MAXRSS_KB', hwm, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _run_measured(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``pathdistill ARGS`` in a child process; (the process, its peak RSS in KB)."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB")]
    assert lines, proc.stderr
    return proc, int(lines[-1].split()[1])


def write_sparse_tiled(path: Path, side: int, tile: int = 256) -> Path:
    """A single-level side x side tiled TIFF at 0.25 um/px: a pink block of tiles, every other tile empty."""
    n = -(-side // tile)
    block = np.empty((tile, tile, 3), np.uint8)
    block[:] = PINK
    pink = {r * n + c for r in range(10, 40) for c in range(20, 60)}

    def tiles() -> Iterator[np.ndarray | None]:
        for i in range(n * n):
            yield block if (i in pink or i == 0) else None

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile), bigtiff=True,
                     compression="zlib", photometric="rgb", resolution=(4e4, 4e4), resolutionunit="CENTIMETER")  # fmt: skip
    return path


def write_striped(path: Path, width: int, height: int, rows_per_strip: int) -> Path:
    """A width x height striped (untiled) RGB TIFF at 0.25 um/px: white, with a pink band in its upper half.

    Every strip is real zlib data (decoded on read); the same two compressed strips are written many times.
    """
    n = -(-height // rows_per_strip)
    band = range(n // 8, n // 3)
    enc: dict[tuple[bool, int], bytes] = {}

    def strip(in_band: bool, rows: int) -> bytes:
        if (in_band, rows) not in enc:
            a = np.full((rows, width, 3), 255, np.uint8)
            a[:, width // 10 : width // 4] = PINK if in_band else 255
            enc[in_band, rows] = _deflate(a)
        return enc[in_band, rows]

    def strips() -> Iterator[bytes]:
        for i in range(n):
            yield strip(i in band, min(rows_per_strip, height - i * rows_per_strip))

    tifffile.imwrite(path, strips(), shape=(height, width, 3), dtype=np.uint8, rowsperstrip=rows_per_strip,
                     bigtiff=True, compression="zlib", photometric="rgb", resolution=(4e4, 4e4),
                     resolutionunit="CENTIMETER")  # fmt: skip
    return path


def _deflate(a: np.ndarray) -> bytes:
    """zlib of a large array without holding a second copy: fed in 1 MB pieces."""
    z, raw = zlib.compressobj(1), memoryview(np.ascontiguousarray(a)).cast("B")
    return b"".join(z.compress(raw[i : i + 2**20]) for i in range(0, len(raw), 2**20)) + z.flush()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


def test_tiles_of_a_24000px_tiled_tiff_without_pyramid_in_bounded_memory(tmp_path: Path) -> None:
    slide = write_sparse_tiled(tmp_path / "flat.tif", 24_000)
    assert slide.stat().st_size < 5_000_000
    with open_pyramid(slide) as pyr:
        assert pyr.backend == "openslide" and len(pyr.levels) == 1
    proc, rss = _run_measured("tiles", str(slide), "--out", str(tmp_path / "o"), "--tile-px", "256")
    assert proc.returncode == 0, proc.stderr
    assert rss < MAX_RSS_KB, f"peak RSS {rss / 1e6:.2f} GB"
    rows = (tmp_path / "o" / "tiles.csv").read_text().splitlines()[1:]
    xy = np.array([[int(v) for v in r.split(",")[1:3]] for r in rows])
    # the pink block is tiles 20..60 x 10..40 of 256 px: 20 x 15 tiles of 512 level-0 px (256 px at 0.5 um/px)
    assert (
        len(xy) == 300
        and (xy.min(0) == (5120, 2560)).all()
        and (xy.max(0) == (15360 - 512, 10240 - 512)).all()
    )


@pytest.mark.slow
def test_embed_of_the_60000px_tiled_tiff_of_the_issue_in_bounded_memory(tmp_path: Path, ckpt: Path) -> None:
    """The reported case: a 60,000 x 60,000 tiled TIFF without pyramid (8 GB exhausted before); ~1 min."""
    slide = write_sparse_tiled(tmp_path / "flat60k.tif", 60_000)
    proc, rss = _run_measured("embed", str(slide), "--model", str(ckpt), "--out", str(tmp_path / "e"),
                              "--device", "cpu", "--mpp", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert rss < MAX_RSS_KB, f"peak RSS {rss / 1e6:.2f} GB"


def test_tiles_and_embed_of_a_40000x24000_striped_tiff_in_bounded_memory(tmp_path: Path, ckpt: Path) -> None:
    slide = write_striped(tmp_path / "striped.tif", 40_000, 24_000, rows_per_strip=32)
    with open_pyramid(slide) as pyr:
        assert pyr.backend == "tifffile" and pyr.levels[0].tile_shape == (32, 40_000)
    proc, rss = _run_measured("tiles", str(slide), "--out", str(tmp_path / "o"), "--tile-px", "256")
    assert proc.returncode == 0, proc.stderr
    assert rss < MAX_RSS_KB, f"peak RSS {rss / 1e6:.2f} GB"
    n_tiles = len((tmp_path / "o" / "tiles.csv").read_text().splitlines()) - 1
    assert n_tiles > 100
    proc, rss = _run_measured("embed", str(slide), "--model", str(ckpt), "--out", str(tmp_path / "e"),
                              "--device", "cpu", "--mpp", "8")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert rss < MAX_RSS_KB, f"peak RSS {rss / 1e6:.2f} GB"


def test_a_single_huge_strip_is_refused_clearly(tmp_path: Path) -> None:
    slide = write_striped(tmp_path / "onestrip.tif", 40_000, 4_000, rows_per_strip=4_000)  # 480 MB decoded
    proc, rss = _run_measured("tiles", str(slide), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert (
        "onestrip.tif is a 40000x4000 image stored in blocks (strips or tiles) of 40000x4000 px"
        in proc.stderr
    )
    assert "Convert it to a pyramidal TIFF first" in proc.stderr and "Traceback" not in proc.stderr
    assert rss < 600_000  # refused before anything was decoded
    with open_pyramid(slide) as pyr, pytest.raises(WSIError, match=r"0\.4 GiB each once decoded"):
        pyr.read_region((0, 0), 0, (224, 224))


def test_reduced_level_is_the_box_mean_of_the_whole_level() -> None:
    """Block by block (blocks of 96 x 160, tiles of 32 x 40) equals PIL's reduce of the whole image."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1000, 1300, 3), dtype=np.uint8)
    lv = PyramidLevel(shape=(1000, 1300), downsample=1.0, tile_shape=(32, 40))
    calls: list[tuple[int, int]] = []

    def read(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        calls.append((w, h))
        return img[y : y + h, x : x + w]

    for k in (1, 2, 8, 16):
        got, bad = reduced_level(read, 0, lv, k)
        want = np.asarray(Image.fromarray(img).reduce(k)) if k > 1 else img
        assert bad == 0 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert max(w * h for w, h in calls) <= 1 << 22


def test_thumbnail_matches_the_previous_whole_level_resize(cmu_svs: Path) -> None:
    """Within a few grey levels of the old antialiased skimage resize, and the same tissue mask."""
    with open_pyramid(cmu_svs) as pyr:
        full = pyr.read_region((0, 0), 0, pyr.dimensions)
        for max_size in (1024, 400):
            thumb, ds = pyr.thumbnail(max_size)
            old = resize(full, thumb.shape[:2], order=1, anti_aliasing=True, preserve_range=True)
            old = np.clip(np.rint(old), 0, 255).astype(np.uint8)
            assert max(thumb.shape) == max_size and thumb.dtype == np.uint8
            assert ds == pytest.approx(2967 / max_size, rel=0.01)
            diff = np.abs(thumb.astype(int) - old)
            assert diff.mean() < 6 and np.median(diff) <= 3
            new_mask, old_mask = tissue_mask_from_rgb(thumb), tissue_mask_from_rgb(old)
            assert (new_mask & old_mask).sum() / (new_mask | old_mask).sum() > 0.95
