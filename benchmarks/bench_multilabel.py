"""Multi-label classification against what people would use instead, in one run.

Part ``split``: stratifying Planet-shaped tag sets (weather and land tags with Planet's
proportions, two tags under 1%) into train and valid (80/20): prep's iterative
stratification (``prep.split.iterative``) against the iterative-stratification package's
``MultilabelStratifiedShuffleSplit`` (the same published method, on scikit-learn) and a
plain random split. Each contender runs in its own process; the table gives the time, the
peak resident memory of its process (the interpreter and its imports included), the mean and the largest gap between a tag's share in valid and its share
overall (in points of the tag's own share), and the tags valid lacks.

Part ``train``: real scans, not drawings. Each image is a 2 x 2 mosaic of scikit-learn's
handwritten digits (1,797 real 8 x 8 scans), one to four of its cells filled, and its tags
are the digits it shows (the Human Protein Atlas's format: ``Id,Target`` with ``"0 5 9"``).
Training mosaics use the first 1,200 scans, test mosaics the other 597, so no scan is in
both. ResNet-18 from random weights, 32 px, the same epochs, batch and optimiser for:

* a hand-written loop, as a notebook has it: BCE-with-logits, Adam, a threshold of 0.5;
* ``prep split --labels train.csv`` + ``prep train`` (its defaults for the rest) and
  ``prep predict`` with the thresholds tuned on its validation split.

Both are scored on the same test mosaics by scikit-learn (sample-averaged F2 as Planet
scores it, macro F1, mAP); prep's line also gives what ``prep evaluate`` reports for them,
a check of prep's own metrics (its mAP comes from 256-bin histograms).

Usage: python benchmarks/bench_multilabel.py [--part split|train|all] [--images 40000]
       [--train 3000] [--test 800] [--epochs 12] [--json]
Needs: pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peak import run_measured  # noqa: E402

SIZE, BATCH, LR = 32, 64, 1e-3


# -- Part split -------------------------------------------------------------------------------


def planet_tags(images: int, seed: int = 0) -> list[list[str]]:
    from prep.split.sample import _planet_tags

    rng = random.Random(seed)
    return [_planet_tags(rng) for _ in range(images)]


def split_contender(name: str, images: int) -> None:
    """Run one contender and print its JSON line (time, and the valid part's positions)."""
    tags = planet_tags(images)
    began = time.perf_counter()
    if name == "prep":
        from prep.split.iterative import iterative_parts

        parts = iterative_parts(
            [frozenset(t) for t in tags], [1] * images, [f"{i:06d}" for i in range(images)],
            ("train", "valid"), {"train": 0.8, "valid": 0.2}, "42:tags", at_least_one=("valid",),
        )
        valid = [i for i, part in enumerate(parts) if part == "valid"]
    elif name == "iterative-stratification":
        import numpy as np
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        names = sorted({t for row in tags for t in row})
        y = np.zeros((images, len(names)), dtype=np.int8)
        for i, row in enumerate(tags):
            y[i, [names.index(t) for t in row]] = 1
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=42)
        _, valid_index = next(splitter.split(np.zeros(images), y))
        valid = [int(i) for i in valid_index]
    else:
        order = list(range(images))
        random.Random(42).shuffle(order)
        valid = sorted(order[: images // 5])
    import resource

    # The process's own peak resident size: a run this short ends before a poll of its PSS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": time.perf_counter() - began, "valid": valid, "peak": peak}))


def split_quality(tags: list[list[str]], valid: list[int]) -> dict:
    names = sorted({t for row in tags for t in row})
    held = set(valid)
    gaps, missing = [], []
    for name in names:
        overall = sum(name in row for row in tags) / len(tags)
        share = sum(name in tags[i] for i in held) / max(len(held), 1)
        gaps.append(abs(share - overall) / overall)
        if not any(name in tags[i] for i in held):
            missing.append(name)
    return {"valid": len(held), "mean_gap": sum(gaps) / len(gaps), "max_gap": max(gaps), "missing": missing}


def part_split(images: int) -> list[dict]:
    tags = planet_tags(images)
    rows = []
    for name in ("prep", "iterative-stratification", "random"):
        result, _ = run_measured([__file__, "--contender", name, "--images", str(images)])
        rows.append({"contender": name, "seconds": result["seconds"], "peak_mb": result["peak"] / 2**20, **split_quality(tags, result["valid"])})
    return rows


# -- Part train -------------------------------------------------------------------------------


def write_mosaics(folder: Path, scans, labels, count: int, seed: int, *, with_csv: bool) -> list[tuple[str, list[int]]]:
    """``count`` 2 x 2 mosaics of the given scans (16 x 16, grey as RGB) in ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        cells = np.zeros((16, 16), np.float32)
        filled = rng.choice(4, size=int(rng.integers(1, 5)), replace=False)
        digits = set()
        for cell in filled:
            pick = int(rng.integers(len(scans)))
            y, x = divmod(int(cell), 2)
            cells[8 * y : 8 * y + 8, 8 * x : 8 * x + 8] = scans[pick]
            digits.add(int(labels[pick]))
        pixels = (cells / 16 * 255).clip(0, 255).astype(np.uint8)
        name = f"m{i:05d}"
        Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{name}.png")
        rows.append((name, sorted(digits)))
    if with_csv:
        with (folder.parent / "train.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(("Id", "Target"))
            writer.writerows((name, " ".join(map(str, digits))) for name, digits in rows)
    return rows


def build_mosaics(root: Path, train: int, test: int) -> dict:
    """The raw download (``raw/train/`` + ``raw/train.csv``) and the test mosaics, also as a
    split prep evaluates (``held/test/images/`` + ``labels.csv``)."""
    import sklearn.datasets

    from prep.split.tag_manifest import labels_text

    digits = sklearn.datasets.load_digits()
    scans, labels = digits.images, digits.target
    train_rows = write_mosaics(root / "raw" / "train", scans[:1200], labels[:1200], train, 0, with_csv=True)
    test_rows = write_mosaics(root / "held" / "test" / "images", scans[1200:], labels[1200:], test, 1, with_csv=False)
    text = labels_text((f"{name}.png", " ".join(map(str, digits))) for name, digits in test_rows)
    (root / "held" / "test" / "labels.csv").write_text(text)
    return {"train": train_rows, "test": test_rows}


def baseline_contender(root: Path, epochs: int) -> None:
    """A notebook's loop on the raw folder: a random 80/20 split, BCE, Adam, threshold 0.5."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    torch.manual_seed(0)
    rows = list(csv.reader((root / "raw" / "train.csv").read_text().splitlines()))[1:]
    random.Random(0).shuffle(rows)
    train_rows = rows[: int(0.8 * len(rows))]

    def load(folder: Path, name: str) -> torch.Tensor:
        pixels = np.asarray(Image.open(folder / f"{name}.png").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255

    x = torch.stack([load(root / "raw" / "train", name) for name, _ in train_rows])
    y = torch.zeros(len(train_rows), 10)
    for i, (_, tags) in enumerate(train_rows):
        y[i, [int(t) for t in tags.split()]] = 1
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    began = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), BATCH):
            index = order[start : start + BATCH]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model((x[index] - mean) / std), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - began
    model.eval()
    names = sorted(p.stem for p in (root / "held" / "test" / "images").glob("*.png"))
    with torch.no_grad():
        test = torch.stack([load(root / "held" / "test" / "images", name) for name in names])
        probabilities = torch.cat([model((test[s : s + 256] - mean) / std).sigmoid() for s in range(0, len(test), 256)])
    print(json.dumps({"seconds": seconds, "names": names, "probabilities": probabilities.tolist(), "thresholds": [0.5] * 10}))


def prep_contender(root: Path, epochs: int) -> None:
    """prep from the raw folder to predictions of the test mosaics."""
    from typer.testing import CliRunner

    from prep.cli import app

    runner = CliRunner()

    def run(args: list[str]) -> str:
        result = runner.invoke(app, args)
        if result.exit_code:
            raise SystemExit(result.output)
        return result.stdout

    data, run_dir = root / "prep-data", root / "prep-run"
    run(["split", str(root / "raw"), "--labels", "train.csv", "--out", str(data), "--mode", "copy"])
    run(["stats", str(data)])
    began = time.perf_counter()
    run([
        "train", str(data), "--weights", "none", "--epochs", str(epochs), "--image-size", str(SIZE), "--batch-size", str(BATCH),
        "--lr", str(LR), "--workers", "2", "--device", "cpu", "--run-dir", str(run_dir),
    ])
    seconds = time.perf_counter() - began
    run(["predict", str(run_dir / "best.pt"), str(root / "held" / "test" / "images"), "--out", str(root / "prep.csv")])
    evaluated = json.loads(run(["evaluate", str(run_dir / "best.pt"), str(root / "held"), "--split", "test", "--json", "--out", str(root / "tags.png")]))
    rows = list(csv.DictReader((root / "prep.csv").open()))
    import torch

    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    classes = state["classes"]
    from prep.builtin_tasks.multilabel.task import model_thresholds

    print(json.dumps({
        "seconds": seconds, "names": [Path(r["file"]).stem for r in rows], "classes": classes,
        "probabilities": [[float(r[c]) for c in classes] for r in rows], "thresholds": list(model_thresholds(state, None).values),
        "own_f2": evaluated["f2"], "own_map": evaluated["map"],
    }))


def scores(truth: dict[str, list[int]], names: list[str], classes: list[str], probabilities, thresholds) -> dict:
    import numpy as np
    from sklearn.metrics import average_precision_score, f1_score, fbeta_score

    order = [int(c) for c in classes]
    y = np.zeros((len(names), 10), dtype=int)
    for i, name in enumerate(names):
        y[i, truth[name]] = 1
    y = y[:, order]
    p = np.asarray(probabilities)
    predicted = (p >= np.asarray(thresholds)).astype(int)
    at_half = (p >= 0.5).astype(int)
    return {
        "f2": fbeta_score(y, predicted, beta=2, average="samples", zero_division=1.0),
        "f2_at_0.5": fbeta_score(y, at_half, beta=2, average="samples", zero_division=1.0),
        "macro_f1": f1_score(y, predicted, average="macro", zero_division=0.0),
        "map": average_precision_score(y, p, average="macro"),
    }


def part_train(train: int, test: int, epochs: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        made = build_mosaics(root, train, test)
        truth = {name: digits for name, digits in made["test"]}
        for name in ("notebook loop", "prep"):
            result, peak = run_measured([__file__, "--contender", f"train:{name}", "--root", str(root), "--epochs", str(epochs)])
            classes = result.get("classes", [str(d) for d in range(10)])
            rows.append({
                "contender": name, "train_s": result["seconds"], "peak_mb": peak / 2**20,
                "own_f2": result.get("own_f2"), "own_map": result.get("own_map"),
                **scores(truth, result["names"], classes, result["probabilities"], result["thresholds"]),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("split", "train", "all"), default="all")
    parser.add_argument("--images", type=int, default=40000)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender == "train:notebook loop":
        return baseline_contender(args.root, args.epochs)
    if args.contender == "train:prep":
        return prep_contender(args.root, args.epochs)
    if args.contender:
        return split_contender(args.contender, args.images)
    results = {}
    if args.part in ("split", "all"):
        results["split"] = part_split(args.images)
        print(f"Stratifying {args.images:,} Planet-shaped tag sets 80/20 (gap: |valid share - overall| / overall):")
        base = next(r for r in results["split"] if r["contender"] == "iterative-stratification")
        for r in results["split"]:
            print(
                f"  {r['contender']:<26} {r['seconds']:7.2f} s ({base['seconds'] / r['seconds']:5.2f}x the package's speed), "
                f"peak {r['peak_mb']:6.0f} MB, valid {r['valid']:,}, mean gap {r['mean_gap']:.2%}, largest {r['max_gap']:.2%}, "
                f"tags missing from valid: {', '.join(r['missing']) or 'none'}"
            )
    if args.part in ("train", "all"):
        results["train"] = part_train(args.train, args.test, args.epochs)
        print(f"Digit mosaics (real scans), {args.train} to train, {args.test} to test, ResNet-18 from scratch, {args.epochs} epochs at {SIZE} px:")
        for r in results["train"]:
            print(
                f"  {r['contender']:<14} test F2 {r['f2']:.3f} (at 0.5: {r['f2_at_0.5']:.3f}), macro F1 {r['macro_f1']:.3f}, "
                f"mAP {r['map']:.3f}; training {r['train_s']:.0f} s, peak {r['peak_mb']:.0f} MB"
                + (f"; prep evaluate says F2 {r['own_f2']:.3f}, mAP {r['own_map']:.3f}" if r["own_f2"] is not None else "")
            )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
