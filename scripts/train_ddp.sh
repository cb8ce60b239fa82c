#!/usr/bin/env bash
# Distillation on N GPUs of one machine with torchrun (DDP; add teacher.fsdp=true to shard a big teacher).
# Usage: scripts/train_ddp.sh NGPUS CONFIG [key=value ...]
#   scripts/train_ddp.sh 8 h0mini_from_hoptimus0 data.slides='[/data/a.svs,/data/b.svs]' output_dir=runs/h0mini
set -euo pipefail
NGPUS=${1:?usage: train_ddp.sh NGPUS CONFIG [overrides]}
CONFIG=${2:?usage: train_ddp.sh NGPUS CONFIG [overrides]}
shift 2
exec torchrun --standalone --nnodes 1 --nproc_per_node "$NGPUS" \
    -m pathdistill_train.train.train --config "$CONFIG" "$@"
