"""prep stats against the usual mean/std recipe, on the same JPEGs, in one run.

The usual recipe: torchvision ImageFolder + ToTensor + DataLoader (batch size 1, since the
images differ in size), averaging each image's mean and std. It is slow (a float tensor
per image) and wrong for std (an average of per-image stds is not the std of all pixels).

Prints seconds, images/s, the speed-up of prep's exact and --fast modes, the error of
each against prep's exact figures, and the peak memory of each (its process and workers,
PSS: see _peak.py). Each contender runs in its own process.

The images: ``prep sample``'s synthetic JPEGs (default), or with ``--photos`` real photos
(400 x 300 crops of scikit-image's photos, see _photos.py; ``pip install -e .[bench]``).

Usage: python benchmarks/bench_stats.py [--per-class 1000] [--photos 2000] [--workers 2] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _dataset import build_split_dataset  # noqa: E402
from _peak import run_measured  # noqa: E402
from _photos import photo_dataset  # noqa: E402


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


def contender(name: str, root: Path, workers: int) -> dict:
    """One contender's mean, std and seconds (run in its own process by ``main``)."""
    from prep.stats.dataset_stats import compute_dataset_stats

    if name == "usual":
        mean, std, seconds = usual_recipe(root, workers)
        return {"mean": mean, "std": std, "seconds": seconds}
    began = time.perf_counter()
    stats = compute_dataset_stats(root, workers=workers, fast=name == "fast")
    return {"mean": stats["mean"], "std": stats["std"], "seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=1000, help="synthetic JPEGs per class")
    parser.add_argument("--photos", type=int, default=0, help="use this many real photos instead")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--data", type=Path, default=None, help="reuse a dataset folder")
    parser.add_argument("--contender", choices=("usual", "exact", "fast"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(contender(args.contender, args.data, args.workers)))
        return

    with tempfile.TemporaryDirectory(prefix="bench_stats_") as tmp:
        folder = args.data or Path(tmp) / "data"
        root = photo_dataset(folder, args.photos) if args.photos else build_split_dataset(folder, args.per_class)
        images = sum(1 for _ in (root / "train").rglob("*.jpg"))
        print(f"{images} {'real photos' if args.photos else 'synthetic'} JPEGs, {args.workers} workers")
        results = {}
        for name in ("usual", "exact", "fast"):
            results[name] = run_measured([__file__, "--contender", name, "--data", str(root), "--workers", str(args.workers)])

    exact = results["exact"][0]

    def worst(values, reference):
        return max(abs(v - r) / r for v, r in zip(values, reference)) * 100

    base_s = results["usual"][0]["seconds"]
    print(f"{'':34s} {'seconds':>8s} {'images/s':>9s} {'speed-up':>9s} {'mean err':>9s} {'std err':>9s} {'peak memory':>12s}")
    labels = {"usual": "usual recipe (ImageFolder+ToTensor)", "exact": "prep stats (exact)", "fast": "prep stats --fast"}
    for name, (result, peak) in results.items():
        seconds = result["seconds"]
        print(f"{labels[name]:34s} {seconds:8.2f} {images / seconds:9.0f} {base_s / seconds:8.1f}x "
              f"{worst(result['mean'], exact['mean']):8.3f}% {worst(result['std'], exact['std']):8.2f}% {peak / 1e6:9.0f} MB")
    print(f"exact mean {['%.5f' % v for v in exact['mean']]} std {['%.5f' % v for v in exact['std']]}")
    print("targets: exact >= 10x, --fast >= 20x; --fast mean within 0.1%, std within 1%")


if __name__ == "__main__":
    main()
