"""Training throughput: prep's engine against the PyTorch book's loop, in one run.

Baseline: the book's ``train_model`` (the transfer-learning tutorial's loop): ImageFolder
with RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize, float batches from
the workers, plain fp32, SGD with momentum. prep: ``prep.train.prepare.train`` with the same
model (torchvision ResNet-18, new 2-class head, no pretrained weights), the same recipe
(``--recipe book``), the same augmentation (the ``light`` preset: the same crop and flip),
batch size and workers; on a GPU it adds what prep does by default there (bf16/fp16
autocast, channels_last, uint8 batches normalised on the device).

Both train for ``--epochs`` epochs; the figure is the images per second of the training
phase of the last epoch (the first pays for worker start-up and, on GPUs, cuDNN's
autotuning), validation excluded.

Usage: python benchmarks/bench_train.py [--per-class 500] [--image-size 64] [--batch-size 64]
       [--workers N] [--epochs 2] [--arch resnet18] [--device cpu|cuda] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def book_train_model(root: Path, args, device) -> float:
    """The book's loop, as users copy it; returns the last epoch's training images/s."""
    import torch
    import torchvision
    from torchvision import datasets, transforms

    size = args.image_size
    data_transforms = {
        "train": transforms.Compose([
            transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD),
        ]),
        "valid": transforms.Compose([
            transforms.Resize(size * 256 // 224), transforms.CenterCrop(size),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD),
        ]),
    }
    image_datasets = {x: datasets.ImageFolder(str(root / x), data_transforms[x]) for x in ("train", "valid")}
    dataloaders = {
        x: torch.utils.data.DataLoader(image_datasets[x], batch_size=args.batch_size, shuffle=x == "train", num_workers=args.workers)
        for x in ("train", "valid")
    }
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.arch, weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, len(image_datasets["train"].classes))
    model = model.to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    rate = 0.0
    for epoch in range(args.epochs):
        for phase in ("train", "valid"):
            model.train() if phase == "train" else model.eval()
            running_loss, running_corrects, seen = 0.0, 0, 0
            started = time.perf_counter()
            for inputs, labels in dataloaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
                seen += inputs.size(0)
            if phase == "train":
                scheduler.step()
                rate = seen / (time.perf_counter() - started)
            print(f"  book  epoch {epoch + 1} {phase}: loss {running_loss / seen:.4f} acc {running_corrects.double().item() / seen:.4f}")
    return rate


def prep_train(root: Path, args, run_dir: Path) -> float:
    from prep.train.options import TrainOptions
    from prep.train.run import train

    train(root, TrainOptions(
        arch=args.arch, weights="none", recipe="book", epochs=args.epochs, batch_size=args.batch_size,
        image_size=args.image_size, preset="light", workers=args.workers, device=args.device, run_dir=run_dir,
    ))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        print(f"  prep  epoch {r['epoch']}: train_loss {r['train_loss']:.4f} valid_acc {r['valid_acc']:.4f}")
    return records[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data", type=Path, default=None, help="reuse a split dataset folder")
    args = parser.parse_args()
    import torch

    from prep.split.sample import write_sample
    from prep.split.api import split_dataset

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = str(device)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = args.data or Path(tmp) / "data"
        if not (root / "train").is_dir():
            write_sample(root, n=args.per_class, seed=0)
            split_dataset(root)
        images = sum(1 for _ in (root / "train").rglob("*.jpg"))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"{args.arch}, {images} training images at {args.image_size} px, batch {args.batch_size}, "
              f"{args.workers} workers, {args.epochs} epochs, on {name}")
        book = book_train_model(root, args, device)
        ours = prep_train(root, args, Path(tmp) / "run")
    print(f"{'':34s} {'images/s':>9s} {'vs book':>8s}")
    print(f"{'book train_model (fp32)':34s} {book:9.0f} {1:7.2f}x")
    label = "prep engine" + (" (AMP, channels_last, uint8)" if device.type == "cuda" else "")
    print(f"{label:34s} {ours:9.0f} {ours / book:7.2f}x")
    print("target on a GPU: prep >= 2x the book's loop")


if __name__ == "__main__":
    sys.exit(main())
