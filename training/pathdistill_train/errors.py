"""User-facing training errors, subclasses of the plugin's :class:`PathDistillError`."""

from __future__ import annotations

from napari_pathdistill.errors import PathDistillError


class TrainConfigError(PathDistillError, ValueError):
    """A training configuration is invalid (unknown key, bad value, missing file)."""


class TrainDataError(PathDistillError, ValueError):
    """The training data cannot be read or holds no usable tiles."""
