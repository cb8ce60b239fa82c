"""napari reader: feature HDF5 files (ours, CLAM, TRIDENT) as an embedding map + clusters layers in um.

``get_feature_reader`` only peeks at the file's dataset names (no data read) and never raises. The layers
land on the slide: with the slide's MPP when the file stores a slide path that exists (its layers are added
too, unless the slide is already open in the current viewer; a slide whose file states no MPP is shown in level-0
pixels, and so is the map, also when its tiles were cut at an um/px override), or, for files that store none
(CLAM, TRIDENT), when a slide of the same name (``<slide>.h5``) is open in the current viewer; else with the file's
um/px. A stored slide that is missing gives a notification naming it (a reader must not open dialogs), and so
does a file that does not fit its slide (``inference.feature_match``: tiles past its edge, TRIDENT's level-0 size
or magnification, our um/px). The clusters layer carries
the map-layer metadata (``slide_map``, ``model``, ``slide_layer``, ``features_file``) so the Embed widget's
click-for-similar-tiles works on it. A large file without a stored map (CLAM, TRIDENT) dropped on a viewer gets
its map computed off the main thread (:func:`read_features`, ``_qt.deferred_map``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

LayerData = tuple[Any, dict[str, Any], str]

SUFFIXES = (".h5", ".hdf5")


def get_feature_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_features_deferred` if ``path`` is a feature HDF5 (features + coords datasets), or a
    ``.h5`` HDF5 that cannot be opened (truncated: the reader then raises ``FeatureFileError`` saying so, where
    napari would say only that no reader can read it), else None."""
    try:
        from napari_pathdistill.inference.feature_files import is_damaged_hdf5, is_feature_file

        if isinstance(path, list):
            if len(path) != 1:
                return None
            path = path[0]
        p = Path(path)
        return (
            read_features_deferred
            if p.suffix.lower() in SUFFIXES and p.is_file() and (is_feature_file(p) or is_damaged_hdf5(p))
            else None
        )
    except Exception:
        return None


def _viewer_layers() -> list[Any]:
    """The layers of the current napari viewer; none without one (a reader never raises)."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:
        return []
    return [] if viewer is None else list(viewer.layers)


def _open_slide_layer(slide: Path) -> str | None:
    """Name of a layer of the current viewer showing ``slide`` (source path or our metadata path), or None."""
    target = str(slide.resolve())
    for layer in _viewer_layers():
        paths = [getattr(layer.source, "path", None), layer.metadata.get("pathdistill", {}).get("path")]
        if any(p and str(Path(p).resolve()) == target for p in paths):
            return layer.name
    return None


#: extensions of two parts, removed whole from a slide's name by TRIDENT (``IO.splitext``) and by CLAM's
#: ``slide_id = name.split(slide_ext)[0]`` with ``--slide_ext .ome.tif``
COMPOUND_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr", ".ome.btf")


def slide_ids(path: Path) -> set[str]:
    """The names a CLAM / TRIDENT feature file of slide ``path`` may have (less ``.h5``): its stem, and its
    name less a compound extension (``OS-2-ndpi.ome.tif`` -> ``OS-2-ndpi``)."""
    ids = {path.stem}
    ids.update(path.name[: -len(ext)] for ext in COMPOUND_SUFFIXES if path.name.lower().endswith(ext))
    return ids


def _open_slide_named(stem: str) -> Path | None:
    """The slide file of a layer of the current viewer opened by our reader whose file name, less its
    extension, is ``stem``: CLAM and TRIDENT store no slide path but name each file after its slide
    (``<slide_id>.h5``, the slide's name less its extension, ``.ome.tif`` whole: :func:`slide_ids`)."""
    for layer in _viewer_layers():
        path = layer.metadata.get("pathdistill", {}).get("path") if isinstance(layer.metadata, dict) else None
        if path and stem in slide_ids(Path(path)) and Path(path).exists():
            return Path(path)
    return None


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:
        warnings.warn(message, UserWarning, stacklevel=3)


def read_features_deferred(path: str | list[str]) -> list[LayerData]:
    """The npe2 reader: :func:`read_features` with ``defer=True`` (napari adds the layers it returns, then the
    worker fills them)."""
    return read_features(path, defer=True)


def read_features(path: str | list[str], defer: bool = False) -> list[LayerData]:
    """The map layers of one feature file (plus its slide's layers when stored, existing and not open).

    With ``defer`` (the npe2 reader), a file of at least ``_qt.deferred_map.DEFER_MIN_ROWS`` rows without a
    stored map (CLAM, TRIDENT) read on the main thread of a napari session gets its map computed in a worker
    thread: the two map layers come at once, placed and named as they will stay, the map a grey raster of the
    tiles and the clusters empty, and the worker fills them in place once napari has added them
    (``_qt.deferred_map``). Everywhere else (no viewer, another thread, a small file, our files, which store
    their map, or ``defer=False``: scripts, benchmarks) the layers come complete.

    Args:
        path: the file (or a list of one).
        defer: leave the map of a large file without a stored one to a worker, where possible.

    Raises:
        FeatureFileError: the file is not a usable feature HDF5.
    """
    from napari_pathdistill._qt._clusters import map_layer_data
    from napari_pathdistill._reader import read_slide
    from napari_pathdistill.inference.feature_files import read_feature_file, slide_map_from_features
    from napari_pathdistill.inference.feature_match import slide_mismatch

    file = Path(path[0] if isinstance(path, list) else path)
    deferred = _deferred_map() if defer else None
    ff = read_feature_file(file, features=deferred is None)
    if deferred is not None and not deferred.worth_deferring(ff):
        deferred, ff = None, read_feature_file(file)
    layers: list[LayerData] = []
    slide_mpp, slide_layer, in_pixels = None, None, False
    name = ff.path.stem
    stored = Path(ff.slide_path) if ff.slide_path else None
    slide = stored if stored is not None and stored.exists() else _open_slide_named(ff.path.stem)
    if slide is not None:
        from napari_pathdistill.wsi.pyramid import open_pyramid

        with open_pyramid(slide) as pyr:
            slide_mpp, slide_size = (pyr.mpp[1] if pyr.mpp else None), pyr.dimensions
        mismatch = slide_mismatch(ff, slide.name, slide_size, slide_mpp)
        if mismatch:  # another slide of this name, another scan of it: say so, not a map off the tissue
            _notify(mismatch)
        if slide_mpp is None and ff.mpp is not None:  # tiles cut at an um/px override of a slide napari
            in_pixels = True  # shows in level-0 pixels: place the map in those (1 "um" per level-0 px)
        slide_layer = _open_slide_layer(slide)
        if slide_layer is None:
            layers += read_slide(str(slide))
            slide_layer = layers[0][1]["name"]
        name = slide_layer  # "<slide layer> embedding map", as the Embed widget names its layers
    elif stored is not None:
        _notify(
            f"{ff.path.name}: its slide {stored} is missing; the map is placed with the file's um/px. Open "
            "the slide (File > Open), then this file, to see the map on it."
        )
    map_mpp = 1.0 if in_pixels else slide_mpp
    units = {"units": ("um", "um")} if (slide_mpp or ff.mpp) and not in_pixels else {}
    meta = {"slide_layer": slide_layer, "features_file": str(ff.path), "source": ff.source}
    if deferred is not None:
        return layers + deferred.placeholder_layers(ff, map_mpp, name, meta, units)
    smap = slide_map_from_features(ff, slide_mpp=map_mpp)
    return layers + map_layer_data(smap, name, {"slide_map": smap, "model": smap.model_name, **meta}, units)


def _deferred_map() -> Any:
    """``_qt.deferred_map`` when this call can leave the map to a worker (a napari viewer, its main thread),
    else None."""
    import sys

    if "napari" not in sys.modules:  # no napari session in this process
        return None
    from napari_pathdistill._qt import deferred_map

    return deferred_map if deferred_map.can_defer() else None
