"""Does a feature file fit the slide it is shown on? Pure core.

A feature file dropped on napari is placed on a slide it names (ours: ``slide_path``) or on an open slide of its
file name (CLAM, TRIDENT: ``<slide_id>.h5``). A file of another slide of that name, or of another scan of it (a 40x
scan's file over the 20x one), then lands on the wrong tissue or off the slide without a word. The file says
enough to notice: its tiles' level-0 positions, TRIDENT's ``level0_width`` / ``level0_height`` and
``level0_magnification`` (coords attrs, ``trident/IO.coords_to_h5``), our level-0 um/px.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_pathdistill.inference.feature_files import FeatureFile

#: TRIDENT's level-0 magnification of a slide of level-0 um/px below each bound (``WSI._fetch_magnification``)
TRIDENT_MAGNIFICATIONS = ((0.16, 80), (0.2, 60), (0.3, 40), (0.6, 20), (1.2, 10), (2.4, 5))

#: our level-0 um/px and the slide's may differ by this fraction (rounding of tile sides), no more
MPP_TOLERANCE = 0.02


def trident_magnification(mpp: float) -> int | None:
    """The magnification TRIDENT gives a slide of level-0 um/px ``mpp`` (None past 2.4 um/px, where it raises)."""
    return next((mag for bound, mag in TRIDENT_MAGNIFICATIONS if mpp < bound), None)


def slide_mismatch(ff: FeatureFile, name: str, size: tuple[int, int], mpp: float | None) -> str | None:
    """Why feature file ``ff`` is not of the slide ``name`` of level-0 ``size`` (width, height) and um/px ``mpp``
    (None: the slide states none), or None when nothing says so.

    Checked: tiles whose top-left lies past the slide's right or bottom edge (tiles may overhang the edge, as
    CLAM's padded ones do, but not start past it), TRIDENT's stated level-0 size and magnification, and our
    level-0 um/px.
    """
    width, height = size
    found = []
    if ff.level0_size is not None and tuple(ff.level0_size) != (width, height):
        found.append(f"it was made from a slide of {ff.level0_size[0]} x {ff.level0_size[1]} level-0 px")
    if mpp is not None and ff.mpp is not None:
        if ff.source == "trident":
            stated, slide_mag = round(10.0 / ff.mpp), trident_magnification(mpp)
            if slide_mag is not None and stated != slide_mag:
                found.append(
                    f"it was made at level-0 magnification {stated}x, where this slide is {slide_mag}x"
                )
        elif abs(ff.mpp / mpp - 1.0) > MPP_TOLERANCE:
            found.append(f"its tiles were cut from a slide of {ff.mpp:.4g} um/px")
    outside = (ff.coords[:, 0] >= width) | (ff.coords[:, 1] >= height)
    if outside.any():
        reach = ff.coords.max(axis=0) + ff.patch_size_level0
        found.append(
            f"{int(outside.sum())} of its {len(ff.coords)} tiles lie past the slide's edge (they reach "
            f"{int(reach[0])} x {int(reach[1])} level-0 px)"
        )
    if not found:
        return None
    slide_mpp = f", {mpp:.4g} um/px" if mpp is not None else ""
    return (
        f"{ff.path.name} does not match {name} ({width} x {height} level-0 px{slide_mpp}): "
        + "; ".join(found)
        + ". It is of another slide, or of another scan of this one: its map is shown but does not lie on this "
        "slide's tissue. Open the slide it was made from."
    )
