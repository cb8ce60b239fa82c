"""User-facing training errors, subclasses of the plugin's :class:`PathDistillError`."""

from __future__ import annotations

from napari_pathdistill.errors import PathDistillError


class TrainConfigError(PathDistillError, ValueError):
    """A training configuration is invalid (unknown key, bad value, missing file)."""


class TrainDataError(PathDistillError, ValueError):
    """The training data cannot be read or holds no usable tiles."""


class TrainDivergedError(PathDistillError, FloatingPointError):
    """The loss became NaN or infinite (the message says at which step and what to lower)."""


class TrainInterrupted(PathDistillError):
    """The run was stopped with Ctrl-C; ``step`` steps were done, the last checkpoint holds ``saved`` (0: none).

    Args:
        step: steps done when interrupted (the one in progress not counted).
        saved: the step of the latest checkpoint in ``output_dir`` (0: none was written).
    """

    def __init__(self, step: int, saved: int) -> None:
        self.step, self.saved = step, saved
        if saved:
            text = f"rerun the same command to resume from the checkpoint of step {saved}"
        else:
            text = "no checkpoint was written yet: rerunning the same command starts again at step 0"
        super().__init__(f"interrupted at step {step + 1}; {text}")
