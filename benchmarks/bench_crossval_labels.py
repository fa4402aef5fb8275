"""Cross-validation on real scans with labels flipped on purpose: does ``prep train --fold all``
put the flipped images first among its suspects?

Data: scikit-learn's ``load_digits``, 1,797 real scans of handwritten digits (8 x 8, ten
classes), written as 32 x 32 PNGs in class folders (``pip install -e .[bench]``). A seeded
share of them (``--flip``, default 3%) is moved into another, random, class folder. Then, as
a user would: ``prep split --folds K``, ``prep train --fold all`` (ResNet-18 from scratch,
the default recipe), and the figures: the out-of-fold accuracy against the given and the
true labels, how many images confident learning flags, the precision and recall of the
flags against the flipped images, and how many flipped images are among the first N of
``suspects.csv`` (N = the number flipped). ``suspects.png`` is left in the run folder.

Usage: python benchmarks/bench_crossval_labels.py [--flip 0.03] [--folds 5] [--epochs 8]
       [--workers N] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_digits(raw: Path, flip: float, seed: int) -> dict[str, str]:
    """The digits as PNGs in class folders, ``flip`` of them in a wrong one; returns each
    flipped file's name -> its true class."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    flipped_rows = set(rng.choice(len(digits.images), round(flip * len(digits.images)), replace=False).tolist())
    names = [str(d) for d in range(10)]
    truth = {}
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        given = int(label)
        if i in flipped_rows:
            given = int(rng.choice([c for c in range(10) if c != label]))
        grey = (pixels / 16 * 255).astype(np.uint8)
        image = Image.fromarray(grey).resize((32, 32), Image.BILINEAR).convert("RGB")
        name = f"digit{i:04d}.png"
        (raw / names[given]).mkdir(parents=True, exist_ok=True)
        image.save(raw / names[given] / name)
        if i in flipped_rows:
            truth[name] = names[int(label)]
    return truth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flip", type=float, default=0.03)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    folder = args.data or Path(tempfile.mkdtemp(prefix="prep-cv-labels-"))
    truth = write_digits(folder / "raw", args.flip, args.seed)
    prep = [sys.executable, "-m", "prep", "--quiet"]
    subprocess.run([*prep, "split", str(folder / "raw"), "--folds", str(args.folds), "--out", str(folder / "data"), "--mode", "copy"], check=True)
    began = time.perf_counter()
    done = subprocess.run([
        *prep, "train", str(folder / "data"), "--fold", "all", "--weights", "none", "--epochs", str(args.epochs),
        "--image-size", "32", "--batch-size", "64", "--workers", str(args.workers), "--run-dir", str(folder / "cv"), "--json",
    ], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    summary = json.loads(done.stdout)
    rows = list(csv.DictReader((folder / "cv" / "suspects.csv").open()))
    oof = list(csv.DictReader((folder / "cv" / "oof.csv").open()))
    true_label = {r["path"]: truth.get(Path(r["path"]).name, r["label"]) for r in oof}
    flagged = {r["path"] for r in rows if r["suspect"] == "1"}
    planted = {r["path"] for r in oof if Path(r["path"]).name in truth}
    first = {r["path"] for r in rows[: len(planted)]}
    print(f"digits: {len(oof)} real scans, {len(planted)} labels flipped ({args.flip:.0%}), {args.folds} folds, {args.epochs} epochs from scratch, {seconds:.0f} s")
    print(f"folds' best valid_acc: mean {summary['mean']:.4f}, std {summary['std']:.4f}")
    print(f"OOF accuracy against the given labels {summary['oof']['acc']:.4f}, against the true labels "
          f"{sum(r['predicted'] == true_label[r['path']] for r in oof) / len(oof):.4f}; OOF log-loss {summary['oof']['log_loss']:.4f}")
    print(f"confident learning flags {len(flagged)}: precision {len(flagged & planted) / max(len(flagged), 1):.3f}, "
          f"recall {len(flagged & planted) / max(len(planted), 1):.3f}")
    print(f"flipped images among the first {len(planted)} of suspects.csv: {len(first & planted)}")
    right = sum(r["predicted_label"] == truth[Path(r["path"]).name] for r in rows if r["path"] in flagged & planted)
    print(f"of the flipped images flagged, {right} have their true class as the suggested label")
    print(f"gallery: {summary['suspects']['png']}")


if __name__ == "__main__":
    main()
