#!/usr/bin/env bash
# Create .venv (once) and install prep, its pinned torch/torchvision pair and the test tools.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 \
    | grep -v "^WARNING: Location .* is ignored" || true
.venv/bin/python -c "import prep, torch, torchvision" || { echo "setup failed: prep does not import" >&2; exit 1; }
