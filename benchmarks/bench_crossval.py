"""Cross-validation: ``prep train --fold all`` against K separate ``prep train`` runs on the
same folds, in one run.

Baseline: what a user does without ``--fold all``: the K folds laid out as K split datasets
(``fold-k/train`` and ``fold-k/valid``, hard links, so no bytes are copied), and ``prep
train`` run on each in its own process. Each run starts Python and torch, computes its
dataset's statistics, builds its decoded cache and trains. prep: one ``prep train --fold
all`` on the dataset split with ``prep split --folds K``, which starts once, reads the pool's
statistics once (each fold's from the others' pixel histograms), builds one cache of the pool
for every fold, trains the same K models and then also predicts every image out of fold.

Both train from scratch with the dataset's own normalisation (``--weights none --normalize
dataset``), the same recipe, size, batch size, epochs and seed. The figures: each side's wall
time, the ratio, and the peak memory (PSS of the process and its workers).

Usage: python benchmarks/bench_crossval.py [--folds 5] [--per-class 150] [--epochs 2]
       [--image-size 64] [--batch-size 32] [--workers N] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _peak import run_measured  # noqa: E402


def build(folder: Path, per_class: int, folds: int) -> Path:
    """``prep sample`` photos-like JPEGs in a raw folder, split into ``folds`` folds."""
    from prep.split.api import split_dataset
    from prep.split.plan import SplitOptions
    from prep.split.sample import write_sample
    from prep.split.splitters import SplitSize

    data = folder / "data"
    if not (data / "folds.csv").is_file():
        write_sample(folder / "raw", n=per_class, seed=0)
        split_dataset(folder / "raw", SplitOptions(folds=folds, valid=SplitSize(0, False), out=data, mode="copy"))
    return data


def fold_datasets(data: Path, folder: Path, folds: int) -> list[Path]:
    """Each fold as a split dataset of its own (hard links to ``data``'s files)."""
    from prep.split.folds import read_folds

    manifest = read_folds(data)
    made = []
    for fold in range(folds):
        root = folder / f"fold-{fold}"
        shutil.rmtree(root, ignore_errors=True)
        for path, f in manifest.items():
            _, label, name = path.split("/")
            target = root / ("valid" if f == fold else "train") / label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(data / path, target)
        made.append(root)
    return made


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--device", default=None)
    parser.add_argument("--data", type=Path, default=None, help="a folder to keep the datasets in between runs")
    args = parser.parse_args()
    folder = args.data or Path(tempfile.mkdtemp(prefix="prep-bench-cv-"))
    data = build(folder, args.per_class, args.folds)
    separate = fold_datasets(data, folder / "separate", args.folds)
    shutil.rmtree(folder / "runs", ignore_errors=True)
    common = [
        "--weights", "none", "--normalize", "dataset", "--epochs", str(args.epochs), "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--seed", "0", "--json",
        *(["--device", args.device] if args.device else []),
    ]
    images = sum(1 for _ in (data / "train").rglob("*.jpg"))
    print(f"{args.folds} folds of {images} images ({args.per_class} per class), {args.epochs} epochs at {args.image_size} px, batch {args.batch_size}, {args.workers} workers")

    began, baseline_peak, scores = time.perf_counter(), 0, []
    for k, root in enumerate(separate):
        summary, peak = run_measured(["-m", "prep", "--quiet", "train", str(root), *common, "--run-dir", str(folder / "runs" / f"separate-{k}")], whole_output=True)
        baseline_peak = max(baseline_peak, peak)
        scores.append(summary["best_valid_acc"])
    baseline = time.perf_counter() - began

    began = time.perf_counter()
    summary, prep_peak = run_measured(["-m", "prep", "--quiet", "train", str(data), "--fold", "all", *common, "--run-dir", str(folder / "runs" / "cv")], whole_output=True)
    ours = time.perf_counter() - began

    print(f"{'':40s} {'seconds':>8s} {'speed-up':>9s} {'peak MB':>8s}")
    print(f"{f'{args.folds} separate prep train runs':40s} {baseline:8.1f} {1:8.2f}x {baseline_peak / 1e6:8.0f}")
    print(f"{'prep train --fold all (with OOF)':40s} {ours:8.1f} {baseline / ours:8.2f}x {prep_peak / 1e6:8.0f}")
    print(f"folds' best valid_acc, separate: {', '.join(f'{s:.3f}' for s in scores)}")
    best = ", ".join(f"{fold['best']:.3f}" for fold in summary["folds"])
    print(f"folds' best valid_acc, --fold all: {best}; OOF acc {summary['oof']['acc']:.3f}")
    print("target: --fold all at least 1.3x faster than the separate runs")
    if args.data is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
