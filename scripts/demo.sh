#!/usr/bin/env bash
# Quickstart: set up (idempotent), write a demo workbook, and fill it with the tiny offline Edit-2509
# model + its Lightning LoRA, end to end on the CPU. Run it again: nothing is generated twice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DEMO="${1:-demo-out}"
[ -f "$DEMO/demo.xlsx" ] || .venv/bin/editforge demo "$DEMO" --quiet
.venv/bin/editforge synth "$DEMO/demo.xlsx" --model tiny-qwen-image-edit-2509 --lightning 8 --seed 0
# what came out, checked and exported for a trainer (DiffSynth-Studio's layout for Edit-2509)
.venv/bin/editforge dataset check "$DEMO/demo.xlsx" --instruction-column edit_prompt
.venv/bin/editforge dataset export "$DEMO/demo.xlsx" --format diffsynth --out "$DEMO/export-diffsynth"
echo "Done. Open $DEMO/demo.xlsx: the generated images are under $DEMO/generated/."
echo "(The tiny model has random weights, so its pictures are noise whatever the inputs: the demo shows the"
echo " workflow. With a GPU and the real model, run the same synth command with --model qwen-image-edit-2509.)"
