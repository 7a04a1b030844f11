#!/usr/bin/env bash
# Reproduce the checkpoints shipped in weights/ from the Oxford-IIIT Pet subset and the encoders in ../shared.
# Takes roughly 5 minutes (tutorial), 20-30 minutes (finetune), about 50 minutes (voc, with other jobs on the
# machine) and about 2 hours (student: two rounds of labelling 8,215 photos and training) on 2 CPU cores. Run it
# in the background:
#   nohup scripts/train_shipped.sh > train_shipped.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/oxford-iiit-pet-subset}
ENCODER=${ENCODER:-../shared/data/encoders/mobilenet_v2_1.00_imagenet_no_top.weights.h5}
VOC=${VOC:-../shared/data/encoders/deeplabv3_257_mv_gpu.tflite}
UNLABELLED=${UNLABELLED:-../shared/data}
SAMPLES="examples/Bengal_1.jpg examples/american_bulldog_28.jpg examples/Abyssinian_94.jpg examples/american_bulldog_214.jpg"

# The seed's recipe: frozen encoder, 20 epochs, batch 64, Adam 1e-3, 128 px, flips only.
python train.py --data-dir "$DATA" --encoder-weights "$ENCODER" --preset tutorial --name tutorial \
  --run-dir runs/shipped-tutorial
# The finetune U-Net (the default): see the preset in petseg/presets.py and the experiment table in docs/experiments.md.
# Its samples show the example photos, so its run record ships too (weights/finetune.run/, the Training tab's
# default view on a Space).
python train.py --data-dir "$DATA" --encoder-weights "$ENCODER" --preset finetune --name finetune \
  --run-dir runs/shipped-finetune \
  --sample-photos $SAMPLES
python -c "from petseg.runs import copy_run_record; copy_run_record('runs/shipped-finetune', 'weights/finetune.run')"
# voc: DeepLabV3+ on the PASCAL VOC DeepLab (voc preset). Its samples show the example photos, so its run
# record can ship beside it (weights/voc.run/) without photos of the data set.
python train.py --data-dir "$DATA" --encoder-weights "$VOC" --preset voc --name voc --run-dir runs/shipped-voc \
  --sample-photos $SAMPLES
python -c "from petseg.runs import copy_run_record; copy_run_record('runs/shipped-voc', 'weights/voc.run')"
# student (the default), two rounds of Noisy Student. Round 1: finetune continued on the labelled photos plus
# 8,153 unlabelled ones (6,657 Oxford photos of other breeds, 1,496 other pet photos) labelled by the finetune + voc
# ensemble, with people marked background by the VOC DeepLab; the 238 photos with people among them are linked 16
# more times (people/), so batches show people more often. 62 photos with people are held out for
# scripts/people_check.py.
for set in oxford-iiit-pet-unlabelled unlabelled-pets; do
  python scripts/pseudo_label.py "$UNLABELLED/$set/images" "runs/pseudo-$set" --voc "$VOC" --hold-out 40 \
    --people-copies 16
done
python train.py --data-dir "$DATA" --preset finetune --init-checkpoint weights/finetune.keras \
  --unlabelled-dir runs/pseudo-oxford-iiit-pet-unlabelled runs/pseudo-unlabelled-pets \
  runs/pseudo-oxford-iiit-pet-unlabelled/people runs/pseudo-unlabelled-pets/people \
  --set fine_tune_after=0 --set fine_tune_learning_rate=1e-4 --epochs 20 \
  --batch-size 16 --keep-last --name student --run-dir runs/shipped-student-round1
# Round 2: every photo labelled again by round 1's student + voc (the same people rule and round 1's held-out
# photos), then finetune continued on these labels for 40 epochs; it replaces round 1's student in weights/.
for set in oxford-iiit-pet-unlabelled unlabelled-pets; do
  python scripts/pseudo_label.py "$UNLABELLED/$set/images" "runs/pseudo2-$set" --checkpoints student voc \
    --voc "$VOC" --hold-out-list "runs/pseudo-$set/people.txt" --people-copies 16
done
python train.py --data-dir "$DATA" --preset finetune --init-checkpoint weights/finetune.keras \
  --unlabelled-dir runs/pseudo2-oxford-iiit-pet-unlabelled runs/pseudo2-unlabelled-pets \
  runs/pseudo2-oxford-iiit-pet-unlabelled/people runs/pseudo2-unlabelled-pets/people \
  --set fine_tune_after=0 --set fine_tune_learning_rate=1e-4 --epochs 40 \
  --batch-size 16 --keep-last --name student --run-dir runs/shipped-student --sample-photos $SAMPLES
python -c "from petseg.runs import copy_run_record; copy_run_record('runs/shipped-student', 'weights/student.run')"
