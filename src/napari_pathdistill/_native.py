"""Load triton's native library so that torch can be imported after Qt/OpenGL (no torch import here).

torch imports triton (torch._dynamo -> triton) whenever it is installed, e.g. with the CUDA wheels. Its
``libtriton.so`` carries its own LLVM; when Mesa's OpenGL (llvmpipe, as under Xvfb or on machines without a GPU
driver) has already put another LLVM into the process, loading it segfaults. That happens in a plain ``napari``
session, where Qt and OpenGL start before a dock widget imports torch. Loading triton with ``RTLD_DEEPBIND``
makes it resolve its own symbols first. A no-op when torch or triton is already imported, when triton is not
installed, or off Linux.
"""

from __future__ import annotations

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
