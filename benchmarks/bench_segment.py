"""Segmentation: prep's ``unet`` trainer against the loop users copy, in one run.

Three parts (``--part``, default all):

* ``train``: training throughput. Baseline: a loop in the style of Pytorch-UNet (a Dataset
  that opens image and mask with PIL, resizes them with PIL, bicubic and nearest, makes
  float tensors; fp32; BCE-with-logits + soft Dice), against ``prep.train.prepare.train`` with
  the ``unet`` trainer. Same model (the U-Net on ``--arch``'s encoder, random weights), same
  data (the Carvana-like sample, resized to ``--image-size``, no augmentation), batch,
  optimiser (AdamW) and workers. Figure: images/s of the last epoch's training phase.
* ``loader``: reading Carvana-sized data: ``--large`` 1918 x 1280 JPEGs with GIF masks,
  resized to the training size. Baseline: PIL open + torchvision ``Resize`` (antialiased,
  nearest for masks) + ``PILToTensor`` in a DataLoader; prep: its segmentation dataset
  (JPEGs decoded at reduced scale, nearest masks) and collate function, same workers and batch.
* ``brain``: real scans: the slices of nilearn's MNI152 T1 template, four tissue classes,
  split and trained with the defaults; each class's Dice on the test slices.
* ``quality``: Dice reached on the synthetic Carvana sample (``prep sample --kind
  segmentation``, split with the views of a car together) and the wall time, on this machine.

Usage: python benchmarks/bench_segment.py [--part train|loader|quality|brain|all] [--cars 60]
       [--image-size 128] [--batch-size 8] [--workers N] [--epochs 2] [--arch unet-resnet34]
       [--large 48] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _sample(root: Path, cars: int) -> Path:
    from prep.split.sample import write_sample
    from prep.split.api import split_dataset

    if not (root / "train" / "images").is_dir():
        write_sample(root, n=cars, seed=0, kind="segmentation")
        split_dataset(root)
    return root


class PilSegmentationDataset:
    """The Pytorch-UNet ``BasicDataset`` pattern: PIL open, PIL resize, numpy, float tensor."""

    def __init__(self, split_dir: Path, size: int) -> None:
        self.images = sorted((split_dir / "images").iterdir())
        self.masks = {p.stem.removesuffix("_mask"): p for p in (split_dir / "masks").iterdir()}
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        import numpy as np
        import torch
        from PIL import Image

        path = self.images[index]
        image = Image.open(path).convert("RGB").resize((self.size, self.size), Image.BICUBIC)
        mask = Image.open(self.masks[path.stem]).resize((self.size, self.size), Image.NEAREST)
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        target = (np.asarray(mask) > 0).astype(np.int64)
        return torch.from_numpy(pixels), torch.from_numpy(target)


def baseline_train(root: Path, args, device) -> float:
    import torch
    import torch.nn.functional as F

    from prep import ModelRequest
    from prep_trainers.unet import UNetTrainer

    loader = torch.utils.data.DataLoader(
        PilSegmentationDataset(root / "train", args.image_size), batch_size=args.batch_size, shuffle=True,
        num_workers=args.workers, pin_memory=device.type == "cuda",
    )
    torch.manual_seed(0)
    model, _ = UNetTrainer().build_model(ModelRequest(("background", "car"), args.arch, "none", args.image_size))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rate = 0.0
    for epoch in range(args.epochs):
        model.train()
        started, seen, total = time.perf_counter(), 0, 0.0
        for images, masks in loader:
            images, masks = images.to(device), masks.to(device).float()
            logits = model(images)[:, 0]
            probs = torch.sigmoid(logits)
            dice = 1 - (2 * (probs * masks).sum() + 1) / (probs.sum() + masks.sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, masks) + dice
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(images)
            total += loss.item() * len(images)
        rate = seen / (time.perf_counter() - started)
        print(f"  baseline epoch {epoch + 1}: loss {total / seen:.4f}, {rate:.1f} img/s")
    return rate


def prep_train(root: Path, args, run_dir: Path, epochs: int | None = None) -> dict:
    from prep.train.options import TrainOptions
    from prep.train.run import train

    summary = train(root, TrainOptions(
        plugin="unet", arch=args.arch, weights="none", epochs=epochs or args.epochs, batch_size=args.batch_size,
        image_size=args.image_size, preset="none" if epochs is None else "light", workers=args.workers, device=args.device,
        run_dir=run_dir, optimizer="adamw", lr=1e-3, scheduler="none" if epochs is None else None,
    ))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        print(f"  prep epoch {r['epoch']}: train_loss {r['train_loss']:.4f} valid_dice {r['valid_dice']:.4f}, {r['images_per_s']:.1f} img/s")
    return {"rate": records[-1]["images_per_s"], "summary": summary, "records": records}


def _large(root: Path, count: int) -> Path:
    """Carvana-sized pairs: 1918 x 1280 JPEG photos-like scenes and GIF masks."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    images, masks = root / "train" / "images", root / "train" / "masks"
    if images.is_dir():
        return root
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        noise = Image.fromarray(rng.integers(0, 255, (160, 240, 3), dtype=np.uint8)).resize((1918, 1280), Image.BICUBIC)
        scene = noise.filter(ImageFilter.GaussianBlur(3))
        mask = Image.new("P", (1918, 1280), 0)
        box = (int(rng.integers(100, 600)), int(rng.integers(300, 600)), int(rng.integers(1200, 1800)), int(rng.integers(800, 1200)))
        ImageDraw.Draw(scene).rounded_rectangle(box, radius=120, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        ImageDraw.Draw(mask).rounded_rectangle(box, radius=120, fill=1)
        scene.save(images / f"car{i:03d}_01.jpg", quality=90)
        mask.save(masks / f"car{i:03d}_01_mask.gif")
    return root


def bench_loader(args) -> tuple[float, float]:
    import torch
    from PIL import Image
    from torchvision import transforms

    from prep.augment.presets import build_pipeline
    from prep.data.collate import segmentation_collate
    from prep.data.datasets import SegmentationDataset
    from prep.data.resolution import source_side

    with tempfile.TemporaryDirectory(prefix="bench_segment_large_") as tmp:
        root = _large(Path(tmp), args.large)
        size = args.image_size

        class Baseline(PilSegmentationDataset):
            image_t = transforms.Compose([transforms.Resize((size, size), antialias=True), transforms.PILToTensor()])
            mask_t = transforms.Compose([transforms.Resize((size, size), interpolation=transforms.InterpolationMode.NEAREST), transforms.PILToTensor()])

            def __getitem__(self, index):
                path = self.images[index]
                return self.image_t(Image.open(path).convert("RGB")), self.mask_t(Image.open(self.masks[path.stem]))[0].long()

        def rate(loader) -> float:
            for _ in loader:  # warm the page cache and the workers once
                break
            started, seen = time.perf_counter(), 0
            for batch in loader:
                seen += len(batch[0])
            return seen / (time.perf_counter() - started)

        base = rate(torch.utils.data.DataLoader(Baseline(root / "train", size), batch_size=args.batch_size, num_workers=args.workers))
        transform = build_pipeline("none", size, train=False, task="segmentation")
        dataset = SegmentationDataset(root, "train", transform=transform, decode_side=source_side(transform))
        ours = rate(torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=segmentation_collate))
    print(f"loader, {args.large} pairs of 1918 x 1280 JPEG + GIF mask -> {size} px, batch {args.batch_size}, {args.workers} workers")
    print(f"{'':40s} {'images/s':>9s} {'vs baseline':>12s}")
    print(f"{'PIL + torchvision transforms':40s} {base:9.1f} {1:11.2f}x")
    print(f"{'prep segmentation dataset':40s} {ours:9.1f} {ours / base:11.2f}x")
    return base, ours


BRAIN_CLASSES = ("background", "head", "grey-matter", "white-matter", "inner-csf")


def brain_slices(folder: Path) -> Path:
    """A real T1 brain scan as image/mask pairs: the axial slices of the ICBM 2009a MNI152
    template that nilearn ships (``pip install -e .[bench]``), with five classes from its
    tissue maps: background (outside the head), grey matter and white matter (where their
    probability is the larger and over one half), inner CSF (what the brain encloses but is
    neither: the ventricles, a rare class, 1-2% of the pixels of the slices that hold it)
    and the rest of the head (outer CSF, skull, scalp). Written as a raw folder, with a
    class table, for ``prep split``."""
    import nibabel
    import nilearn
    import numpy as np
    from PIL import Image
    from scipy.ndimage import binary_fill_holes

    raw = folder / "brain_raw"
    # Named z<slice>, not slice_<z>: prep split would take slice_<z> for views of one object named slice.
    if (raw / "classes.csv").is_file():
        return raw
    data = Path(nilearn.__file__).parent / "datasets" / "data"
    volume = {name: nibabel.load(data / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz").get_fdata() for name in ("t1", "gm", "wm")}
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    for z in range(volume["t1"].shape[2]):
        t1, gm, wm = (np.rot90(volume[name][:, :, z]) for name in ("t1", "gm", "wm"))
        if (t1 > 20).mean() < 0.02:
            continue  # a slice above or below the head
        mask = np.zeros(t1.shape, np.uint8)
        mask[t1 > 20] = 1
        mask[(gm >= 128) & (gm >= wm)] = 2
        mask[(wm >= 128) & (wm > gm)] = 3
        brain = (gm >= 128) | (wm >= 128)
        mask[binary_fill_holes(brain) & ~brain & (t1 > 20)] = 4
        Image.fromarray(np.clip(t1, 0, 255).astype(np.uint8)).convert("RGB").save(raw / "images" / f"z{z:03d}.png")
        Image.fromarray(mask).save(raw / "masks" / f"z{z:03d}.png")
    (raw / "classes.csv").write_text("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(BRAIN_CLASSES)))
    return raw


def brain_part(folder: Path, args) -> dict:
    """``prep split`` and ``prep train --plugin unet`` with the defaults (``--image-size``),
    and each class's Dice of best.pt on the test slices."""
    from prep.inference.evaluate import evaluate_checkpoint
    from prep.split.api import split_dataset
    from prep.split.plan import SplitOptions
    from prep.split.splitters import SplitSize
    from prep.train.options import TrainOptions
    from prep.train.run import train

    raw = brain_slices(folder)
    root = folder / "brain"
    if not (root / "test").is_dir():
        split_dataset(raw, SplitOptions(valid=SplitSize(0.2, False), test=SplitSize(0.2, False), out=root))
    started = time.perf_counter()
    summary = train(root, TrainOptions(plugin="unet", image_size=args.image_size, workers=args.workers, device=args.device, run_dir=folder / "brain-run"))
    report = evaluate_checkpoint(folder / "brain-run" / "best.pt", root, "test", workers=args.workers, device=args.device)
    print(f"brain: the MNI152 T1 template's slices, {len(BRAIN_CLASSES)} classes, unet defaults ({summary['epochs']} epochs, {args.image_size} px), "
          f"{time.perf_counter() - started:.0f} s; best.pt on the test slices:")
    for name, scores in report["per_class"].items():
        print(f"  {name:16s} Dice {scores['dice']:.3f}  IoU {scores['iou']:.3f}" if scores["dice"] is not None else f"  {name:16s} not in test")
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("train", "loader", "quality", "brain", "all"), default="all")
    parser.add_argument("--cars", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quality-epochs", type=int, default=6)
    parser.add_argument("--arch", default="unet-resnet34")
    parser.add_argument("--large", type=int, default=48)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = str(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"on {name}")
    with tempfile.TemporaryDirectory(prefix="bench_segment_") as tmp:
        root = _sample(Path(tmp) / "carvana", args.cars)
        if args.part in ("train", "all"):
            images = len(list((root / "train" / "images").iterdir()))
            print(f"train: {args.arch}, {images} training images at {args.image_size} px, batch {args.batch_size}, {args.workers} workers, {args.epochs} epochs")
            base = baseline_train(root, args, device)
            ours = prep_train(root, args, Path(tmp) / "run")["rate"]
            print(f"{'':40s} {'images/s':>9s} {'vs baseline':>12s}")
            print(f"{'Pytorch-UNet-style loop (fp32, PIL)':40s} {base:9.1f} {1:11.2f}x")
            label = "prep unet" + (" (AMP, channels_last, uint8)" if device.type == "cuda" else "")
            print(f"{label:40s} {ours:9.1f} {ours / base:11.2f}x")
        if args.part in ("loader", "all"):
            bench_loader(args)
        if args.part in ("brain", "all"):
            brain_part(Path(tmp), args)
        if args.part in ("quality", "all"):
            started = time.perf_counter()
            result = prep_train(root, args, Path(tmp) / "quality", epochs=args.quality_epochs)
            best = result["summary"]["best_valid_dice"]
            image_dice = max(r["valid_image_dice"] for r in result["records"])
            print(f"quality: {args.arch}, {args.quality_epochs} epochs (light preset, recipe defaults but lr 1e-3 AdamW): "
                  f"best valid Dice {best:.4f}, best per-image Dice {image_dice:.4f}, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
