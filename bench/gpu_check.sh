#!/usr/bin/env bash
# One-GPU check of overinterp's CUDA paths, in under 8 minutes; prints one summary table.
#
#   1. tests   the tests that skip without CUDA (pytest -k "cuda or device")
#   2. ratio   engine vs raw forward: float32 and bf16, best batch of 256/1024/4096, channels-last,
#              also with the CUDA-graph forward (bench/backselect.py --device cuda)
#   3. fast    Fast() on 64 CIFAR-10 test images, pretrained ResNet20: seconds per image
#   4. train   training throughput, 2 × 200 steps of batch 128 (bench/train.py)
#   5. ray     backselect-dataset --executor ray with one GPU task
#
# Fail-soft: a step that fails (or runs past its time) prints "FAILED: reason" in its row
# and the script goes on; the exit code is the number of failed steps.
#
# Usage:  bench/gpu_check.sh [--cpu-smoke] [--out DIR]
#   --cpu-smoke  every step at tiny sizes on the CPU (tests the script without a GPU)
#   PY=python    the interpreter (default .venv/bin/python, else python3)
#   GPU_CHECK_BUDGET=450  seconds for all steps together (each also has its own limit)
set -u
cd "$(dirname "$0")/.."

SMOKE=""
OUT=/tmp/overinterp-gpu-check
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) SMOKE="--cpu-smoke" ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (--cpu-smoke, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET:-450}
START=$(date +%s)
ROWS=()
FAILED=0

# step NAME LIMIT_SECONDS: run `gpu_check.py NAME`, keep its ROW (or its FAILED reason)
step() {
    local name=$1 limit=$2 left t0 rc row secs
    left=$(( BUDGET - ($(date +%s) - START) ))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then
        ROWS+=("$name|-|FAILED: no time left in the ${BUDGET} s budget")
        FAILED=$((FAILED + 1))
        return
    fi
    echo "== $name (limit ${limit} s)"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$PY" bench/gpu_check.py "$name" $SMOKE --out "$OUT" > "$OUT/$name.out" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    row=$(grep '^ROW: ' "$OUT/$name.out" | tail -n 1 | cut -c6-)
    if [ "$rc" -ne 0 ] || [ -z "$row" ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            row="FAILED: timed out after ${limit} s (log: $OUT/$name.out)"
        else
            row=$(grep '^FAILED: ' "$OUT/$name.out" | tail -n 1)
            [ -z "$row" ] && row="FAILED: exit code $rc: $(grep -v '^\s*$' "$OUT/$name.out" | tail -n 1 | cut -c1-200)"
        fi
        FAILED=$((FAILED + 1))
    fi
    echo "   $row"
    ROWS+=("$name|${secs}|$row")
}

echo "overinterp GPU check${SMOKE:+ (CPU smoke)}: $($PY -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>&1 | tail -n 1)"
step tests 100
step ratio 130
step fast 80
step train 70
step ray 90

echo
echo "summary ($(( $(date +%s) - START )) s; logs in $OUT)"
printf '%-6s | %5s | %s\n' step s result
printf '%-6s-+-%5s-+-%s\n' ------ ----- ------------------------------------------------------------
for r in "${ROWS[@]}"; do
    IFS='|' read -r name secs row <<< "$r"
    printf '%-6s | %5s | %s\n' "$name" "$secs" "$row"
done
exit "$FAILED"
