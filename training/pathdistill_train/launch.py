"""The ``pathdistill-train`` console script.

Every install of the project gets the script, but only the ``train`` extra brings OmegaConf, which the trainer
imports first: without it the script says which extra to install, in one line, instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

#: what the script says without OmegaConf
NO_OMEGACONF = "the trainer needs OmegaConf, which is not installed: pip install 'napari-pathdistill[train]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run :func:`pathdistill_train.train.train.main` (see there for the exit codes); 1 without OmegaConf."""
    if importlib.util.find_spec("omegaconf") is None:
        print(f"pathdistill-train: error: {NO_OMEGACONF}", file=sys.stderr, flush=True)
        return 1
    from pathdistill_train.train.train import main as train_main

    return train_main(argv)


if __name__ == "__main__":  # python -m pathdistill_train.launch, also under torchrun -m
    raise SystemExit(main())
