"""``python -m pathdistill_train`` (and ``torchrun ... -m pathdistill_train``): the ``pathdistill-train`` script."""

from pathdistill_train.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
