"""The Qt binding must not leak decrefs of None (PySide6 6.12.0 does, on Python < 3.12: see pyproject.toml).

Each void Qt call there lowers None's refcount by one; a napari session makes thousands, so sessions and test
runs abort with "Fatal Python error: none_dealloc".
"""

from __future__ import annotations

import gc
import sys

import pytest

pytestmark = pytest.mark.napari


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12")
def test_void_qt_calls_keep_the_refcount_of_none(qapp) -> None:
    from qtpy.QtWidgets import QWidget

    widget = QWidget()
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(2000):
        widget.setMouseTracking(True)
    gc.collect()
    assert sys.getrefcount(None) > before - 100, "this Qt binding over-releases None: pin another version"
