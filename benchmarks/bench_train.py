"""Training throughput: prep's engine against the PyTorch book's loop, in one run.

Baseline: the book's ``train_model`` (the transfer-learning tutorial's loop): ImageFolder
with RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize, float batches from
the workers, plain fp32, SGD with momentum. prep: ``prep.train.prepare.train`` with the same
model (torchvision ResNet-18, new 2-class head, no pretrained weights), the same recipe
(``--recipe book``), the same augmentation (the ``light`` preset: the same crop and flip),
batch size and workers; on a GPU it adds what prep does by default there (bf16/fp16
autocast, channels_last, uint8 batches normalised on the device).

On a CPU with bfloat16 instructions (AVX512-BF16 or AMX) a third contender is prep with
``--amp bf16``: the forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)``, with
channels_last weights; its line gives its speed against prep in float32 too, and the
validation accuracy of both (on real images: benchmarks/bench_recipes.py --part bf16).

``--suite timm`` (issue: timm backbones cost what timm's own loop costs) measures instead a
plain timm training loop (``timm.create_model``, timm's ``create_dataset`` and training
transform with the same crop and flip and no colour jitter, a torch DataLoader, SGD as the
book's) against prep with ``--arch timm:ARCH`` and prep with torchvision's ARCH, on the
same data, batch and workers.

Each contender runs in its own process (``_peak.run_measured``: its peak memory, loader
workers included) for ``--epochs`` epochs; the figure is the images per second of the
training phase of the last epoch (the first pays for worker start-up and, on GPUs, cuDNN's
autotuning), validation excluded.

Usage: python benchmarks/bench_train.py [--per-class 500] [--image-size 64] [--batch-size 64]
       [--workers N] [--epochs 2] [--arch resnet18] [--device cpu|cuda] [--data DIR] [--suite book|timm]
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


def book_train_model(root: Path, args, device) -> dict:
    """The book's loop, as users copy it: the last epoch's training images/s and validation accuracy."""
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
    rate, accuracy = 0.0, 0.0
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
            else:
                accuracy = running_corrects.double().item() / seen
            print(f"  book  epoch {epoch + 1} {phase}: loss {running_loss / seen:.4f} acc {running_corrects.double().item() / seen:.4f}", file=sys.stderr)
    return {"images_per_s": rate, "valid_acc": accuracy}


def timm_loop(root: Path, args, device) -> dict:
    """A plain timm loop, as a timm user writes one: the last epoch's training images/s and
    validation accuracy."""
    import timm
    import timm.data
    import torch

    size = args.image_size
    train_set = timm.data.create_dataset("", root=str(root / "train"), is_training=True)
    valid_set = timm.data.create_dataset("", root=str(root / "valid"))
    train_set.transform = timm.data.create_transform(size, is_training=True, hflip=0.5, color_jitter=None, mean=MEAN, std=STD)
    valid_set.transform = timm.data.create_transform(size, is_training=False, mean=MEAN, std=STD)
    loaders = {
        "train": torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=False),
        "valid": torch.utils.data.DataLoader(valid_set, batch_size=args.batch_size, num_workers=args.workers),
    }
    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, num_classes=2).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    use_amp = device.type == "cuda"  # timm's train.py --amp
    rate = accuracy = 0.0
    for epoch in range(args.epochs):
        model.train()
        seen, started = 0, time.perf_counter()
        for inputs, labels in loaders["train"]:
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = criterion(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += inputs.size(0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - started)
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in loaders["valid"]:
                predicted = model(inputs.to(device)).argmax(dim=1).cpu()
                correct += int((predicted == labels).sum())
                total += labels.numel()
        accuracy = correct / max(total, 1)
        print(f"  timm  epoch {epoch + 1}: loss {loss.item():.4f} valid_acc {accuracy:.4f}", file=sys.stderr)
    return {"images_per_s": rate, "valid_acc": accuracy}


def prep_train(root: Path, args, run_dir: Path, amp: str | None = None, arch: str | None = None) -> dict:
    from prep.train.options import TrainOptions
    from prep.train.run import train

    train(root, TrainOptions(
        arch=arch or args.arch, weights="none", recipe="book", epochs=args.epochs, batch_size=args.batch_size,
        image_size=args.image_size, preset="light", workers=args.workers, device=args.device, run_dir=run_dir, amp=amp,
    ))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        print(f"  prep{' ' + amp if amp else ''} epoch {r['epoch']}: train_loss {r['train_loss']:.4f} valid_acc {r['valid_acc']:.4f}", file=sys.stderr)
    return {"images_per_s": records[-1]["images_per_s"], "valid_acc": records[-1]["valid_acc"]}


def contender(args) -> None:
    """One contender, in this process: prints its figures as JSON."""
    import torch

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_train_run_") as tmp:
        if args.contender == "book":
            figures = book_train_model(args.data, args, device)
        elif args.contender == "timm":
            figures = timm_loop(args.data, args, device)
        elif args.contender == "prep-timm":
            figures = prep_train(args.data, args, Path(tmp) / "run", arch=f"timm:{args.arch}")
        else:
            figures = prep_train(args.data, args, Path(tmp) / "run", amp="bf16" if args.contender == "prep-bf16" else None)
    print(json.dumps(figures))


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
    parser.add_argument("--suite", choices=("book", "timm"), default="book", help="book: against the book's loop; timm: timm models")
    parser.add_argument("--contender", choices=("book", "prep", "prep-bf16", "timm", "prep-timm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.contender:
        return contender(args)
    from _peak import run_measured

    from prep.engine.precision import cpu_has_bf16
    from prep.split.sample import write_sample
    from prep.split.api import split_dataset

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = args.data or Path(tmp) / "data"
        if not (root / "train").is_dir():
            write_sample(root, n=args.per_class, seed=0)
            split_dataset(root)
        images = sum(1 for _ in (root / "train").rglob("*.jpg"))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"{args.arch}, {images} training images at {args.image_size} px, batch {args.batch_size}, "
              f"{args.workers} workers, {args.epochs} epochs, on {name}")
        common = [
            "--data", str(root), "--device", str(device), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
            "--workers", str(args.workers), "--epochs", str(args.epochs), "--arch", args.arch,
        ]
        if args.suite == "timm":
            names = ["timm", "prep-timm", "prep"]
        else:
            names = ["book", "prep"] + (["prep-bf16"] if device.type == "cpu" and cpu_has_bf16() else [])
        results = {name: run_measured([__file__, "--contender", name, *common]) for name in names}
    baseline = names[0]
    base = results[baseline][0]["images_per_s"]
    print(f"{'':44s} {'images/s':>9s} {'vs ' + baseline:>8s} {'valid acc':>9s} {'peak MB':>8s}")
    engine = " (AMP, channels_last, uint8)" if device.type == "cuda" else " (fp32)"
    labels = {
        "book": "book train_model (fp32)",
        "prep": f"prep engine, torchvision {args.arch}{engine}",
        "prep-bf16": "prep engine --amp bf16 (channels_last)",
        "timm": f"plain timm loop, timm {args.arch}" + (" (bf16 autocast)" if device.type == "cuda" else " (fp32)"),
        "prep-timm": f"prep engine, --arch timm:{args.arch}{engine}",
    }
    for name, (figures, peak) in results.items():
        rate = figures["images_per_s"]
        print(f"{labels[name]:44s} {rate:9.0f} {rate / base:7.2f}x {figures['valid_acc']:9.3f} {peak / 2**20:8.0f}")
    if "prep-bf16" in results:
        ratio = results["prep-bf16"][0]["images_per_s"] / results["prep"][0]["images_per_s"]
        print(f"--amp bf16 against float32 on this CPU: {ratio:.2f}x")
    if args.suite == "book":
        print("target on a GPU: prep >= 2x the book's loop")
    else:
        print(f"target: prep --arch timm:{args.arch} costs what timm's own loop does (about 1.00x or more)")


if __name__ == "__main__":
    sys.exit(main())
