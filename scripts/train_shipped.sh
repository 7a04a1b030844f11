#!/usr/bin/env bash
# Reproduce the checkpoints shipped in weights/ from the Oxford-IIIT Pet subset and the encoders in ../shared.
# Takes roughly 5 minutes (tutorial), 20-30 minutes (finetune) and about 50 minutes (voc, with other jobs on the machine) on 2 CPU cores. Run it in the background:
#   nohup scripts/train_shipped.sh > train_shipped.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/oxford-iiit-pet-subset}
ENCODER=${ENCODER:-../shared/data/encoders/mobilenet_v2_1.00_imagenet_no_top.weights.h5}
VOC=${VOC:-../shared/data/encoders/deeplabv3_257_mv_gpu.tflite}

# The seed's recipe: frozen encoder, 20 epochs, batch 64, Adam 1e-3, 128 px, flips only.
python train.py --data-dir "$DATA" --encoder-weights "$ENCODER" --preset tutorial --name tutorial \
  --run-dir runs/shipped-tutorial
# The finetune U-Net (the default): see the preset in petseg/presets.py and the experiment table in docs/experiments.md.
# Its samples show the example photos, so its run record ships too (weights/finetune.run/, the Training tab's
# default view on a Space).
python train.py --data-dir "$DATA" --encoder-weights "$ENCODER" --preset finetune --name finetune \
  --run-dir runs/shipped-finetune \
  --sample-photos examples/chelsea.jpg examples/cartoon_cat.jpg examples/cartoon_dog.jpg
python -c "from petseg.runs import copy_run_record; copy_run_record('runs/shipped-finetune', 'weights/finetune.run')"
# voc: DeepLabV3+ on the PASCAL VOC DeepLab (voc preset). Its samples show the example photos, so its run
# record can ship beside it (weights/voc.run/) without photos of the data set.
python train.py --data-dir "$DATA" --encoder-weights "$VOC" --preset voc --name voc --run-dir runs/shipped-voc \
  --sample-photos examples/chelsea.jpg examples/cartoon_cat.jpg examples/cartoon_dog.jpg
python -c "from petseg.runs import copy_run_record; copy_run_record('runs/shipped-voc', 'weights/voc.run')"
