"""Read per-slide tile features: our HDF5 files and plismbench's ``features.npy`` layout.

* HDF5 (written by ``inference.embed_slide``): datasets ``features`` (N, D) and ``coords`` (N, 2) (x, y) in
  level-0 px.
* plismbench: ``<features_dir>/<extractor>/<stain>_<scanner>_to_GMH_S60.tif/features.npy``, an (N, 3 + D)
  array whose first three columns are the tile coordinates (identical across slides, since PLISM slides are
  registered) and the rest the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.manifest import SlideEntry

PLISM_SUFFIX = "_to_GMH_S60.tif"


def load_features(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one slide's features.

    Args:
        path: ``.h5``/``.hdf5`` (our format) or ``.npy`` (plismbench layout).

    Returns:
        ``(features, coords)``: (N, D) float32 and (N, C) coordinates (C = 2 for HDF5, 3 for plismbench), N >= 1.

    Raises:
        EvaluationError: no such file, an unreadable or unsupported one, or one without tiles (0 rows: a
            robustness pair said the two slides "share fewer than 2 tile coordinates; are they registered?").
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"features file not found: {path}")
    if path.suffix == ".npy":
        feats, coords = _load_npy(path)
    elif path.suffix in (".h5", ".hdf5"):
        feats, coords = _load_h5(path)
    else:
        raise EvaluationError(f"{path}: unsupported features file (use .h5 with features/coords, or .npy)")
    if not len(feats):
        raise EvaluationError(f"{path}: holds no tiles (0 feature rows); embed that slide again")
    return feats, coords


def _load_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arr = _read_npy(path)
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise EvaluationError(f"{path}: expected plismbench (N, 3 + D) features.npy, got shape {arr.shape}")
    _check_plism_coords(arr, path)
    return arr[:, 3:].astype(np.float32), arr[:, :3]


def _read_npy(path: Path, mmap_mode: Literal["r"] | None = None) -> np.ndarray:
    """``np.load`` of a features ``.npy``; a file that is none (truncated, a pickle, text) is an EvaluationError
    naming it, where numpy's ValueError ('This file contains pickled (object) data ...') named no file."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        why = str(err).split(". ")[0]  # numpy's pickle advice ("If you trust the file ...") does not apply
        raise EvaluationError(
            f"{path}: not a readable .npy file ({why}); extract its features again"
        ) from None


def npy_rows(path: str | Path) -> int:
    """Rows (tiles) of a features ``.npy``, read from its header. Raises EvaluationError as :func:`load_features`."""
    return int(_read_npy(Path(path), mmap_mode="r").shape[0])


def _check_plism_coords(arr: np.ndarray, path: Path) -> None:
    """plismbench's (N, 3 + D) layout starts with three integer columns (the tile id, or ``embed``'s level, x, y).

    Raises:
        EvaluationError: they are not integers: a plain (N, D) feature matrix, whose first three features would
            otherwise be taken for coordinates and dropped without a word.
    """
    head = arr[:, :3]
    if not np.array_equal(head, np.rint(head)):
        raise EvaluationError(
            f"{path}: a .npy of features is read in plismbench's (N, 3 + D) layout, but its first 3 columns are "
            f"not integer tile coordinates (shape {arr.shape}: a plain (N, D) feature matrix?); put the tile "
            "coordinates first (level, x, y), or give an HDF5 with 'features' and 'coords' datasets"
        )


def _load_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    from napari_pathdistill.inference.h5_rows import read_rows

    try:
        with h5py.File(path, "r") as f:
            if "features" not in f or "coords" not in f:
                raise EvaluationError(
                    f"{path}: HDF5 needs datasets 'features' and 'coords' (found {list(f)})"
                )
            feats, coords = read_rows(f["features"]), read_rows(f["coords"])  # CLAM/TRIDENT: row chunks
    except OSError as err:
        raise EvaluationError(f"{path}: not a readable HDF5 file ({err}); re-run the embedding") from err
    if feats.ndim != 2 or len(feats) != len(coords):
        raise EvaluationError(f"{path}: features {feats.shape} and coords {coords.shape} do not match")
    return feats.astype(np.float32), coords


def tile_grid(path: str | Path) -> tuple[np.ndarray, float] | None:
    """A feature HDF5's tiles as grid cells, for scans of one glass at different um/px: ``(cells, cell_um)``,
    (N, 2) int64 (column, row) of each row's tile on the lattice fitted to its level-0 coords
    (``inference.lattice.fit_lattice``) and the cell's side in um; None when the file does not state its
    tiles' um (our attrs ``tile_px``, ``mpp`` and ``patch_size_level0``; CLAM and TRIDENT files do not).

    ``pathdistill embed`` cuts tiles of one um size on a lattice from the slide's origin, so two registered scans
    (same origin in um) at 0.227 and 0.346 um/px give a tile the same cell, while its level-0 coords differ.
    """
    import h5py

    from napari_pathdistill.inference.lattice import fit_lattice, grid_step

    with h5py.File(path, "r") as f:
        attrs = {k: float(f.attrs.get(k, np.nan)) for k in ("tile_px", "mpp", "patch_size_level0")}
        coords = np.asarray(f["coords"][()], np.float64) if "coords" in f else None
    size = attrs["patch_size_level0"]
    if coords is None or len(coords) == 0 or not all(np.isfinite(v) and v > 0 for v in attrs.values()):
        return None
    step, origin = fit_lattice(coords, min(grid_step(coords) or size, size))
    cells = np.rint((coords - np.asarray(origin)) / step).astype(np.int64)
    return cells, step * attrs["tile_px"] * attrs["mpp"] / size


def match_by_coords(coords_a: np.ndarray, coords_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` of the tiles whose coordinates are equal in both slides, sorted by coordinate.

    Args:
        coords_a: (Na, C) coordinates of slide a.
        coords_b: (Nb, C) coordinates of slide b, in the same (registered) frame.
    """
    a = np.ascontiguousarray(coords_a).view([("", coords_a.dtype)] * coords_a.shape[1]).ravel()
    b = np.ascontiguousarray(coords_b.astype(coords_a.dtype)).view([("", coords_a.dtype)] * coords_a.shape[1])
    _, ia, ib = np.intersect1d(a, b.ravel(), return_indices=True)
    return ia, ib


def discover_plism(features_dir: str | Path) -> list[SlideEntry]:
    """Slides of a plismbench feature export (``<dir>/<stain>_<scanner>_to_GMH_S60.tif/features.npy``)."""
    root = Path(features_dir)
    entries = []
    for fp in sorted(root.glob(f"*{PLISM_SUFFIX}/features.npy")):
        name = fp.parent.name
        stain, scanner = name.split("_")[:2]
        entries.append(SlideEntry(name, stain, scanner, fp))
    if not entries:
        raise EvaluationError(
            f"no plismbench features under {root} (expected <stain>_<scanner>{PLISM_SUFFIX}/features.npy; "
            "run `pathdistill eval plism-extract` or `plismbench extract` first, or use a manifest CSV)"
        )
    return entries


def load_tile_subset(path: str | Path | None) -> np.ndarray | None:
    """Optional tile subset (e.g. plismbench's ``assets/tiles_subset_8139.npy``): (n,) int indices."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise EvaluationError(f"tile subset not found: {path} (give a .npy file of tile indices)")
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise EvaluationError(f"{path} is not a .npy file (np.save of an integer array of tile indices)")
    try:
        idx = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as err:  # truncated, or a pickled object array (never unpickled)
        raise EvaluationError(f"{path}: not a readable integer .npy array of tile indices ({err})") from None
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise EvaluationError(f"{path}: tile subset must be a 1-D integer array")
    if len(idx) and idx.min() < 0:
        raise EvaluationError(f"{path}: tile subset holds negative indices (min {idx.min()})")
    return idx


def embedding_of(path: str | Path) -> tuple[str | None, int | None]:
    """Which embedding a features file holds, read without loading it: ``(model, D)``.

    ``model`` is ``"<name> (weights <hash>)"`` from the attributes ``pathdistill embed`` writes (``model``,
    ``weights``), None for files without them (plismbench ``.npy``, CLAM/TRIDENT HDF5); ``D`` is the feature
    width, None when the file cannot be read (the loader reports that later, naming it).
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return None, (shape[1] - 3 if len(shape) == 2 else None)
        import h5py

        with h5py.File(path, "r") as f:
            width = f["features"].shape[-1] if "features" in f else None
            name = f.attrs.get("model")
            model = None if name is None else f"{name} (weights {f.attrs.get('weights', '?')})"
            return model, (int(width) if width is not None else None)
    except (OSError, ValueError):
        return None, None


def check_one_embedding(entries: Sequence[SlideEntry]) -> None:
    """Refuse missing features files, and slides whose features come from different models, before any pair is
    scored.

    The PLISM metrics compare one model's features of the same tissue across slides; features of two models
    (a folder re-embedded in part with a new checkpoint, a manifest line pointing at another model's folder)
    give cross-model cosines that read as a robustness failure when both have the same width, and a shape
    error naming neither slide otherwise.

    Raises:
        EvaluationError: a slide without a features file (all of them named, up to 5), two feature widths, or
            two models named in the files' attributes.
    """
    missing = [e for e in entries if e.path is None or not Path(e.path).is_file()]
    if missing:  # at its first pair this stopped the run, maybe hours in, naming only that slide
        named = "; ".join(f"{e.slide!r}: {e.path or 'no path'}" for e in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise EvaluationError(
            f"features file not found for {len(missing)} of {len(entries)} slides ({named}{more}); "
            "fix the paths (relative ones are read from the manifest's folder) or embed those slides first"
        )
    found = {e.slide: embedding_of(e.path) for e in entries if e.path is not None}
    for what, index in (("feature widths", 1), ("models", 0)):
        groups: dict[object, list[str]] = {}
        for slide, emb in found.items():
            if emb[index] is not None:
                groups.setdefault(emb[index], []).append(slide)
        if len(groups) > 1:
            parts = "; ".join(
                f"{'D=' if index else ''}{key}: {len(s)} slide(s), e.g. {s[0]!r}" for key, s in groups.items()
            )
            raise EvaluationError(
                f"the slides' features come from different {what} ({parts}); robustness compares one model's "
                "features across slides: embed every slide with the same model"
            )
