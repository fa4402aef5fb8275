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
# The next steps find the dataset through data/.prep/workspace.json: no arguments needed.
prep stats
prep augment --preset medium --out preview.png
# The trainer's own recipe (AdamW, cosine with warmup, label smoothing); small images and two
# epochs, so that the demo takes a minute or two on a CPU. The sample's synthetic pictures
# gain nothing from ImageNet's weights, and the demo must run offline: --weights none (the
# trainer's default, imagenet, downloads torchvision's weights once).
prep train --plugin resnet-finetune --weights none --image-size 96 --epochs 2 --batch-size 32
