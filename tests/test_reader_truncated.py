"""A pyramid cut short so that only a level too large to display is intact: the reader says it is truncated,
not that it is 'an image without a pyramid' to convert with vips."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill._reader import read_slide
from napari_pathdistill.errors import TruncatedFileWarning, WSIError


def _sparse_pyramid(path: Path, side: int) -> int:
    """A 2-level tiled TIFF (level 1 in a SubIFD) of mostly sparse tiles; returns the offset of level 1's IFD."""
    tile = np.full((512, 512, 3), 230, np.uint8)
    kw = {"dtype": np.uint8, "tile": (512, 512), "photometric": "rgb"}
    n = -(-side // 512)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write((tile if i == 0 else None for i in range(n * n)), shape=(side, side, 3), subifds=1,
                 resolution=(4e4, 4e4), resolutionunit="CENTIMETER", **kw)  # fmt: skip
        m = -(-side // 4 // 512)
        tw.write((tile if i == 0 else None for i in range(m * m)), shape=(side // 4, side // 4, 3),
                 subfiletype=1, **kw)  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        return int(tif.pages[0].subifds[0])


def test_a_truncated_pyramid_left_with_a_huge_level_says_it_is_truncated(tmp_path: Path) -> None:
    """A 12k pyramid cut inside its reduced level's directory: the 40k-px slides of a cut copy all ended so.
    Before, the reader warned 'truncated ... Opened with the 1 intact level(s)' and then refused the slide as
    'a 12000x12000 image without a pyramid ... Convert it to a pyramidal TIFF first': the wrong cure."""
    full = tmp_path / "full.tif"
    cut_at = _sparse_pyramid(full, 12_000)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: cut_at + 30])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedFileWarning)
        with pytest.raises(WSIError) as info:
            read_slide(str(cut))
    msg = str(info.value)
    assert msg.startswith("cut.tif is truncated (the file ends at byte ")
    assert "its intact level(s): 12000x12000 px" in msg and "copy the file again" in msg
    assert "without a pyramid" not in msg and "vips" not in msg
    with warnings.catch_warnings():  # the intact file still opens
        warnings.simplefilter("error", TruncatedFileWarning)
        layers = read_slide(str(full))
    assert [lv.shape[:2] for lv in layers[0][0]] == [(12_000, 12_000), (3_000, 3_000)]


def test_a_truncated_flat_image_is_still_called_an_image_without_a_pyramid(tmp_path: Path) -> None:
    """A 12k single-level TIFF that lost only the end of its last tile never had smaller levels: before, the
    reader said 'Its smaller levels are lost: copy the file again', a cure that gives back the same unviewable
    image; the cure is still a pyramidal TIFF (vips), and the warning says the last tiles are grey."""
    side, tile = 12_000, np.full((512, 512, 3), 200, np.uint8)
    n = -(-side // 512)
    full = tmp_path / "flat.tif"
    with tifffile.TiffWriter(full, bigtiff=True) as tw:
        tw.write((tile if i in (0, n * n - 1) else None for i in range(n * n)), shape=(side, side, 3),
                 dtype=np.uint8, tile=(512, 512), photometric="rgb", resolution=(4e4, 4e4),
                 resolutionunit="CENTIMETER")  # fmt: skip
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[:-1000])  # inside the last tile's data
    with pytest.warns(TruncatedFileWarning, match="lost the last tiles"), pytest.raises(WSIError) as info:
        read_slide(str(cut))
    msg = str(info.value)
    assert "cut.tif is a 12000x12000 image without a pyramid" in msg and "vips" in msg
    assert "smaller levels are lost" not in msg
