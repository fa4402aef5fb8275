"""prep's training input pipeline against torchvision's, on the same JPEGs, in one run.

Baseline: torchvision ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip +
ToTensor + Normalize, float batches from the workers. prep: ClassificationDataset with the
same recipe in albumentations (and the ``medium`` preset), uint8 channels-last batches whose
float conversion and normalisation belong on the GPU (``to_device_normalized``). Throughput
is images per second out of the loader; a second prep row also pays for that conversion on
this CPU, to show what it would cost without a GPU.
Both use the same workers and batch size. Also printed: the pure decode throughput of the
same files with the same workers, the floor that no pipeline can beat.

Usage: python benchmarks/bench_loader.py [--per-class 1000] [--workers 2] [--batch-size 64] [--data DIR]
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

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class DecodeOnly:
    """A dataset that only decodes (prep's decoder), returning nothing to collate."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from prep.images import load_rgb

        return load_rgb(self.paths[index]).shape[0]


def throughput(loader, epochs: int, to_float=None) -> float:
    iterator_images = 0
    first = True
    began = time.perf_counter()
    for _ in range(epochs + 1):
        for batch in loader:
            if first:  # the first batch pays for starting the workers
                first = False
                began = time.perf_counter()
                continue
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            if to_float is not None:
                images = to_float(images)
            iterator_images += len(images)
    return iterator_images / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None, help="reuse a dataset folder")
    args = parser.parse_args()
    import albumentations as A
    import torch
    from torchvision import datasets, transforms

    from prep.augment.presets import build_pipeline
    from prep.data.collate import to_device_normalized
    from prep.data.datasets import ClassificationDataset
    from prep.data.loader import create_loader

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = build_split_dataset(args.data or Path(tmp) / "data", args.per_class)
        paths = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
        print(f"{len(paths)} JPEGs, {args.workers} workers, batch {args.batch_size}")
        baseline = datasets.ImageFolder(str(root / "train"), transform=transforms.Compose([
            transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD),
        ]))
        base_loader = torch.utils.data.DataLoader(baseline, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=True)
        same_recipe = A.Compose([A.RandomResizedCrop(size=(224, 224)), A.HorizontalFlip()], seed=0)
        rows = {}
        rows["torchvision ImageFolder + transforms"] = throughput(base_loader, args.epochs)
        normalize = lambda x: to_device_normalized(x, MEAN, STD, "cpu")  # noqa: E731
        for name, pipeline, to_float in (
            ("prep, same recipe (RRC 224 + flip)", same_recipe, None),
            ("prep, same recipe + CPU normalise", same_recipe, normalize),
            ("prep, medium preset", build_pipeline("medium", 224, train=True, seed=0), None),
        ):
            dataset = ClassificationDataset(root, "train", transform=pipeline)
            loader = create_loader(dataset, args.batch_size, train=True, workers=args.workers, seed=0)
            rows[name] = throughput(loader, args.epochs, to_float=to_float)
        decode = torch.utils.data.DataLoader(DecodeOnly(paths), batch_size=args.batch_size, num_workers=args.workers, collate_fn=len, persistent_workers=True)
        rows["decode only, prep's decoder (floor)"] = throughput_lengths(decode, args.epochs)
    base = rows["torchvision ImageFolder + transforms"]
    print(f"{'':38s} {'images/s':>9s} {'vs torchvision':>15s}")
    for name, rate in rows.items():
        print(f"{name:38s} {rate:9.0f} {rate / base:14.2f}x")
    print("target: prep >= 3x torchvision")


def throughput_lengths(loader, epochs: int) -> float:
    images, first = 0, True
    began = time.perf_counter()
    for _ in range(epochs + 1):
        for count in loader:
            if first:
                first = False
                began = time.perf_counter()
                continue
            images += count
    return images / (time.perf_counter() - began)


if __name__ == "__main__":
    main()
