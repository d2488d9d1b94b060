#!/usr/bin/env bash
# The pixel-subset chain (paper §4.1–4.2) at CPU scale, on the real data in ../shared/data:
# pretrained ResNet20, `fast` backward selection (the recommended faithful method; METHOD=... to
# change it) on the first TEST_IMAGES lossless CIFAR-10 test images and TRAIN_IMAGES training images
# (defaults 1,000 and 4,000: all the npz holds), the original-model rows, then at that scale and the
# same budget for every row (EPOCHS, SEEDS): the same-scale baseline (ResNet20 trained on the same full
# training images, tested on the same test images), retraining on BS / random / mask-only subsets,
# BS and random with Table S1's augmentation, the ensemble row as in the paper (the baseline's
# full-image models, on full and 5%-random test images), transfer between two architectures
# (the pretrained ResNet20 and TRANSFER_MODEL, default the VGG-style model of the frontier benchmark,
# skipped when absent), the ranking-artefact control on exact 2x2-patch subsets (RANK_IMAGES) and an
# optional per-pixel exact anchor (EXACT_IMAGES, default 0). Every step prints its wall time.
# Random subsets: training masks seeded 1234, test masks 5678 (the authors' seeds). AUG_MODES="joint
# once" adds the authors' Table S1 augmentation (each image cropped/flipped once, its unaugmented mask
# applied unmoved). Every job resumes; rerunning the script redoes nothing finished (rows appended
# twice are harmless: the table keeps the latest row per model, dataset and seed). Usage:
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
RANK_IMAGES=${RANK_IMAGES:-16}
SEEDS=${SEEDS:-0,1,2,3,4}
TEST_IMAGES=${TEST_IMAGES:-1000}
TRAIN_IMAGES=${TRAIN_IMAGES:-4000}
EPOCHS=${EPOCHS:-8}
step() { local name=$1; shift; local t0=$(date +%s.%N); echo "== $name: $*" >&2; "$@"; echo "== $name took $(echo "$(date +%s.%N) - $t0" | bc) s" >&2; }
mkdir -p "$RUN"
step bs-test $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --method ${METHOD:-fast} \
  --limit $TEST_IMAGES --shard-size 20 --threads $T --out $RUN/jobs/resnet20-test --no-progress
step bs-train $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:train --method ${METHOD:-fast} \
  --limit $TRAIN_IMAGES --shard-size 20 --threads $T --out $RUN/jobs/resnet20-train --no-progress
step original $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-test --name resnet20-pretrained --kinds full,bs,random,mask \
  --results $RES "${KEY[@]}" --experiment original --threads $T
# same-scale baseline: full -> full, the same recipe, epochs and seeds as every retraining row, on the
# same first TRAIN_IMAGES training images, tested on the same first TEST_IMAGES test images
FULL=()
for seed in ${SEEDS//,/ }; do
  step full-seed$seed $PY -m overinterp train --arch resnet20 --recipe fast --epochs $EPOCHS --seed $seed \
    --data $NPZ:train --limit $TRAIN_IMAGES --out $RUN/models/full-seed$seed --threads $T --no-progress
  step eval-full-seed$seed $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-test \
    --model $RUN/models/full-seed$seed/model.pt --name resnet20 --train-on full --kinds full --results $RES "${KEY[@]}" \
    --experiment baseline --threads $T
  FULL+=("$RUN/models/full-seed$seed/model.pt")
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
# Table 1's ensemble row as in the paper: the baseline's full-image models, mean of logits
step ensemble-full $PY -m overinterp ensemble --out $RUN/models/ensemble-full.json "${FULL[@]}"
step ensemble-row $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-test --model $RUN/models/ensemble-full.json \
  --name ensemble-full --kinds full,random --results $RES "${KEY[@]}" --experiment table1 --threads $T
# ranking-artefact control: exact backward selection over 2x2-pixel patches, log-odds vs probability ranking
for rank in logodds probability; do
  step exact-$rank $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --limit $RANK_IMAGES \
    --method exact --rank-by $rank --patch 2 --shard-size 4 --threads $T --out $RUN/jobs/resnet20-exact2x2-$rank --no-progress
  step eval-exact-$rank $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-exact2x2-$rank --name resnet20-pretrained --kinds full,bs \
    --results $RES --dataset-key "cifar10:test[:$RANK_IMAGES]" --experiment ranking-control --threads $T
done
step compare $PY -m overinterp subsets compare $RUN/jobs/resnet20-exact2x2-logodds $RUN/jobs/resnet20-exact2x2-probability \
  --out $RUN/ranking
# transfer between two different architectures: the pretrained ResNet20 and TRANSFER_MODEL (default the
# VGG-style model bench/frontier.py trains on the shared JPEG set), on the same test images
TRANSFER_MODEL=${TRANSFER_MODEL:-runs/anchors/vgg_small-jpeg/model.pt}
if [ -f "$TRANSFER_MODEL" ]; then
  step bs-test-transfer $PY -m overinterp backselect-dataset --model $TRANSFER_MODEL --dataset $NPZ:test --method ${METHOD:-fast} \
    --limit $TEST_IMAGES --shard-size 20 --threads $T --out $RUN/jobs/transfer-test --no-progress
  step transfer $PY -m overinterp subsets transfer --jobs $RUN/jobs/resnet20-test $RUN/jobs/transfer-test \
    --names resnet20-pretrained "$(basename "$(dirname "$TRANSFER_MODEL")")" --threshold 0.99 --results $RES "${KEY[@]}" --threads $T
else
  echo "== transfer skipped: no model at $TRANSFER_MODEL (TRANSFER_MODEL=...)" >&2
fi
# exact anchor: per-pixel exact backward selection on a few images (about 10 minutes each on one core)
if [ "${EXACT_IMAGES:-0}" -gt 0 ]; then
  step exact-anchor $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --limit $EXACT_IMAGES \
    --method exact --shard-size 1 --threads $T --out $RUN/jobs/resnet20-exact-pixels --no-progress
fi
step table $PY -m overinterp table $RES
