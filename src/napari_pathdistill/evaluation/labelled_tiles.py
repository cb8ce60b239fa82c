"""Labelled tile sets for the probes: folder-per-class, a ``path,label`` CSV, or histolab file-name labels.

histolab naming (../shared/data/tiles/histolab_tiles): files whose name starts with ``no-tissue`` or
``almost-white`` are labelled ``background``, every other tile ``tissue``. It is a weak, tiny label set (34
tiles) meant to exercise the protocol, not to rank models.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.progress import Progress
from napari_pathdistill.wsi.pil_rgb import pil_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def histolab_label(path: Path) -> str:
    """``background`` for no-tissue / almost-white tiles, else ``tissue``."""
    return "background" if path.stem.startswith(("no-tissue", "almost-white")) else "tissue"


def list_labelled_tiles(
    source: str | Path, label_from_name: Callable[[Path], str] | None = None
) -> tuple[list[Path], np.ndarray]:
    """Tile paths and labels.

    Args:
        source: a folder of class sub-folders, a flat folder (then ``label_from_name`` is required, default
            :func:`histolab_label`), or a CSV with columns ``path,label`` (paths relative to the CSV; an
            optional ``patient``/``slide``/``group`` column is read by :func:`tile_groups`).
        label_from_name: labelling rule for a flat folder.

    Returns:
        ``(paths, labels)`` with labels an (N,) str array.
    """
    src = Path(source)
    if src.is_file() and src.suffix.lower() == ".csv":
        return _csv_tiles(src)
    if src.is_file():  # an image or a .txt chosen as the labels: "not found" said before
        raise EvaluationError(f"{src.name} is not a .csv file: give a path,label CSV or a folder of tiles.")
    if not src.is_dir():
        raise EvaluationError(f"labelled tiles not found: {src} (give a folder or a path,label CSV)")
    subdirs = sorted(d for d in src.iterdir() if d.is_dir())
    if subdirs:
        pairs = [
            (p, d.name) for d in subdirs for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    else:
        rule = label_from_name or histolab_label
        pairs = [(p, rule(p)) for p in sorted(src.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise EvaluationError(f"no image tiles under {src}")
    return [p for p, _ in pairs], np.asarray([lab for _, lab in pairs])


def _csv_tiles(src: Path) -> tuple[list[Path], np.ndarray]:
    """Paths (relative ones to the CSV's folder) and labels of a ``path,label`` CSV, every path checked.

    Raises:
        EvaluationError: missing columns, an empty path or label, or a path that is no file (naming its line).
    """
    rows = csv_rows(src)
    paths, labels = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        text, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        path = Path(text) if Path(text).is_absolute() else src.parent / text
        if not text or not label:
            raise EvaluationError(f"{src}, line {line}: empty path or label")
        if not path.is_file():
            raise EvaluationError(f"{src}, line {line}: tile image not found: {path}")
        paths.append(path)
        labels.append(label)
    return paths, np.asarray(labels)


def csv_rows(src: Path) -> list[dict[str, str]]:
    """The rows of a ``path,label[,patient]`` CSV, read as UTF-8 with or without a byte-order mark (Excel's
    "CSV UTF-8" writes one, which made the first column ``\ufeffpath``: "CSV needs columns path,label").

    Raises:
        EvaluationError: not UTF-8 text, no ``path`` and ``label`` columns (naming the header found), or no rows.
    """
    try:
        with src.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows, header = list(reader), reader.fieldnames or []
    except UnicodeDecodeError:
        raise EvaluationError(
            f"{src.name} is not a CSV file (not UTF-8 text): give a path,label CSV or a folder of tiles."
        ) from None
    if not {"path", "label"} <= set(header):
        found = ",".join(header) if header else "nothing"
        raise EvaluationError(
            f"{src}: CSV needs columns path,label, comma-separated on its first line; its first line reads {found!r}"
        )
    if not rows:
        raise EvaluationError(f"{src} has the columns path,label but no tiles: add one line per tile.")
    return rows


#: a labelled-tiles CSV column with one of these names holds each tile's patient/slide (first found wins)
GROUP_COLUMNS = ("patient", "slide", "group")


def tile_groups(source: str | Path) -> tuple[np.ndarray | None, str]:
    """The patient/slide id of every tile of a ``path,label[,patient]`` CSV, in :func:`list_labelled_tiles`
    order, and the column read; ``(None, "")`` for a folder or a CSV without such a column.

    Raises:
        EvaluationError: a row with an empty group cell.
    """
    src = Path(source)
    if not (src.is_file() and src.suffix.lower() == ".csv"):
        return None, ""
    rows = csv_rows(src)
    col = next((c for c in GROUP_COLUMNS if rows and c in rows[0]), None)
    if col is None:
        return None, ""
    groups = [(r.get(col) or "").strip() for r in rows]
    if "" in groups:
        raise EvaluationError(f"{src}, line {groups.index('') + 2}: empty {col}")
    return np.asarray(groups), col


def check_probe_labels(source: str | Path, labels: np.ndarray, groups: np.ndarray | None = None) -> None:
    """Refuse, before any tile is embedded, labels a cross-validated probe cannot use, saying how to fix them.

    The probe's own checks (``probes._folds``) ran after every tile was embedded and spoke of ``n_splits``, which
    the widget does not show: a flat folder of unlabelled tiles read "classification probes need at least two
    classes" (its tiles were all labelled ``tissue`` by :func:`histolab_label`).

    Raises:
        EvaluationError: one class (for a flat folder: how its labels were made), a class of one tile, or the tiles
            of a single patient.
    """
    src = Path(source)
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    how = "give one sub-folder of tiles per class (e.g. tumor/, normal/) or a path,label CSV"
    if len(classes) < 2:
        if src.is_dir() and not any(d.is_dir() for d in src.iterdir()):
            raise EvaluationError(
                f"{src.name} has no class sub-folders: a flat folder is labelled by histolab file names "
                f"(no-tissue*/almost-white* = background, others tissue) and all {len(labels)} tiles are "
                f"'{classes[0]}'; {how}."
            )
        raise EvaluationError(
            f"{src.name}: all {len(labels)} tiles have the label '{classes[0]}'; the probe needs two classes or "
            f"more: {how}."
        )
    few = [f"'{c}'" for c, n in zip(classes.tolist(), counts.tolist(), strict=True) if n < 2]
    if few:
        raise EvaluationError(
            f"{src.name}: class {', '.join(few)} has 1 tile; a cross-validated probe needs at least 2 tiles per "
            "class (one to train on, one to test): add tiles or leave that class out."
        )
    if groups is not None and len(np.unique(groups)) < 2:
        raise EvaluationError(
            f"{src.name}: every tile has the same patient/slide/group, so patient-level folds cannot be made: give "
            "tiles of at least 2 patients, or drop that column for tile-level folds."
        )


def load_tile(path: Path, size: int) -> np.ndarray:
    """RGB(A) image -> (size, size, 3) uint8, alpha composited on white, centre-cropped then resized.

    Raises:
        EvaluationError: the file is missing or not an image PIL can decode (naming it).
    """
    try:
        return _load_tile(path, size)
    except OSError as err:  # FileNotFoundError, PIL.UnidentifiedImageError, a truncated image
        raise EvaluationError(f"tile image {path} cannot be read: {err}") from None


def _load_tile(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        try:
            rgb = Image.fromarray(pil_rgb(im))
        except ValueError as err:  # a 32-bit integer / float image
            raise EvaluationError(f"tile image {path}: {err}") from None
    w, h = rgb.size
    s = min(w, h)
    rgb = rgb.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))


def iter_embed_tiles(model, paths: list[Path], *, batch_size: int = 16) -> Iterator[Progress | np.ndarray]:
    """Embed tile images with an ``EmbeddingModel``; yields Progress, then the (N, D) float32 features."""
    size = int(getattr(getattr(model, "spec", None), "tile_px", 224))
    feats = []
    for start in range(0, len(paths), batch_size):
        yield Progress(start, len(paths), "embedding tiles")
        batch = np.stack([load_tile(p, size) for p in paths[start : start + batch_size]])
        feats.append(np.asarray(model.embed(batch), dtype=np.float32))
    yield Progress(len(paths), len(paths), "embedding tiles")
    yield np.concatenate(feats)
