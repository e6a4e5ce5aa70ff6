#!/usr/bin/env bash
# Create .venv and install EditForge with everything its tests and demo need, on a CPU-only machine.
# A CUDA build instead: create .venv and install it there first (the README says how); it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, the CPU build: an open `torch` requirement would pull a multi-GB CUDA build.
bash scripts/install-torch.sh .venv/bin/python
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
# The review app's browser test drives the system Chromium (a browser download is never needed).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser test will be skipped" >&2
fi
