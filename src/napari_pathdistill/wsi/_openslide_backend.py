"""OpenSlide backend: every format OpenSlide reads (SVS, NDPI, MRXS, SCN, BIF, VMS, generic tiled TIFF, DICOM)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import CorruptTileError, WSIError
from napari_pathdistill.wsi._backend_utils import composite_rgba
from napari_pathdistill.wsi.levels import PyramidLevel

DEFAULT_TILE = 256


def find_dicom_file(folder: Path) -> Path | None:
    """Return a file of a DICOM WSI series in ``folder`` that OpenSlide recognises, or None."""
    import openslide

    from napari_pathdistill.wsi._backend_utils import dicom_candidates

    for f in dicom_candidates(folder):
        if openslide.OpenSlide.detect_format(str(f)) == "dicom":
            return f
    return None


def detect_vendor(path: Path) -> str | None:
    """OpenSlide's vendor string for ``path`` (file, or folder of DICOM files), or None; never raises."""
    try:
        import openslide

        if path.is_dir():
            return "dicom" if find_dicom_file(path) is not None else None
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None


def _background(props: dict[str, str]) -> tuple[int, int, int]:
    """The slide's declared background colour (``openslide.background-color``), white when absent."""
    hexcol = props.get("openslide.background-color")
    if hexcol and len(hexcol) == 6:
        try:
            return (int(hexcol[0:2], 16), int(hexcol[2:4], 16), int(hexcol[4:6], 16))
        except ValueError:
            pass
    return (255, 255, 255)


class OpenSlideBackend:
    """Thin, thread-safe wrapper around ``openslide.OpenSlide`` returning RGB numpy arrays."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        target = path
        if path.is_dir():
            found = find_dicom_file(path)
            if found is None:
                raise WSIError(
                    f"{path} is a folder without a DICOM whole-slide series that OpenSlide can read."
                )
            target = found
        self._target, self._lock = target, threading.Lock()
        self._retired: list[Any] = []  # handles replaced after an error (closed with the backend)
        try:
            self._slide = openslide.OpenSlide(str(target))
        except openslide.OpenSlideError as exc:
            raise WSIError(
                f"OpenSlide cannot read {path}: {exc}. The file may be truncated or corrupt."
            ) from exc
        self.properties: dict[str, str] = dict(self._slide.properties)
        self.background = _background(self.properties)
        self.levels = [self._level(i) for i in range(self._slide.level_count)]
        self.mpp = self._mpp()
        self.icc_profile = self._icc_profile()

    def _icc_profile(self) -> bytes | None:
        """The embedded ICC profile's bytes (OpenSlide >= 4), None when the slide has none; reads no pixels."""
        try:
            profile = self._slide.color_profile  # parsed by PIL.ImageCms
        except Exception:  # a damaged profile: keep its bytes (what OpenSlide read) so users are told
            raw = getattr(self._slide, "_profile", None)
            return bytes(raw) if raw else None
        return profile.tobytes() if profile is not None else None

    def _level(self, i: int) -> PyramidLevel:
        w, h = self._slide.level_dimensions[i]
        tw = int(self.properties.get(f"openslide.level[{i}].tile-width", DEFAULT_TILE))
        th = int(self.properties.get(f"openslide.level[{i}].tile-height", DEFAULT_TILE))
        return PyramidLevel(
            shape=(h, w), downsample=float(self._slide.level_downsamples[i]), tile_shape=(th, tw)
        )

    def _mpp(self) -> tuple[float, float] | None:
        try:
            mx = float(self.properties["openslide.mpp-x"])
            my = float(self.properties["openslide.mpp-y"])
        except (KeyError, ValueError):
            return None
        return (my, mx) if mx > 0 and my > 0 else None

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide ``read_region`` -> (h, w, 3) uint8, alpha composited on the background colour."""
        import openslide

        args = ((int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1])))
        slide = self._slide
        try:
            img = slide.read_region(*args)
        except openslide.OpenSlideError:
            # an OpenSlide error poisons the handle for every thread (another thread's corrupt tile may be why
            # this read failed): replace the shared handle, and read again on a private one, so that a
            # failure is blamed on this region only when it fails by itself
            self._reopen(slide)
            img = self._read_alone(args)
        alpha: Any = img.getchannel("A").getextrema()  # one band: 5x faster than the RGBA extrema
        if alpha == (255, 255):  # opaque (the usual case): PIL's C conversion, no numpy pass
            return np.asarray(img.convert("RGB"))
        if alpha == (0, 0):  # nothing scanned there (sparse tiles, outside the regions)
            return np.full((img.height, img.width, 3), self.background, np.uint8)
        return composite_rgba(np.asarray(img), self.background)

    def _read_alone(self, args: tuple) -> Any:
        """``read_region(*args)`` on a handle of its own (opened and closed here); raises CorruptTileError."""
        import openslide

        private = openslide.OpenSlide(str(self._target))
        try:
            return private.read_region(*args)
        except openslide.OpenSlideError as exc:
            (x, y), level, (w, h) = args
            raise CorruptTileError(
                f"{self._target.name}: the region at level-0 ({x}, {y}), level {level}, {w}x{h} px cannot be "
                f"decoded (OpenSlide: {exc}); the slide is corrupt there."
            ) from exc
        finally:
            private.close()

    def _reopen(self, failed: Any) -> Any:
        """A fresh handle in place of ``failed`` (once, whichever thread sees it first); the failed one is
        closed with the backend, as other threads may still be inside it."""
        import openslide

        with self._lock:
            if self._slide is failed:
                self._retired.append(failed)
                self._slide = openslide.OpenSlide(str(self._target))
                if len(self._retired) > 16:  # bound the open files; no read is still inside that old a handle
                    self._retired.pop(0).close()
            return self._slide

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Read a block given in *level* pixel coordinates (used for dask chunks)."""
        ds = self.levels[level].downsample
        return self.read_region((round(x * ds), round(y * ds)), level, (w, h))

    def associated_image_names(self) -> list[str]:
        return sorted(self._slide.associated_images.keys())

    def read_associated(self, name: str) -> np.ndarray:
        try:
            img = self._slide.associated_images[name]
        except KeyError as exc:
            names = ", ".join(self.associated_image_names()) or "none"
            raise WSIError(f"No associated image {name!r}; this slide has: {names}.") from exc
        return composite_rgba(np.asarray(img.convert("RGBA")), self.background)

    def close(self) -> None:
        for slide in [*self._retired, self._slide]:
            slide.close()
        self._retired.clear()
