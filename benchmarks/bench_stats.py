"""prep stats against the usual mean/std recipe, on the same JPEGs, in one run.

The usual recipe: torchvision ImageFolder + ToTensor + DataLoader (batch size 1, since the
images differ in size), averaging each image's mean and std. It is slow (a float tensor
per image) and wrong for std (an average of per-image stds is not the std of all pixels).

Prints seconds, images/s, the speed-up of prep's exact and --fast modes, and the error of
each against prep's exact figures.

Usage: python benchmarks/bench_stats.py [--per-class 1000] [--workers 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _dataset import build_split_dataset  # noqa: E402


def usual_recipe(root: Path, workers: int) -> tuple[list[float], list[float], float]:
    import torch
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(str(root / "train"), transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=workers)
    began = time.perf_counter()
    mean = torch.zeros(3, dtype=torch.float64)
    std = torch.zeros(3, dtype=torch.float64)
    for images, _ in loader:
        flat = images.view(images.size(0), 3, -1)
        mean += flat.mean(2).sum(0).double()
        std += flat.std(2).sum(0).double()
    seconds = time.perf_counter() - began
    return (mean / len(dataset)).tolist(), (std / len(dataset)).tolist(), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--data", type=Path, default=None, help="reuse a dataset folder")
    args = parser.parse_args()
    from prep.stats.dataset_stats import compute_dataset_stats

    with tempfile.TemporaryDirectory(prefix="bench_stats_") as tmp:
        root = build_split_dataset(args.data or Path(tmp) / "data", args.per_class)
        images = sum(1 for _ in (root / "train").rglob("*.jpg"))
        print(f"{images} JPEGs, {args.workers} workers")
        base_mean, base_std, base_s = usual_recipe(root, args.workers)
        began = time.perf_counter()
        exact = compute_dataset_stats(root, workers=args.workers)
        exact_s = time.perf_counter() - began
        began = time.perf_counter()
        fast = compute_dataset_stats(root, workers=args.workers, fast=True)
        fast_s = time.perf_counter() - began

    def worst(values, reference):
        return max(abs(v - r) / r for v, r in zip(values, reference)) * 100

    print(f"{'':34s} {'seconds':>8s} {'images/s':>9s} {'speed-up':>9s} {'mean err':>9s} {'std err':>9s}")
    rows = [
        ("usual recipe (ImageFolder+ToTensor)", base_s, base_mean, base_std),
        ("prep stats (exact)", exact_s, exact["mean"], exact["std"]),
        ("prep stats --fast", fast_s, fast["mean"], fast["std"]),
    ]
    for name, seconds, mean, std in rows:
        print(f"{name:34s} {seconds:8.2f} {images / seconds:9.0f} {base_s / seconds:8.1f}x "
              f"{worst(mean, exact['mean']):8.3f}% {worst(std, exact['std']):8.2f}%")
    print(f"exact mean {['%.5f' % v for v in exact['mean']]} std {['%.5f' % v for v in exact['std']]}")
    print("targets: exact >= 10x, --fast >= 20x; --fast mean within 0.1%, std within 1%")


if __name__ == "__main__":
    main()
