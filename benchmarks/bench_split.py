"""prep split against the recipes people use instead, on identical trees, in one run.

Builds N small JPEGs in the Kaggle flat layout (train/cat.N.jpg, train/dog.N.jpg), then
times, each on a fresh copy of the same tree:

* the PyTorch book's recipe: glob, shuffle, makedirs and a bare ``os.rename`` loop, the
  physical floor (in-process, and as a script so that it pays interpreter start-up too);
* ``prep split`` in its default mode (move, in place), ``--mode link`` and ``--mode copy``,
  as real CLI processes with every check, the journal and the report;
* split-folders' ``splitfolders.ratio`` with its default copy and with ``move=True``, as a
  script (it cannot read labels from flat file names, so it gets the same files already
  sorted into class folders).

Usage: python benchmarks/bench_split.py [--files 25000] [--repeat 3]
Needs: pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_template(root: Path, files: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    train = root / "train"
    train.mkdir(parents=True)
    # A few hundred distinct encoded images; each file gets one plus a unique JPEG
    # comment segment, so every file is distinct (no accidental duplicates) and valid.
    bases = []
    for _ in range(256):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        bases.append(buffer.getvalue())
    for i in range(files):
        label = "cat" if i % 2 == 0 else "dog"
        base = bases[i % len(bases)]
        comment = f"file {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (train / f"{label}.{i // 2}.jpg").write_bytes(base[:2] + segment + base[2:])


def as_class_folders(src: Path, dst: Path) -> None:
    for path in (src / "train").iterdir():
        folder = dst / path.name.split(".")[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / path.name)


BOOK_RECIPE = """
import os, sys
from glob import glob
import numpy as np
path = sys.argv[1]
files = glob(os.path.join(path, 'train', '*.jpg'))
shuffle = np.random.permutation(len(files))
n_valid = len(files) // 5
for t in ['train', 'valid']:
    for folder in ['dog', 'cat']:
        os.makedirs(os.path.join(path, t, folder), exist_ok=True)
for split, part in (('valid', shuffle[:n_valid]), ('train', shuffle[n_valid:])):
    for i in part:
        image = os.path.basename(files[i])
        os.rename(files[i], os.path.join(path, split, image.split('.')[0], image))
"""


def book_recipe_in_process(path: Path) -> None:
    saved = sys.argv
    sys.argv = ["book", str(path)]
    try:
        exec(compile(BOOK_RECIPE, "book", "exec"), {"__name__": "book"})
    finally:
        sys.argv = saved


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=25_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    prep = [py, "-m", "prep", "--quiet", "split"]
    with tempfile.TemporaryDirectory(prefix="bench_split_") as tmp:
        work = Path(tmp)
        template, classes = work / "template", work / "classes"
        print(f"Building {args.files} JPEGs ...", flush=True)
        build_template(template, args.files)
        as_class_folders(template, classes)

        def fresh(src: Path) -> Path:
            dst = work / "tree"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.rmtree(work / "out", ignore_errors=True)
            subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
            os.sync()
            return dst

        contenders = {
            "rename loop (in-process, floor)": (template, lambda t: book_recipe_in_process(t)),
            "rename loop (script)": (template, lambda t: run([py, "-c", BOOK_RECIPE, str(t)])),
            "prep split (move, default)": (template, lambda t: run(prep + [str(t)])),
            "prep split --mode link": (template, lambda t: run(prep + [str(t), "--mode", "link", "--out", str(work / "out")])),
            "prep split --mode copy": (template, lambda t: run(prep + [str(t), "--mode", "copy", "--out", str(work / "out")])),
            "split-folders (copy, default)": (classes, lambda t: run([py, "-c", f"import splitfolders; splitfolders.ratio({str(t)!r}, {str(work / 'out')!r}, seed=42, ratio=(.8, .2))"])),
            "split-folders (move)": (classes, lambda t: run([py, "-c", f"import splitfolders; splitfolders.ratio({str(t)!r}, {str(work / 'out')!r}, seed=42, ratio=(.8, .2), move=True)"])),
        }
        times: dict[str, float] = {}
        best: dict[str, float] = {}
        for name, (src, job) in contenders.items():
            samples = []
            for _ in range(args.repeat):
                tree = fresh(src)
                began = time.perf_counter()
                job(tree)
                samples.append(time.perf_counter() - began)
            times[name] = statistics.median(samples)
            best[name] = min(samples)
            print(f"  {name:34s} {times[name]:7.3f} s  (runs: {', '.join(f'{s:.3f}' for s in samples)})", flush=True)

    floor = times["rename loop (in-process, floor)"]
    script = times["rename loop (script)"]
    prep_move = times["prep split (move, default)"]
    prep_link = times["prep split --mode link"]
    sf_copy = times["split-folders (copy, default)"]
    print()
    print(f"files: {args.files}, median of {args.repeat} runs each")
    print(f"prep default / rename loop in-process : {prep_move / floor:5.2f}x  (target <= 2)")
    print(f"  the same, best run of each          : {best['prep split (move, default)'] / best['rename loop (in-process, floor)']:5.2f}x")
    print(f"prep default / rename loop as a script: {prep_move / script:5.2f}x")
    print(f"split-folders copy / prep default     : {sf_copy / prep_move:5.2f}x faster (target >= 3)")
    print(f"split-folders copy / prep --mode link : {sf_copy / prep_link:5.2f}x faster (target >= 3)")
    print(f"split-folders copy / rename loop      : {sf_copy / floor:5.2f}x slower than the floor")


if __name__ == "__main__":
    main()
