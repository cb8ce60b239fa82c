"""Model chooser shared by the widgets: a registry entry or a checkpoint file/folder, plus the device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.registry import list_models

CHECKPOINT = "checkpoint file/folder..."
DEVICES = ("auto", "cpu", "cuda", "mps")


class ModelPicker(Container):
    """Registry name or checkpoint path, and device; :meth:`request` captures the choice.

    Tests (and scripts) may inject a ready model with :meth:`set_model`; it then takes precedence.
    """

    def __init__(self, label: str = "model", default: str = "pathdistill-student", **kwargs: Any) -> None:
        names = list_models()
        choices = [*names, CHECKPOINT]
        self.choice = ComboBox(
            label=label, choices=choices, value=default if default in names else choices[0]
        )
        self.checkpoint = FileEdit(
            label="checkpoint", mode=FileDialogMode.EXISTING_FILE, visible=self.choice.value == CHECKPOINT
        )
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        super().__init__(widgets=[self.choice, self.checkpoint, self.device], labels=True, **kwargs)
        self.margins = (0, 0, 0, 0)
        self.choice.changed.connect(lambda v: setattr(self.checkpoint, "visible", v == CHECKPOINT))
        self._injected: EmbeddingModel | None = None

    def set_model(self, model: EmbeddingModel | None) -> None:
        """Use this ready model instead of loading one (``None`` goes back to the chooser)."""
        self._injected = model

    def request(self) -> ModelRequest:
        """Read the choice on the main thread; the returned request loads the model in the worker."""
        if self._injected is not None:
            return ModelRequest(self._injected.spec.name, "injected", self._injected)
        if self.choice.value != CHECKPOINT:
            return ModelRequest(str(self.choice.value), str(self.device.value))
        path = self.checkpoint.value
        if not isinstance(path, Path):  # None or several paths: not possible in single-file mode
            raise ModelLoadError("No checkpoint chosen; choose a checkpoint file or folder.")
        if not str(path).strip(". ") or not path.exists():
            raise ModelLoadError(f"Checkpoint '{path}' does not exist; choose a checkpoint file or folder.")
        return ModelRequest(str(path), str(self.device.value))


@dataclass(frozen=True)
class ModelRequest:
    """What to load, captured on the main thread so the worker never reads widgets."""

    source: str
    device: str
    model: EmbeddingModel | None = None

    def load(self) -> EmbeddingModel:
        """Load the model (slow: call it inside the worker). Raises :class:`ModelLoadError`."""
        if self.model is not None:
            return self.model
        try:
            return load_model(self.source, device=self.device)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"Could not load model '{self.source}': {type(exc).__name__}: {exc}"
            ) from exc
