#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers (pytest-xdist), one per core of the 2-core CI machine, each test module on one worker (its
# module fixtures, e.g. the local Ray cluster, start once); EDITFORGE_TEST_WORKERS=N or =0 (no xdist) to change.
exec .venv/bin/python -m pytest -q -n "${EDITFORGE_TEST_WORKERS:-2}" --dist loadscope "$@"
