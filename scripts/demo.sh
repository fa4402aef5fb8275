#!/usr/bin/env bash
# Set up, write a synthetic dogs-vs-cats download, and run prep's main job on it from data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p data
cd data
if [ ! -d dogsandcats ]; then
    prep sample dogsandcats --n 500
fi
prep split dogsandcats
# The next steps of the flow find the dataset through data/.prep/workspace.json:
for step in stats "train --plugin resnet-finetune"; do
    if prep ${step%% *} --help >/dev/null 2>&1; then
        prep $step
    else
        echo "prep $step is not built yet; the dataset is ready in data/dogsandcats"
    fi
done
