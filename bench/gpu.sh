#!/usr/bin/env bash
# Full-size benchmarks on one GPU (H100/H200, 80 GB+): the real Qwen-Image architectures with random
# weights, built on the GPU (no download). Appends tables to docs/benchmarks.md, JSON to bench/results/.
# Each configuration runs in its own process, so one that runs out of memory does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
EF="${EDITFORGE:-editforge}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee bench/results/gpu.txt
for config in seed bf16-fused fast fast-fp8; do
  $EF bench infer --size full --configs "$config" --json "bench/results/infer-$config.json" --markdown docs/benchmarks.md
done
$EF bench train --size full --json bench/results/train.json --markdown docs/benchmarks.md
