#!/usr/bin/env bash
# Install PyTorch's CPU build into the environment of the python given as $1, unless it has a torch already
# (a CUDA build installed first is kept). On plain PyPI `torch==2.13.0` is the CUDA build (nvidia-* packages
# and triton, several GB), so the CPU wheel comes from PyTorch's own index, with PyPI for its dependencies.
# Where that index cannot be reached within a few seconds (a machine behind a PyPI mirror), this falls back
# at once to `torch==2.13.0` from the configured package index.
set -euo pipefail
PY="$1"
TORCH_VERSION=2.13.0
CPU_INDEX="${EDITFORGE_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
"$PY" -c "import torch" 2>/dev/null && exit 0
pip=("$PY" -m pip install --quiet --disable-pip-version-check)
reachable() {
  "$PY" - "$1" <<'PROBE'
import sys
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()
except Exception:
    sys.exit(1)
PROBE
}
if reachable "$CPU_INDEX"; then
  "${pip[@]}" --index-url "$CPU_INDEX" --extra-index-url https://pypi.org/simple "torch==$TORCH_VERSION+cpu"
else
  echo "setup: $CPU_INDEX cannot be reached; installing torch==$TORCH_VERSION from the configured package index" \
       "(a CPU build only if that index serves one: on plain PyPI it is the CUDA build)" >&2
  "${pip[@]}" "torch==$TORCH_VERSION"
fi
