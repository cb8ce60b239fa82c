"""Where the Embed widget keeps the feature files it computes, and which one matches a request.

Pure core. A cached file is exactly what ``pathdistill embed`` writes (``inference.embed``: HDF5 ``features``
(N, D) / ``coords`` (N, 2), attrs :data:`~napari_pathdistill.inference.outputs.MATCH_ATTRS`, ``.partial`` while
incomplete, a ``.lock`` while written). Its name is ``<slide stem>-<key>.h5``: ``key`` hashes the slide's
absolute path, its size and mtime (two slides with the same file name, or a slide rewritten in place, do not
collide) and the embedding (model, spec less its weights location, weights hash, tile px, um/px, min tissue,
and the level-0 um/px given for a slide whose file states none). A ``<stem>.h5`` written by
``pathdistill embed`` into the same folder is used too when its attrs match, so a CLI output folder can be the
cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_pathdistill.errors import PathDistillError

#: environment variable naming the cache folder (the widget's field wins over it)
CACHE_ENV = "PATHDISTILL_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$PATHDISTILL_CACHE_DIR`` when set, else ``<user cache dir>/napari-pathdistill/features``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-pathdistill")) / "features"


def resolve_cache_dir(field: str | Path | None = None) -> Path:
    """The cache folder: ``field`` (the widget's value) when given and not empty, else :func:`default_cache_dir`."""
    text = str(field).strip() if field is not None else ""
    return Path(text).expanduser() if text and text != "." else default_cache_dir()


class CacheDirError(PathDistillError):
    """The feature cache folder cannot be created or written (the message names it and says to choose another)."""


def ensure_cache_dir(path: str | Path, writable: bool = True) -> Path:
    """Create the cache folder ``path`` if it is missing and, with ``writable``, check that files can be made in
    it (a scratch file, removed at once). The Embed widget calls it when Embed is pressed (``writable=False``: a
    read-only folder may hold the complete file asked for), the live map before it writes.

    Raises:
        CacheDirError: one line naming the folder and why: a path under a regular file, a virtual or read-only
            file system (``/proc``), no permission.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheDirError(_cache_dir_message(folder, "created", exc)) from exc
    if writable:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise CacheDirError(_cache_dir_message(folder, "written", exc)) from exc
    return folder


def _cache_dir_message(folder: Path, what: str, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return f"cache folder {folder} cannot be {what} ({reason}): choose another 'feature cache' folder."


def slide_fingerprint(slide: str | Path) -> str:
    """``absolute path|size|mtime_ns`` of a slide file (of a folder, e.g. DICOM: its files' total and newest)."""
    path = Path(slide).resolve()
    st = path.stat()
    size, mtime = st.st_size, st.st_mtime_ns
    if path.is_dir():
        entries = [e.stat() for e in os.scandir(path) if e.is_file()]
        size = sum(e.st_size for e in entries)
        mtime = max([e.st_mtime_ns for e in entries], default=mtime)
    return f"{path}|{size}|{mtime}"


def cache_file(cache_dir: str | Path, slide: str | Path, attrs: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<slide stem>-<16 hex>.h5``: unique per slide file (path, size, mtime) and embedding.

    Args:
        attrs: the attrs ``embed_slide`` writes for the request (``inference.embed.slide_attrs``); the ones of
            ``outputs.MATCH_ATTRS`` make the key, with those of ``outputs.OPTIONAL_MATCH_ATTRS`` it holds.
    """
    from napari_pathdistill.inference.outputs import MATCH_ATTRS, OPTIONAL_MATCH_ATTRS

    key = [str(attrs.get(k)) if k != "spec" else _spec_key(attrs.get(k)) for k in MATCH_ATTRS]
    key += [f"{k}={attrs[k]}" for k in OPTIONAL_MATCH_ATTRS if attrs.get(k) is not None]
    text = json.dumps([slide_fingerprint(slide), key])
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(slide).stem}-{digest}.h5"


def _spec_key(spec: Any) -> str:
    """The spec's part of a cache key: its JSON less the weights location (``outputs.spec_identity``),
    so that the same model installed elsewhere finds its cache files."""
    from napari_pathdistill.inference.outputs import spec_identity

    return json.dumps(spec_identity(spec), sort_keys=True, default=str)


def find_complete(cache_dir: str | Path, slide: str | Path, attrs: Mapping[str, Any]) -> Path | None:
    """A complete feature file of ``slide`` with ``attrs`` in ``cache_dir``, or None.

    The widget's own :func:`cache_file` first, then a ``pathdistill embed`` output ``<stem>.h5`` whose attrs
    match (see ``outputs.complete_rows``).
    """
    from napari_pathdistill.inference.outputs import complete_rows

    for path in (cache_file(cache_dir, slide, attrs), Path(cache_dir) / f"{Path(slide).stem}.h5"):
        if complete_rows(path, dict(attrs)):
            return path
    return None
