#!/usr/bin/env bash
# Reproduce the checkpoints shipped in weights/ from the Oxford-IIIT Pet subset and ImageNet encoder in ../shared.
# Takes roughly 5 minutes (tutorial) and 20-30 minutes (finetune) on 2 CPU cores. Run it in the background:
#   nohup scripts/train_shipped.sh > train_shipped.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/oxford-iiit-pet-subset}
ENCODER=${ENCODER:-../shared/data/encoders/mobilenet_v2_1.00_imagenet_no_top.weights.h5}

# The seed's recipe: frozen encoder, 20 epochs, batch 64, Adam 1e-3, 128 px, flips only.
python train.py --data-dir "$DATA" --encoder-weights "$ENCODER" --preset tutorial --name tutorial \
  --run-dir runs/shipped-tutorial
# The best model: see the preset in petseg/presets.py and the experiment table in README.md.
python train.py --data-dir "$DATA" --encoder-weights "$ENCODER" --preset finetune --name finetune \
  --run-dir runs/shipped-finetune
