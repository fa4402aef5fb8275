#!/usr/bin/env bash
# Create .venv (once) and install prep, its pinned torch/torchvision pair and the test tools.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

# The CUDA build of torch with its nvidia-* wheels takes about 6 GB once unpacked. A disk that
# fills half-way leaves a venv whose torch fails to import with a baffling "marshal data too
# short", so check first and say what is wrong.
need_gb=8
free_gb() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1024 / 1024) }'; }
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, torchvision" 2>/dev/null; }; then
    for place in . "${TMPDIR:-/tmp}"; do
        have=$(free_gb "$place")
        if [ "$have" -lt "$need_gb" ]; then
            echo "setup: installing torch needs about ${need_gb} GB free; $(cd "$place" && pwd) has ${have} GB" >&2
            exit 1
        fi
    done
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup failed: pip could not install prep's dependencies (see above)" >&2
    exit 1
fi
# pip warns about an ignored location on some machines; that line is noise here.
grep -v "^WARNING: Location .* is ignored" "$log" || true
.venv/bin/python -c "import prep, torch, torchvision" || {
    echo "setup failed: prep does not import; remove .venv and run this script again" >&2
    exit 1
}
