#!/usr/bin/env bash
# The full-scale pixel-subset experiments of the paper (Tables 1 and S1, §4.1–4.2) for one
# GPU machine (DEVICE=cuda) or a Ray cluster (EXECUTOR=ray ADDRESS=auto). Not run on the
# 2-CPU development machine (see scripts/pixel_subsets_cpu.sh for the CPU-scale chain).
# Every step resumes where it stopped: rerun the script after any interruption.
#   RUN=runs/paper DEVICE=cuda METHOD="--method adaptive --head gradient" scripts/pixel_subsets_full.sh
set -euo pipefail
RUN=${RUN:-runs/paper}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python}
METHOD=${METHOD:---method exact}          # the paper: exact BackSelect; see docs/concepts/methods.md
EXECUTOR=(--executor ${EXECUTOR:-local})
[ -n "${ADDRESS:-}" ] && EXECUTOR+=(--address $ADDRESS --gpus-per-task ${GPUS_PER_TASK:-0.25})
SEEDS=0,1,2,3,4
RES=$RUN/results.csv
TESTS=(cifar10-test cifar10.1 cifar10c-sample)
KEYS=(cifar10:test cifar10.1:v6 cifar10c:sample)

for arch in resnet20 resnet18 vgg16_bn; do
  # 1. the original models: five seeds on full images with the paper's recipe
  $PY -m overinterp train --arch $arch --data cifar10:train --test-data cifar10:test --replicates 5 \
      --out $RUN/models/full --device $DEVICE --results $RES --download "${EXECUTOR[@]}"
  ORIG=$RUN/models/full/$arch-seed0/model.pt
  for t in "${!TESTS[@]}"; do
    $PY -m overinterp evaluate --model $ORIG --dataset ${TESTS[$t]} --results $RES --experiment original
  done
  # 2. backward selection with seed 0's model on all training and test images
  for ds in cifar10-train "${TESTS[@]}"; do
    $PY -m overinterp backselect-dataset --model $ORIG --dataset $ds $METHOD --device $DEVICE --batch-size 4096 \
        --shard-size 250 --out $RUN/jobs/$arch-$ds "${EXECUTOR[@]}"
  done
  # 3. the original model on its own 5% BS, random and mask-only subsets, with the confidence drop
  for t in "${!TESTS[@]}"; do
    $PY -m overinterp subsets evaluate --job $RUN/jobs/$arch-${TESTS[$t]} --kinds full,bs,random,mask \
        --dataset-key ${KEYS[$t]} --results $RES --experiment original
  done
  # 4. Table 1 (--augment none) and Table S1 (joint: image and mask cropped/flipped together every epoch;
  #    once: the authors' pipeline, cropped/flipped once with the unaugmented mask): five new models per kind.
  #    Random subsets: training masks seeded 1234, test masks 5678 (the authors' seeds).
  TJ=(); for t in "${!TESTS[@]}"; do TJ+=(--test-job $RUN/jobs/$arch-${TESTS[$t]}=${KEYS[$t]}); done
  for kind in bs random mask; do
    for aug in none joint once; do
      $PY -m overinterp subsets train --train-job $RUN/jobs/$arch-cifar10-train "${TJ[@]}" --kind $kind \
          --arch $arch --seeds $SEEDS --augment $aug --out $RUN/models/subsets --device $DEVICE --results $RES
    done
  done
  # 5. ranking-artefact control: exact backward selection ranked by probability, as the original pipeline
  for ds in cifar10-train cifar10-test; do
    $PY -m overinterp backselect-dataset --model $ORIG --dataset $ds --method exact --rank-by probability \
        --device $DEVICE --batch-size 4096 --shard-size 250 --out $RUN/jobs/$arch-$ds-prob "${EXECUTOR[@]}"
  done
  $PY -m overinterp subsets evaluate --job $RUN/jobs/$arch-cifar10-test-prob --kinds full,bs --dataset-key cifar10:test \
      --results $RES --experiment ranking-control
  $PY -m overinterp subsets train --train-job $RUN/jobs/$arch-cifar10-train-prob \
      --test-job $RUN/jobs/$arch-cifar10-test-prob=cifar10:test --kind bs --arch $arch --seeds $SEEDS \
      --out $RUN/models/subsets-prob --device $DEVICE --results $RES --experiment ranking-control
  $PY -m overinterp subsets compare $RUN/jobs/$arch-cifar10-test $RUN/jobs/$arch-cifar10-test-prob --out $RUN/ranking/$arch
done
# 6. transfer between the three architectures' subsets and SIS (τ = 0.99)
$PY -m overinterp subsets transfer --jobs $RUN/jobs/{resnet20,resnet18,vgg16_bn}-cifar10-test --threshold 0.99 \
    --dataset-key cifar10:test --results $RES
# 7. Table 1's ensemble row as in the paper: 5×ResNet18 trained on FULL images, evaluated on full test images
#    and on 5% random test subsets (paper: 96.15% and 9.98% on CIFAR-10)
$PY -m overinterp ensemble --out $RUN/models/resnet18x5-full.json $RUN/models/full/resnet18-seed{0,1,2,3,4}/model.pt
#    and another quantity, not the paper's row: 5×ResNet18 trained on random 5% training subsets, on random 5% test subsets
$PY -m overinterp ensemble --out $RUN/models/resnet18x5-random5.json \
    $RUN/models/subsets/resnet18-random5-noaug-seed{0,1,2,3,4}/model.pt
for t in "${!TESTS[@]}"; do
  $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet18-${TESTS[$t]} --model $RUN/models/resnet18x5-full.json \
      --name ensemble:resnet18x5 --kinds full,random --dataset-key ${KEYS[$t]} --results $RES --experiment table1
  $PY -m overinterp subsets evaluate --job $RUN/jobs/resnet18-${TESTS[$t]} --model $RUN/models/resnet18x5-random5.json \
      --name ensemble:resnet18x5-random5-trained --train-on random5 --kinds random --dataset-key ${KEYS[$t]} \
      --results $RES --experiment ensemble-random5-trained
done
$PY -m overinterp table $RES
