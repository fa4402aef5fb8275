"""prep's training input pipeline against torchvision's, on the same real photos, in one run.

Same recipe, batch size and workers for every contender: a random resized crop (a quarter
of the image to all of it) and a horizontal flip.

* torchvision: ImageFolder + RandomResizedCrop + RandomHorizontalFlip + ToTensor +
  Normalize, float batches from the workers (what a hand-written notebook does).
* prep: ClassificationDataset with the ``light`` preset (the same crop and flip in
  albumentations), images decoded at the side the crop needs (reduced-scale JPEG decoding),
  uint8 channels-last batches whose float conversion and normalisation belong on the GPU.
  "+ CPU normalise" also pays for that conversion here, as a machine without a GPU would.
* prep cached: the same, reading the decoded cache (``--cache disk``) instead of the JPEGs:
  what every epoch after the first costs. Building the cache is timed on its own. Each
  sample's checksum is checked the first time a run reads it, so the first of the epochs
  timed pays for the checks; "unchecked" is the same with the checks skipped, to show their
  cost.
* decode only: prep's decoder at the side the crop needs (full size for the 400 x 300
  photos) and nothing else: the floor of any uncached pipeline that decodes this way.

Two sets of real photos (benchmarks/_photos.py): 400 x 300 JPEGs at 224 px, and 1600 x
1200 JPEGs at 64, 128 and 224 px. Each contender runs in its own process; its peak memory
(PSS of the process and its workers, so a shared cache counts once) is printed beside its
speed.

Usage: python benchmarks/bench_loader.py [--images 2000] [--large 300] [--workers N]
       [--batch-size 64] [--epochs 4] [--rounds 1] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _peak import run_measured  # noqa: E402
from _photos import photo_dataset  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SMALLEST_CROP = 0.25  # the light preset's, given to torchvision too
CONTENDERS = ("torchvision", "prep", "prep+cpu-normalise", "prep-cached", "prep-cached-unchecked", "prep-cached+cpu-normalise", "decode-only")


def throughput(loader, epochs: int, to_float=None) -> float:
    """Images per second over ``epochs`` epochs, after one batch that starts the workers."""
    images, first = 0, True
    began = time.perf_counter()
    for epoch in range(epochs + 1):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            if first:
                first = False
                began = time.perf_counter()
                continue
            inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
            if to_float is not None:
                inputs = to_float(inputs)
            images += len(inputs)
    return images / (time.perf_counter() - began)


class DecodeOnly:
    """A dataset that only decodes, as prep's loader does (at the side the crop needs),
    returning a number: the floor of any uncached pipeline that decodes this way."""

    def __init__(self, paths, side):
        self.paths, self.side = paths, side

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from prep.images.decode import load_rgb

        return load_rgb(self.paths[index], self.side).shape[0]


def _prep_dataset(root: Path, size: int):
    from prep.augment.presets import build_pipeline
    from prep.data.datasets import ClassificationDataset
    from prep.data.resolution import source_side

    transform = build_pipeline("light", size, train=True, seed=0)
    return ClassificationDataset(root, "train", transform=transform, decode_side=source_side(transform))


def contender(name: str, root: Path, size: int, workers: int, batch_size: int, epochs: int) -> dict:
    """One contender's images/s (run in its own process by ``main``)."""
    import torch

    from prep.data.cache_plan import cache_datasets
    from prep.data.collate import to_device_normalized
    from prep.data.loader import create_loader

    torch.set_num_threads(1)
    if name == "torchvision":
        from torchvision import datasets, transforms

        dataset = datasets.ImageFolder(str(root / "train"), transform=transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(SMALLEST_CROP, 1.0)), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD),
        ]))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
        return {"images_per_s": throughput(loader, epochs)}
    if name == "decode-only":
        paths = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
        side = _prep_dataset(root, size).decoder.side
        loader = torch.utils.data.DataLoader(DecodeOnly(paths, side), batch_size=batch_size, num_workers=workers, collate_fn=torch.tensor, persistent_workers=workers > 0)
        return {"images_per_s": throughput(loader, epochs)}
    if name == "build-cache":
        import shutil

        shutil.rmtree(root / ".prep" / "cache", ignore_errors=True)  # timed from nothing
        dataset = _prep_dataset(root, size)
        began = time.perf_counter()
        report = cache_datasets("disk", root, {"train": dataset}, workers=workers)
        seconds = time.perf_counter() - began
        return {"images_per_s": len(dataset) / seconds, "seconds": seconds, "bytes": report.nbytes, "side": dataset.decoder.side}
    dataset = _prep_dataset(root, size)
    if name.startswith("prep-cached"):
        report = cache_datasets("disk", root, {"train": dataset}, workers=workers)
        assert report.reused == ["train"], "the cache is built by the build-cache contender"
        if name == "prep-cached-unchecked":
            dataset.cache._verified[:] = True  # as if every sample's checksum had been checked already
    loader = create_loader(dataset, batch_size, train=True, workers=workers, seed=0)
    normalize = (lambda x: to_device_normalized(x, MEAN, STD, "cpu")) if name.endswith("+cpu-normalise") else None  # noqa: E731
    return {"images_per_s": throughput(loader, epochs, to_float=normalize)}


def _measure(name: str, root: Path, size: int, args) -> tuple[dict, int]:
    return run_measured([
        __file__, "--contender", name, "--data", str(root), "--size", str(size), "--workers", str(args.workers),
        "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
    ])


def _table(title: str, root: Path, size: int, names, args) -> dict[str, float]:
    """Every contender, ``args.rounds`` times in turn (so that a noisy machine's slow spell
    falls on all of them); prints the median images/s of each, and the median and range of
    its ratio to torchvision's in the same round; returns the median ratios."""
    print(f"\n{title}")
    print(f"{'':28s} {'images/s':>9s} {'x torchvision':>14s} {'peak memory':>12s}", flush=True)
    runs = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(_measure(name, root, size, args))
    base = [result["images_per_s"] for result, _ in runs["torchvision"]]
    ratios = {}
    for name in names:
        rates = [result["images_per_s"] for result, _ in runs[name]]
        ratio = sorted(rate / b for rate, b in zip(rates, base))
        ratios[name] = statistics.median(ratio)
        spread = f" ({ratio[0]:.2f}-{ratio[-1]:.2f})" if len(ratio) > 1 and name != "torchvision" else ""
        result = runs[name][-1][0]
        label = "building the cache" if name == "build-cache" else name
        extra = f"  ({result['seconds']:.1f} s, {result['bytes'] / 1e6:.0f} MB at {result['side']} px)" if name == "build-cache" else ""
        peak = max(p for _, p in runs[name])
        print(f"{label:28s} {statistics.median(rates):9.0f} {ratios[name]:13.2f}x{spread} {peak / 1e6:9.0f} MB{extra}", flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000, help="400 x 300 photos")
    parser.add_argument("--large", type=int, default=300, help="1600 x 1200 photos")
    parser.add_argument("--sizes", default="64,128,224", help="training sizes for the large photos")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="run every contender this many times, in turn, and report medians")
    parser.add_argument("--data", type=Path, default=None, help="keep the photo sets here (reused next time)")
    parser.add_argument("--contender", choices=(*CONTENDERS, "build-cache"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(contender(args.contender, args.data, args.size, args.workers, args.batch_size, args.epochs)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        base = args.data or Path(tmp)
        small = photo_dataset(base / "photos-400", args.images)
        large = photo_dataset(base / "photos-1600", args.large, large=True)
        print(f"{args.workers} workers, batch {args.batch_size}, {args.epochs} epochs per contender, {args.rounds} round(s); random resized crop + flip")
        order = ("torchvision", "prep", "prep+cpu-normalise", "build-cache", "prep-cached", "prep-cached-unchecked", "prep-cached+cpu-normalise", "decode-only")
        ratios = {"400": _table(f"{args.images} real 400 x 300 JPEGs at 224 px", small, 224, order, args)}
        for size in (int(s) for s in args.sizes.split(",")):
            ratios[f"1600@{size}"] = _table(
                f"{args.large} real 1600 x 1200 JPEGs at {size} px", large, size,
                ("torchvision", "prep", "build-cache", "prep-cached", "prep-cached-unchecked", "decode-only"), args,
            )
    print("\ntargets: prep cached >= 10x torchvision, prep uncached >= 3x" + (f" (medians of {args.rounds} rounds)" if args.rounds > 1 else ""))
    for name, table in ratios.items():
        print(f"  {name:10s} uncached {table['prep']:6.2f}x   cached {table['prep-cached']:6.2f}x   decoding alone {table['decode-only']:6.2f}x")


if __name__ == "__main__":
    main()
