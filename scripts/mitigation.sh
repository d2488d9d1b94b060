#!/usr/bin/env bash
# Input dropout as a mitigation of overinterpretation (paper §4.4, beside the ensemble row of Table 1),
# at CPU scale on the data in ../shared/data: one architecture (ARCH, default resnet20) trained with and without input dropout
# on N_TRAIN JPEG CIFAR-10 training images (a seeded random draw), per seed; test accuracy on the 1,000
# lossless test images and the mean SIS size at tau = 0.99 (Fast backward selection, FindSIS
# re-verified) on the first SIS_IMAGES of them, with K > 0 also through the inference-time dropout
# wrapper. Training: the fast recipe for EPOCHS epochs without label smoothing (which would cap the
# confidence below tau) and, by default, without crop/flip (AUGMENT=1 adds them), so that input dropout
# is the only augmentation and the small model is confident enough to have SIS at tau = 0.99.
# INIT=CKPT (with PREPROCESSING=imagenet for the public ResNet20 weights; LR= a smaller peak rate) fine-tunes both models from
# the same pretrained weights instead of training from scratch: confident models, so that SIS at
# tau = 0.99 exist to compare. Rows go to RUN_DIR/results.csv (experiment "mitigation"); rerunning
# resumes the trained models.
#   scripts/mitigation.sh RUN_DIR          # defaults below; e.g. RATE=0.3 SEEDS=0,1,2 scripts/mitigation.sh runs/mit
set -euo pipefail
RUN=${1:-runs/mitigation}
export RUN
export PY=${PY:-.venv/bin/python} DATA=${DATA:-../shared/data} ARCH=${ARCH:-resnet20} RATE=${RATE:-0.5}
export SEEDS=${SEEDS:-0} EPOCHS=${EPOCHS:-30} N_TRAIN=${N_TRAIN:-2000} SIS_IMAGES=${SIS_IMAGES:-16} K=${K:-4}
export TAU=${TAU:-0.99} THREADS=${THREADS:-1} AUGMENT=${AUGMENT:-0} INIT=${INIT:-} PREPROCESSING=${PREPROCESSING:-}
export LR=${LR:-}
export PYTHONUNBUFFERED=1
mkdir -p "$RUN"
t0=$(date +%s)
OMP_NUM_THREADS=$THREADS "$PY" - <<'EOF'
import os

import torch

from overinterp.data.specs import open_dataset
from overinterp.experiments.mitigation import input_dropout_mitigation
from overinterp.training.replicates import select_training_images

e = os.environ
torch.set_num_threads(int(e["THREADS"]))
train = open_dataset(f"folder:train@{e['DATA']}/cifar10-jpeg.zip", progress=False)
train = select_training_images(train, None, int(e["N_TRAIN"]), subset_seed=0)  # the `train --subset` draw
test = open_dataset(f"{e['DATA']}/cifar10-lossless.npz:test", progress=False)
input_dropout_mitigation(
    train,
    test,
    rate=float(e["RATE"]),
    arch=e["ARCH"],
    seeds=[int(s) for s in e["SEEDS"].split(",")],
    recipe="fast",
    overrides={
        "epochs": int(e["EPOCHS"]),
        "label_smoothing": 0.0,
        "augment": e["AUGMENT"] == "1",
        "init_checkpoint": e["INIT"] or None,
        "preprocessing": e["PREPROCESSING"] or None,
        "lr": float(e["LR"]) if e["LR"] else None,
    },
    out_dir=f"{e['RUN']}/models",
    threshold=float(e["TAU"]),
    sis_images=int(e["SIS_IMAGES"]),
    inference_samples=int(e["K"]),
    dataset_key="cifar10:test[:1000]",
    results=f"{e['RUN']}/results.csv",
    progress=False,
)
EOF
echo "== mitigation took $(( $(date +%s) - t0 )) s" >&2
"$PY" -m overinterp table "$RUN/results.csv" --experiment mitigation
"$PY" -m overinterp table "$RUN/results.csv" --experiment mitigation --metric sis_size_mean
