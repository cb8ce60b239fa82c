"""Model chooser shared by the widgets: a registry entry or a checkpoint file/folder, plus the device.

The picker also knows the chosen model's :class:`ModelSpec` without loading any weights (registry entry or the
checkpoint's ``config.json``), so that :func:`follow_spec` keeps a widget's tile px / um/px on the model's
training resolution until the user types other values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, SpinBox

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.factory import resolve_spec
from napari_pathdistill.models.registry import list_models
from napari_pathdistill.models.shared import shared_model
from napari_pathdistill.models.spec import ModelSpec
from napari_pathdistill.progress import Progress, raise_if_cancelled

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
        self._spec_callbacks: list[Callable[[ModelSpec], None]] = []
        self.choice.changed.connect(self._spec_changed)
        self.checkpoint.changed.connect(self._spec_changed)

    def set_model(self, model: EmbeddingModel | None) -> None:
        """Use this ready model instead of loading one (``None`` goes back to the chooser)."""
        self._injected = model
        self._spec_changed()

    def spec(self) -> ModelSpec | None:
        """The chosen model's spec, read without loading weights; None while it is unknown (no checkpoint yet)."""
        if self._injected is not None:
            return self._injected.spec
        if self.choice.value != CHECKPOINT:
            return spec_of(str(self.choice.value))
        path = self.checkpoint.value
        return spec_of(str(path)) if isinstance(path, Path) and str(path).strip(". ") else None

    def on_spec(self, callback: Callable[[ModelSpec], None]) -> None:
        """Call ``callback(spec)`` now and whenever another model with a known spec is chosen."""
        self._spec_callbacks.append(callback)
        spec = self.spec()
        if spec is not None:
            callback(spec)

    def _spec_changed(self, _value: Any = None) -> None:
        spec = self.spec()
        if spec is not None:
            for callback in self._spec_callbacks:
                callback(spec)

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
        """Load the model (slow: call it inside the worker), or take the copy another task already holds
        (:func:`~napari_pathdistill.models.shared.shared_model`). Raises :class:`ModelLoadError`."""
        if self.model is not None:
            return self.model
        try:
            return shared_model(self.source, device=self.device)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"Could not load model '{self.source}': {type(exc).__name__}: {exc}"
            ) from exc

    def load_steps(self, cancel: threading.Event | None = None) -> Generator[Progress, None, EmbeddingModel]:
        """:meth:`load` in a task: yields ``Progress(0, 0, "loading model <name>")`` first (the status and bar
        say what the task waits for), and raises :class:`Cancelled` when Cancel was pressed meanwhile (a load
        cannot be stopped half-way: it ends, then nothing else runs)."""
        if self.model is None:
            yield Progress(0, 0, f"loading model {_short(self.source)}")
        model = self.load()
        raise_if_cancelled(cancel, f"Cancelled while loading {_short(self.source)}.")
        return model


def with_models(
    cancel: threading.Event, requests: Sequence[ModelRequest], run: Callable[..., Iterator[Any]]
) -> Generator[Any, None, Any]:
    """A task's generator: load each request in turn (:meth:`ModelRequest.load_steps`), then ``run(*models)``'s
    items and result. Called in the worker (``TaskRunner.start``'s factory)."""
    models = []
    for request in requests:
        models.append((yield from request.load_steps(cancel)))
    return (yield from run(*models))


def _short(source: str) -> str:
    """A registry name as it is; a path by its last two parts (``run1/export``)."""
    parts = Path(source).parts
    return str(Path(*parts[-2:])) if len(parts) > 1 else source


def spec_of(source: str) -> ModelSpec | None:
    """Spec of a registry name, shipped checkpoint or checkpoint folder/file (as ``load_model`` resolves them),
    without building the model; None when it cannot be known here (missing files, ``hf-hub:`` ids)."""
    try:
        return resolve_spec(source)
    except ModelLoadError:
        return None


def follow_spec(picker: ModelPicker, tile_px: SpinBox, mpp: FloatSpinBox) -> None:
    """Keep ``tile_px`` / ``mpp`` on the picked model's ``spec.tile_px`` / ``spec.mpp`` until the user edits them.

    A field follows the model while it still shows the value last put there from a spec; a value the user typed
    stays when another model is picked (typing the model's value back makes it follow again).
    """
    shown = {"tile_px": tile_px.value, "mpp": mpp.value}

    def update(spec: ModelSpec) -> None:
        for key, field in (("tile_px", tile_px), ("mpp", mpp)):
            wanted = getattr(spec, key)
            if field.value == shown[key] and field.min <= wanted <= field.max:
                field.value = wanted
                shown[key] = field.value  # as the spin box rounds it

    picker.on_spec(update)
