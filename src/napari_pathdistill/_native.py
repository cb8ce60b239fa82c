"""Native-library helpers (no torch import here): load triton's native library so that torch can be imported after
Qt/OpenGL, and give glibc's freed heap back to the system after long work.

torch imports triton (torch._dynamo -> triton) whenever it is installed, e.g. with the CUDA wheels. Its
``libtriton.so`` carries its own LLVM; when Mesa's OpenGL (llvmpipe, as under Xvfb or on machines without a GPU
driver) has already put another LLVM into the process, loading it segfaults. That happens in a plain ``napari``
session, where Qt and OpenGL start before a dock widget imports torch. Loading triton with ``RTLD_DEEPBIND``
makes it resolve its own symbols first. A no-op when torch or triton is already imported, when triton is not
installed, or off Linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys


def preload_triton() -> bool:
    """Import ``triton`` with ``RTLD_DEEPBIND`` if torch has not been imported yet.

    Returns:
        True when triton was loaded here, False when nothing was needed or possible.
    """
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or "torch" in sys.modules or "triton" in sys.modules:
        return False
    try:
        if importlib.util.find_spec("triton") is None:
            return False
    except (ImportError, ValueError):
        return False
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        import triton._C.libtriton  # noqa: F401
    except Exception:  # a broken triton install: torch copes without it
        return False
    finally:
        sys.setdlopenflags(flags)
    return True


def trim_heap() -> bool:
    """Return the heap memory glibc keeps after ``free`` to the system (``malloc_trim(0)``, every arena).

    A slide read by several threads leaves 0.1-0.2 GB freed but resident in their malloc arenas (measured on a
    2,352-tile embed: glibc's ``mallinfo2`` counted 0.03 GB in use); the process keeps it until exit and every
    later layer, PCA or click stacks on top. Called once at the end of a long task (a few ms), never per tile.

    Returns:
        True when memory was given back; False off glibc or when there was nothing to give.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return False
