#!/usr/bin/env bash
# The pixel-subset chain (paper §4.1–4.2) at CPU scale, on the real data in ../shared/data:
# pretrained ResNet20, Batched Gradient (k=8) backward selection on the 1,000 lossless
# CIFAR-10 test images and 4,000 training images, the original-model rows, a short
# retraining on BS / random / mask-only subsets, transfer, the ranking-artefact control
# and an exact anchor. Every step prints its wall time. Usage:
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
step bs-test $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --method gradient --k 8 \
  --shard-size 100 --threads $T --out $RUN/jobs/resnet20-test --no-progress
step bs-train $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:train --method gradient --k 8 \
  --shard-size 200 --threads $T --out $RUN/jobs/resnet20-train --no-progress
step original $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet20-test --kinds full,bs,random,mask \
  --results $RES "${KEY[@]}" --experiment original --threads $T
for kind in bs random mask; do
  step retrain-$kind $PY -m overinterp subsets train --train-job $RUN/jobs/resnet20-train --test-job $RUN/jobs/resnet20-test=cifar10:test \
    --kind $kind --arch resnet20 --recipe fast --epochs $EPOCHS --seeds $SEEDS --out $RUN/models --results $RES \
    --threads $T --no-progress
done
for kind in bs random; do
  step retrain-$kind-aug $PY -m overinterp subsets train --train-job $RUN/jobs/resnet20-train --test-job $RUN/jobs/resnet20-test=cifar10:test \
    --kind $kind --arch resnet20 --recipe fast --epochs $EPOCHS --seeds $SEEDS --augment --out $RUN/models --results $RES \
    --threads $T --no-progress
done
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
  step bs-test-jpeg $PY -m overinterp backselect-dataset --model $JPEG_MODEL --dataset $NPZ:test --method gradient --k 8 \
    --shard-size 100 --threads $T --out $RUN/jobs/resnet20jpeg-test --no-progress
  step transfer $PY -m overinterp subsets transfer --jobs $RUN/jobs/resnet20-test $RUN/jobs/resnet20jpeg-test \
    --names resnet20-pretrained resnet20-jpeg-fast --threshold 0.99 --results $RES "${KEY[@]}" --threads $T
fi
# exact anchor: per-pixel exact backward selection on a few images
step exact-anchor $PY -m overinterp backselect-dataset "${MODEL[@]}" --dataset $NPZ:test --limit ${EXACT_IMAGES:-2} \
  --method exact --shard-size 1 --threads $T --out $RUN/jobs/resnet20-exact-pixels --no-progress
step table $PY -m overinterp table $RES
