#!/usr/bin/env bash
# Full-size benchmarks on one GPU (H100/H200, 80 GB+): the real Qwen-Image architectures with random
# weights, built on the GPU (no download). Appends tables to docs/benchmarks.md, JSON to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
EF="${EDITFORGE:-editforge}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee bench/results/gpu.txt
# one process: the seed configuration is the baseline of the "vs seed" column, fast the one fp8 is compared to
$EF bench infer --size full --json bench/results/infer.json --markdown docs/benchmarks.md
$EF bench train --size full --json bench/results/train.json --markdown docs/benchmarks.md
