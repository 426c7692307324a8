#!/usr/bin/env bash
# One-call GPU check: the paper-size scoring and training on one GPU, every figure into one file (under 8 minutes on
# an H100/H200-class GPU). From the repository root:
#   bash benchmarks/gpu_check.sh [OUT_FILE]          (default gpu_check.txt)
# What it runs (each figure is on MADE (synthetic) data or random inputs, and says so):
#   1. benchmarks.scoring_speed, the paper preset with RANDOM weights at the paper's timesteps (range(75, 200), stride 1)
#      on a 155-slice made study: seconds per study, pairs per second, the share of the device's bf16 peak and
#      peak memory; the fast path against the authors' procedure in fp32 and bf16; a sweep of pairs per call;
#   2. benchmarks.training_speed, training throughput of the paper preset in bf16 autocast and fp32.
# DEVICE, PRESET, T_STRIDE, BATCH_SIZES, TRAIN_BATCH and PYTHON may be set to try it elsewhere (e.g. a CPU smoke
# run: DEVICE=cpu PRESET=tiny T_STRIDE=25 BATCH_SIZES=4 TRAIN_BATCH=2 bash benchmarks/gpu_check.sh /tmp/check.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.txt}
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
T_STRIDE=${T_STRIDE:-1}
BATCH_SIZES=${BATCH_SIZES:-64,128,256,512,1024}
TRAIN_BATCH=${TRAIN_BATCH:-64}
export ANDI_PROGRESS=0
{
  echo "# benchmarks/gpu_check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "$DEVICE")"
  echo "# $($PYTHON -c 'import torch, monai; print("torch", torch.__version__, "cuda", torch.version.cuda, "monai", monai.__version__)')"
  echo
  echo "## 1. scoring: $PRESET preset, random weights, stride $T_STRIDE"
  timeout 330 "$PYTHON" -m benchmarks.scoring_speed --device "$DEVICE" --preset "$PRESET" --weights none \
    --t_stride "$T_STRIDE" --batch_size 256 --batch_sizes "$BATCH_SIZES" --strides ""
  echo
  echo "## 2. training throughput: $PRESET preset, batch $TRAIN_BATCH, fp32 and bf16 autocast (random inputs)"
  timeout 120 "$PYTHON" -m benchmarks.training_speed --device "$DEVICE" --presets "$PRESET" --batch_size "$TRAIN_BATCH" --steps 10
} 2>&1 | tee "$OUT"
echo "figures written to $OUT"
