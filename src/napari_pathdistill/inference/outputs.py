"""Per-slide output bookkeeping of ``embed_slide``: whether an output is complete (its lock: ``output_lock``).

A finished ``<stem>.h5`` whose attrs match the requested embedding and whose rows are all written is
complete: a rerun skips it (TRIDENT-style) unless asked to overwrite. A complete output of another embedding
(other attrs) or of another slide (its ``slide_path``) is never replaced unless asked to overwrite
either: :func:`reusable_rows` raises :class:`OutputMismatchError`, naming what differs. Tiles that could not be
decoded are left out of a finished output: its ``skipped_tiles`` attr counts them and its ``skipped_coords`` dataset
(K, 2) int64 holds their level-0 (x, y); ``done`` counts the rows written, so such an output is complete.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import PathDistillError

#: attrs that must be equal for an existing output to count as the requested embedding
MATCH_ATTRS = ("model", "spec", "weights", "tile_px", "mpp", "min_tissue")
#: attrs written only when they apply (``mpp_override``: the user's level-0 um/px of a slide whose file states
#: none); equal means both absent or both the same, and they enter a cache key only when present (so files
#: written before they existed keep their names and still match)
OPTIONAL_MATCH_ATTRS = ("mpp_override",)
#: the attr holding the resolved path of the slide a file was made from; another path is another slide (files
#: written before it existed have none and match any slide)
SLIDE_ATTR = "slide_path"


class OutputMismatchError(PathDistillError):
    """A complete output exists for another embedding or another slide: kept, unless asked to overwrite it."""


def complete_rows(out: Path, attrs: dict[str, Any]) -> int:
    """The tile count of ``out`` when it is a finished embedding with ``attrs`` (see :data:`MATCH_ATTRS`) of
    the same slide (:data:`SLIDE_ATTR`) and all rows written, else 0 (missing, incomplete, another embedding
    or slide, unreadable: recompute)."""
    n, differ = finished_rows(out, attrs)
    return 0 if differ else n


def reusable_rows(out: Path, attrs: dict[str, Any]) -> int:
    """:func:`complete_rows`, except that a complete ``out`` of another embedding or slide raises (kept).

    Raises:
        OutputMismatchError: ``out`` is complete and differs from ``attrs``; the message names what differs.
    """
    n, differ = finished_rows(out, attrs)
    if n and differ:
        raise OutputMismatchError(mismatch_message(out, differ, attrs))
    return n


def finished_rows(out: Path, attrs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``(N, differing)`` of ``out``: N its tile count when all its rows are written (else 0: missing,
    incomplete, unreadable or not our layout), ``differing`` the stored values of the attrs that differ from
    ``attrs`` (see :func:`differing_attrs`; empty when N is 0)."""
    import h5py

    if not out.is_file():
        return 0, {}
    try:
        with h5py.File(out, "r") as f:
            n = len(f["coords"])
            if not (n > 0 and len(f["features"]) == n and int(f.attrs.get("done", -1)) == n):
                return 0, {}
            return n, {k: f.attrs.get(k) for k in differing_attrs(f.attrs, attrs)}
    except (OSError, KeyError, ValueError):
        return 0, {}  # unreadable or not our layout


def differing_attrs(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The attrs of :data:`MATCH_ATTRS`, :data:`OPTIONAL_MATCH_ATTRS` and :data:`SLIDE_ATTR` in which a file's
    ``stored`` attrs differ from the ``wanted`` ones (empty: the same embedding of the same slide)."""

    def same(key: str) -> bool:  # a spec less its weights location: the `weights` hash names the checkpoint
        if key == "spec":
            return spec_identity(stored.get(key)) == spec_identity(wanted.get(key))
        return _same(stored.get(key), wanted.get(key))

    differ = [k for k in MATCH_ATTRS + OPTIONAL_MATCH_ATTRS if not same(k)]
    return differ + ([] if _same_slide(stored.get(SLIDE_ATTR), wanted.get(SLIDE_ATTR)) else [SLIDE_ATTR])


def spec_identity(spec: Any) -> Any:
    """A ``spec`` attr as outputs are matched and cache files named by it: the parsed JSON object less its
    ``weights`` location (another install or venv, or a worker's mount, puts the same checkpoint elsewhere; the
    ``weights`` attr, a hash of the loaded tensors, tells checkpoints apart). Anything else is returned as is."""
    if isinstance(spec, bytes):
        spec = spec.decode()
    if not isinstance(spec, str) or not spec.startswith("{"):
        return spec
    try:
        parsed = json.loads(spec)
    except ValueError:
        return spec
    if isinstance(parsed, dict):
        parsed.pop("weights", None)
    return parsed


def _same(stored: Any, wanted: Any) -> bool:
    """Attr equality with NaN == NaN (no-MPP slides); bytes decoded."""
    if isinstance(wanted, float) and isinstance(stored, numbers.Real):
        return (math.isnan(wanted) and math.isnan(stored)) or math.isclose(wanted, float(stored))
    if isinstance(stored, bytes):
        stored = stored.decode()
    return stored == wanted


def _same_slide(stored: Any, wanted: Any) -> bool:
    """Whether two slide paths (of the same file name: outputs are named after it) name one slide.

    The same resolved path or file, a copy (two files of the same size), or a stored path that no longer
    exists (the slides were moved, or are mounted elsewhere on this node) count as the same slide; two different
    existing files (e.g. ``a/S.svs`` and ``b/S.svs``) do not. An unknown one (a file written before
    :data:`SLIDE_ATTR` existed) matches."""
    if stored is None or wanted is None:
        return True
    a = Path(stored.decode() if isinstance(stored, bytes) else str(stored))
    b = Path(str(wanted))
    if a.resolve() == b.resolve() or not a.exists():
        return True
    try:
        if os.path.samefile(a, b):
            return True
        return a.is_file() and b.is_file() and a.stat().st_size == b.stat().st_size
    except OSError:
        return False


def mismatch_message(out: Path, differ: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """The user's line for a complete ``out`` whose attrs ``differ`` (their stored values) from ``wanted``."""
    parts = []
    if SLIDE_ATTR in differ:
        parts.append(f"of another slide ({_text(differ[SLIDE_ATTR])}, not {wanted[SLIDE_ATTR]})")
    # another model has another spec and weights too: the model name says it
    hidden = {SLIDE_ATTR, "spec", "weights"} if "model" in differ else {SLIDE_ATTR}
    settings = [_setting(k, v, wanted.get(k)) for k, v in differ.items() if k not in hidden]
    if settings:
        parts.append(f"with other settings ({'; '.join(settings)})")
    return (
        f"{out} is a complete embedding {' and '.join(parts)}: kept, this slide was not embedded. Rerun with "
        "--overwrite (overwrite=True) to replace it, or write to another --out folder to keep both."
    )


def _setting(key: str, stored: Any, wanted: Any) -> str:
    """``"<key> <stored> there, <wanted> requested"`` with readable values."""
    if key == "spec":
        return "spec: the model's config differs"
    return f"{key} {_text(stored)} there, {_text(wanted)} requested"


def _text(value: Any) -> str:
    """An attr value as the user reads it: None -> "none", floats with %g, bytes decoded."""
    if value is None:
        return "none"
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return "none (level-0 px)" if math.isnan(float(value)) else f"{float(value):g}"
    return str(value)


def record_skipped(f: Any, rows: list[int]) -> None:
    """Append grid ``rows`` whose tiles could not be decoded to the ``skipped_rows`` dataset of the open
    partial file ``f`` (h5py.File); created on first use."""
    if not rows:
        return
    if "skipped_rows" not in f:
        f.create_dataset("skipped_rows", shape=(0,), maxshape=(None,), dtype="int64", chunks=(1024,))
    ds = f["skipped_rows"]
    ds.resize((len(ds) + len(rows),))
    ds[-len(rows) :] = rows


def skipped_message(
    n: int, then: str = "their level-0 (x, y) are in the output's skipped_coords dataset"
) -> str:
    """The user's line for ``n`` tiles left out of an output; ``then``: what that leaves (default: an HDF5's)."""
    return f"skipped {n} unreadable tiles (they cannot be decoded: the slide file is corrupt there); {then}"


def skipped_tiles(out: Path) -> int:
    """The ``skipped_tiles`` attr of a finished output (0 when none, or an output written before it existed)."""
    import h5py

    with h5py.File(out, "r") as f:
        return int(f.attrs.get("skipped_tiles", 0))


def finish_output(partial: Path, out: Path) -> int:
    """Turn a fully written ``partial`` into ``out``, leaving out the rows of undecodable tiles.

    Returns:
        The number of tiles left out (their coords go to ``skipped_coords``, their count to ``skipped_tiles``).

    Raises:
        CorruptTileError: no tile at all could be decoded (nothing is written, the partial file is removed).
    """
    import h5py

    from napari_pathdistill.inference.disk_room import METADATA_ROOM, reserve_tail

    with h5py.File(partial, "r+") as f:
        rows = np.unique(f["skipped_rows"][()]) if "skipped_rows" in f else np.zeros(0, np.int64)
        if not len(rows):
            reserve_tail(partial, METADATA_ROOM, int(f.attrs.get("done", 0)))
            f.attrs["skipped_tiles"] = 0
            if "skipped_coords" not in f:
                f.create_dataset("skipped_coords", data=np.zeros((0, 2), np.int64))
    if not len(rows):
        partial.replace(out)
        return 0
    _drop_rows(partial, out, rows)
    return len(rows)


def _drop_rows(partial: Path, out: Path, rows: np.ndarray, step: int = 4096) -> None:
    """Copy ``partial`` to ``out`` without ``rows`` (features copied ``step`` rows at a time), then remove it."""
    import h5py

    from napari_pathdistill.errors import CorruptTileError
    from napari_pathdistill.inference.disk_room import METADATA_ROOM, require_free

    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(partial, "r") as src:
        n, dim = src["features"].shape
        keep = np.ones(n, bool)
        keep[rows] = False
        if not keep.any():
            partial.unlink()
            raise CorruptTileError(f"{out.stem}: none of its {n} tiles can be decoded; nothing written.")
        kept = int(keep.sum())
        require_free(partial, kept * (4 * dim + 8 + 4 + 16) + 16 * len(rows) + METADATA_ROOM, n)
        with h5py.File(tmp, "w") as dst:
            dst.attrs.update(dict(src.attrs))
            dst.create_dataset("coords", data=src["coords"][()][keep]).attrs.update(dict(src["coords"].attrs))
            dst.create_dataset("skipped_coords", data=src["coords"][()][rows])
            if "tissue_fraction" in src:
                dst.create_dataset("tissue_fraction", data=src["tissue_fraction"][()][keep])
            if "map" in src:  # inference.map_summary: computed on the kept rows already
                src.copy("map", dst)
            feats = dst.create_dataset("features", shape=(kept, dim), dtype="float32")
            at = 0
            for s in range(0, n, step):
                block = src["features"][s : s + step][keep[s : s + step]]
                feats[at : at + len(block)] = block
                at += len(block)
            dst.attrs["done"], dst.attrs["skipped_tiles"] = at, len(rows)
    tmp.replace(out)
    partial.unlink()
