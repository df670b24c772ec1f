#!/usr/bin/env bash
# One-shot check of every GPU path (vLLM vs HF, bf16 training of every method, chunked losses, vLLM weight sync
# with and without LoRA, 2-GPU DDP): prints a pass/fail/skip table and writes results/benchmarks/gpu-check.{md,json}.
# ≤ 8 min on one GPU. On a machine without CUDA every CUDA row is reported as skipped.
#   scripts/gpu-check.sh [--only NAME] [--out DIR] [--cache-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
exec "$PY" -m bench.gpu_check "$@"
