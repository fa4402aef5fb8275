"""K-fold cross-validation splits (``prep split --folds K``): which fold each unit of the
training pool goes to, and the manifest ``folds.csv`` that records it.

No file is copied K times. The pool stays in ``train/``; ``folds.csv`` names each image's
fold, and fold k's model trains on the other folds and is validated on fold k.

How units are dealt out: within each stratum (a class; for segmentation, the rarest class a
pair's mask contains, so that the images holding a rare class spread over every fold), the
units are put in a stable order, shuffled with a string seed (SHA-512 inside
``random.Random``, the same on every machine), then taken largest group first, each into the
fold holding the fewest of its stratum (ties: the fewest samples, then the lowest fold). A
unit is a group from ``--group-pattern`` or a set of identical files, so neither ever
straddles two folds. Multi-label units are dealt out by iterative stratification over their
tags instead (``prep.split.iterative``), each fold wanting an equal share of every tag.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from prep.errors import FoldsError, PrepError, TooFewSamplesError, UsageError
from prep.layout import FOLDS_FILE
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.split.splitters import Unit

FOLDS_HEADER = ("path", "fold")
# What --folds can stratify by; another splitter plugin splits train/valid only.
FOLD_SPLITTERS = ("stratified", "random")


def check_fold_count(folds: int) -> int:
    """``folds`` when it makes a cross-validation (0: none; else at least 2).

    Raises:
        UsageError: 1 or a negative count.
    """
    if folds == 0 or folds >= 2:
        return folds
    raise UsageError(f"--folds {folds}: a cross-validation needs at least 2 folds")


def assign_folds(units: "Sequence[Unit]", folds: int, seed: int, *, stratified: bool = True, every_class: bool = True) -> list[int]:
    """The fold (0 to ``folds`` - 1) of each unit; see the module docstring.

    Args:
        units: the training pool's units; ``label`` is the stratum.
        stratified: deal each stratum out on its own (else all units as one).
        every_class: each stratum is a class that every fold must hold (classification);
            segmentation strata are not, since a pair holds several classes.

    Raises:
        TooFewSamplesError: a class with fewer units than folds (named), or a group larger
            than a fold (named).
    """
    total = sum(unit.size for unit in units)
    if len(units) < folds:
        raise TooFewSamplesError(f"--folds {folds}: there are only {len(units)} samples (or groups) to share among {folds} folds")
    share = total / folds
    largest = max(units, key=lambda u: (u.size, u.key))
    if largest.size > share:
        raise TooFewSamplesError(
            f"The group of {largest.key} ({largest.size} files kept together by --group-pattern or as identical copies) "
            f"is larger than a fold: {folds} folds of {total} samples hold about {math.floor(share)} each. "
            f"Use fewer --folds or a finer --group-pattern."
        )
    if stratified and units[0].tags is not None:
        from prep.split.iterative import iterative_parts

        parts = [str(k) for k in range(folds)]
        dealt = iterative_parts(
            [u.tags or frozenset() for u in units], [u.size for u in units], [u.key for u in units],
            parts, {part: 1 / folds for part in parts}, f"{seed}:folds:tags",
        )
        return [int(part) for part in dealt]
    stratum_of: "Callable[[Unit], str]" = (lambda u: u.label or "") if stratified else (lambda u: "")
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for index, unit in enumerate(units):
        by_stratum[stratum_of(unit)].append(index)
    if stratified and every_class:
        _check_classes_large_enough(by_stratum, folds)
    fold_of = [0] * len(units)
    totals = [0] * folds
    for stratum in sorted(by_stratum):
        order = sorted(by_stratum[stratum], key=lambda i: units[i].key)
        random.Random(f"{seed}:folds:{stratum}").shuffle(order)
        order.sort(key=lambda i: -units[i].size)  # stable: equal sizes keep the shuffled order
        in_stratum = [0] * folds
        for index in order:
            fold = min(range(folds), key=lambda f: (in_stratum[f], totals[f], f))
            fold_of[index] = fold
            in_stratum[fold] += units[index].size
            totals[fold] += units[index].size
    return fold_of


def _check_classes_large_enough(by_stratum: dict[str, list[int]], folds: int) -> None:
    """A class needs a unit in every fold: each fold's model is validated on it."""
    small = {s: len(ix) for s, ix in by_stratum.items() if len(ix) < folds}
    if small:
        names = ", ".join(f"{s!r} ({n})" for s, n in sorted(small.items()))
        raise TooFewSamplesError(
            f"Too few samples (or groups) for {folds} folds: {names}. Each class needs at least {folds}, "
            f"one per fold's validation part. Add images, merge or remove these classes, or use fewer --folds."
        )


def rare_mask_classes(holding: Counter, folds: int) -> dict[int, int]:
    """The class ids that fewer masks hold than there are folds: some folds' validation
    parts will lack them (id -> masks holding it)."""
    return {i: n for i, n in sorted(holding.items()) if n < folds}


def manifest_text(rows: Sequence[tuple[str, int]]) -> str:
    """``folds.csv``'s content for (path relative to ROOT, fold) rows, sorted by path."""
    from prep.util.files import csv_text

    return csv_text(FOLDS_HEADER, rows)


def read_folds(root: Path) -> dict[str, int]:
    """``ROOT/folds.csv`` as path (relative to ROOT, ``/``-separated) -> fold.

    Raises:
        FoldsError: no such file (the dataset was not split into folds), or a malformed one.
    """
    path = Path(root) / FOLDS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FoldsError(
            f"{root} was not split into folds (it has no {FOLDS_FILE}); split it with: prep split SRC --folds 5"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FoldsError(f"Cannot read {path}: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != FOLDS_HEADER:
        raise FoldsError(f"{path} does not start with the header {','.join(FOLDS_HEADER)}")
    folds: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[1].isdigit():
            raise FoldsError(f"{path}, line {line}: expected path,fold with a whole fold number, got {','.join(row)!r}")
        folds[row[0]] = int(row[1])
    if not folds:
        raise FoldsError(f"{path} names no images")
    count = max(folds.values()) + 1
    empty = sorted(set(range(count)) - set(folds.values()))
    if empty:
        raise FoldsError(f"{path} has no images in fold {empty[0]} of {count}")
    return folds
