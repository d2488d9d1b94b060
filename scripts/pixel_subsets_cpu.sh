#!/usr/bin/env bash
# The pixel-subset chain (paper §4.1–4.2) at CPU scale, on the real data in ../shared/data:
# pretrained ResNet20, `fast` backward selection (the recommended faithful method; METHOD=... to
# change it) on the 1,000 lossless CIFAR-10 test images and 4,000 training images (TEST_IMAGES,
# TRAIN_IMAGES cap them), the original-model rows, the same-scale baseline (ResNet20 trained on the
# same full training images for the same epochs and seeds), a short retraining on BS / random / mask-only subsets, transfer, the ranking-artefact control
# and an exact anchor. Every step prints its wall time. Random subsets: training masks seeded
# 1234, test masks 5678 (the authors' seeds). AUG_MODES="joint once" adds the authors' Table S1
# augmentation (each image cropped/flipped once, its unaugmented mask applied unmoved).
# FULL_MODELS="a/model.pt b/model.pt …" (models trained on full images) adds Table 1's ensemble row
# as in the paper: their ensemble on the full test images and on 5% random test subsets. Usage:
#   scripts/pixel_subsets_cpu.sh RUN_DIR [THREADS]
set -euo pipefail
RUN=${1:-runs/paper-cpu}
T=${2:-1}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
NPZ=$DATA/cifar10-lossless.npz
MODEL=(--model resnet20 --checkpoint $DATA/models/resnet20-cifar10.th --preprocessing imagenet)
RES=$RUN/results.csv
KEY=(--dataset-key cifar10:test)
SEEDS=${SEEDS:-0,1,2}
EPOCHS=${EPOCHS:-8}
step() { local name=$1; shift; local t0=$(date +%s.%N); echo "== $name: $*" >&2; "$@"; echo "== $name took $(echo "$(date +%s.%N) - $t0" | bc) s" >&2; }
mkdir -p "$RUN"
step bs-test $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --method ${METHOD:-fast} \
  --limit ${TEST_IMAGES:-1000} --shard-size 20 --threads $T --out $RUN/jobs/resnet20-test --no-progress
step bs-train $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:train --method ${METHOD:-fast} \
  --limit ${TRAIN_IMAGES:-4000} --shard-size 20 --threads $T --out $RUN/jobs/resnet20-train --no-progress
step original $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-test --kinds full,bs,random,mask \
  --results $RES "${KEY[@]}" --experiment original --threads $T
# same-scale baseline: full -> full, the same recipe, epochs and seeds as every retraining row, on all the npz's
# training images (= the BS training job's with the default TRAIN_IMAGES) and all its test images
for seed in ${SEEDS//,/ }; do
  step full-seed$seed $PY -m overinterp train --arch resnet20 --recipe fast --epochs $EPOCHS --seed $seed \
    --data $NPZ:train --out $RUN/models/full-seed$seed --threads $T
  step eval-full-seed$seed $PY -m overinterp evaluate --model $RUN/models/full-seed$seed/model.pt --dataset $NPZ:test \
    --results $RES --threads $T
done
for kind in bs random mask; do
  step retrain-$kind $PY -m overinterp subsets train --train-job $RUN/jobs/resnet20-train --test-job $RUN/jobs/resnet20-test=cifar10:test \
    --kind $kind --arch resnet20 --recipe fast --epochs $EPOCHS --seeds $SEEDS --out $RUN/models --results $RES \
    --threads $T --no-progress
done
for aug in ${AUG_MODES:-joint}; do
  for kind in bs random; do
    step retrain-$kind-aug-$aug $PY -m overinterp subsets train --train-job $RUN/jobs/resnet20-train \
      --test-job $RUN/jobs/resnet20-test=cifar10:test --kind $kind --arch resnet20 --recipe fast --epochs $EPOCHS \
      --seeds $SEEDS --augment $aug --out $RUN/models --results $RES --threads $T --no-progress
  done
done
if [ -n "${FULL_MODELS:-}" ]; then
  # shellcheck disable=SC2086  # FULL_MODELS is a list of paths
  step ensemble-full $PY -m overinterp ensemble --out $RUN/models/ensemble-full.json $FULL_MODELS
  step ensemble-row $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-test --model $RUN/models/ensemble-full.json \
    --name ensemble-full --kinds full,random --results $RES "${KEY[@]}" --experiment table1 --threads $T
fi
# ranking-artefact control: exact backward selection over 2x2-pixel patches, log-odds vs probability ranking
for rank in logodds probability; do
  step exact-$rank $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --limit ${RANK_IMAGES:-16} \
    --method exact --rank-by $rank --patch 2 --shard-size 4 --threads $T --out $RUN/jobs/resnet20-exact2x2-$rank --no-progress
  step eval-exact-$rank $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-exact2x2-$rank --kinds full,bs \
    --results $RES --dataset-key "cifar10:test[:${RANK_IMAGES:-16}]" --experiment ranking-control --threads $T
done
step compare $PY -m overinterp subsets compare $RUN/jobs/resnet20-exact2x2-logodds $RUN/jobs/resnet20-exact2x2-probability \
  --out $RUN/ranking
# transfer between two different models: the pretrained ResNet20 and one trained here for 4 epochs on JPEG
# (set JPEG_MODEL to its model.pt; skipped when absent)
if [ -n "${JPEG_MODEL:-}" ] && [ -f "$JPEG_MODEL" ]; then
  step bs-test-jpeg $PY -m overinterp backselect-dataset --model $JPEG_MODEL --dataset $NPZ:test --method ${METHOD:-fast} \
    --limit ${TEST_IMAGES:-1000} --shard-size 20 --threads $T --out $RUN/jobs/resnet20jpeg-test --no-progress
  step transfer $PY -m overinterp subsets transfer --jobs $RUN/jobs/resnet20-test $RUN/jobs/resnet20jpeg-test \
    --names resnet20-pretrained resnet20-jpeg-fast --threshold 0.99 --results $RES "${KEY[@]}" --threads $T
fi
# exact anchor: per-pixel exact backward selection on a few images
step exact-anchor $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --limit ${EXACT_IMAGES:-2} \
  --method exact --shard-size 1 --threads $T --out $RUN/jobs/resnet20-exact-pixels --no-progress
step table $PY -m overinterp table $RES
