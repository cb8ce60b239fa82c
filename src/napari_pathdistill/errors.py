"""User-facing error types: their messages say what went wrong and what to do."""

from __future__ import annotations


class PathDistillError(Exception):
    """Base class of every error meant to be shown to a user (napari notification or CLI message)."""


class WSIError(PathDistillError):
    """A slide cannot be opened or read: unsupported, corrupt, truncated, missing metadata."""


class ModelLoadError(PathDistillError):
    """A model or checkpoint cannot be found or loaded."""


class Cancelled(PathDistillError):
    """Long work was cancelled by the user; nothing half-written was left behind."""


class EvaluationError(PathDistillError):
    """Evaluation inputs are inconsistent (feature shapes, manifests, labels); the message says what to fix."""


class LayerInputError(PathDistillError):
    """A widget input layer is unusable: wrong layer type, not a slide opened by our reader, mismatched pair."""


class EmptyTissueError(PathDistillError):
    """No tile passes the tissue threshold (empty tissue mask or too strict 'min tissue')."""


class RegistrationError(PathDistillError):
    """Two slides cannot be registered: missing MPP, degenerate or unpaired landmarks, no overlap."""


class NonFiniteFeaturesError(PathDistillError):
    """A model produced NaN or inf embeddings (a numerical overflow): no PCA / k-means map can be made of them."""


class CorruptTileError(WSIError):
    """One tile (or region) of an otherwise readable slide cannot be decoded: corrupt or missing bytes."""


class CorruptTileWarning(UserWarning):
    """A tile that cannot be decoded was replaced by a flat grey tile (viewer) or skipped (embedding)."""


class TruncatedFileWarning(UserWarning):
    """A slide file is cut short: it opens with the pyramid levels that are intact; the message names the rest."""


class DeviceError(PathDistillError):
    """A requested torch device is unknown or not available here (e.g. ``cuda`` without an NVIDIA driver)."""
