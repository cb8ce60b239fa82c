"""User-facing training errors, subclasses of the plugin's :class:`PathDistillError`."""

from __future__ import annotations

import re

from napari_pathdistill.errors import PathDistillError


class TrainConfigError(PathDistillError, ValueError):
    """A training configuration is invalid (unknown key, bad value, missing file)."""


class TrainDataError(PathDistillError, ValueError):
    """The training data cannot be read or holds no usable tiles."""


class TrainDivergedError(PathDistillError, FloatingPointError):
    """The loss became NaN or infinite (the message says at which step and what to lower)."""


class TrainWriteError(PathDistillError):
    """A checkpoint or export could not be written (a full disk, a quota, a file-size limit); the message names
    the file, the reason and the space left, and the previous checkpoint is intact (files are replaced
    atomically)."""


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


class TrainTerminated(PathDistillError):
    """The run got SIGTERM (a scheduler's preemption or time-limit notice) and stopped after step ``steps``,
    whose checkpoint it wrote.

    Args:
        steps: steps done, all saved in ``output_dir/checkpoint.pth``.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        super().__init__(
            f"terminated (SIGTERM) after step {steps}; checkpoint of step {steps} written: rerun the same "
            "command to resume from it"
        )


def worker_message(text: str) -> str:
    """The error's own message when a DataLoader worker raised it.

    torch re-raises a worker's exception in the training process as the same type whose message is
    ``Caught X in DataLoader worker process N.`` followed by the worker's whole traceback, ending with
    ``module.X: message``.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not re.match(r"Caught \w+ in DataLoader worker process \d+", lines[0]):
        return text
    head, sep, rest = lines[-1].partition(": ")
    return rest if sep and re.fullmatch(r"[\w.]+", head) else lines[-1]
