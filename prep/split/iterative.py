"""Iterative stratification of multi-label samples (Sechidis, Tsoumakas and Vlahavas, "On
the Stratification of Multi-Label Data", ECML PKDD 2011, Algorithm 1), for ``prep split``'s
train/valid/test parts and for its folds.

A multi-label image belongs to several tags at once, so it cannot be stratified by one
class. The algorithm deals out the tags from the rarest up: each round takes the tag with
the fewest samples still to place, and gives each of its samples to the part that wants the
most of that tag (ties: the part that wants the most samples, then a seeded draw); every
part's wants go down by what it received. Rare tags are placed while every part still
wants them, which is what spreads them.

Two changes to the published method, both for what ``prep split`` promises:

* units, not samples: a unit is a group of files that must stay together (``--group-
  pattern``, identical copies) and counts as its size;
* a held-out part wants at least one sample of each tag that has enough samples for every
  part (like ``stratum_targets`` does for classes), so a tag of 3 images reaches valid
  whenever the split has a valid part, instead of all going to train by rounding.

It is written here rather than taken from the ``iterative-stratification`` package because
that package brings scikit-learn (and SciPy) into prep's runtime for fifty lines, and draws
with NumPy's global-style ``RandomState``; here every draw comes from ``random.Random`` with
a string seed (SHA-512 inside), the same on every machine and Python, as prep's other
splits are.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence


def iterative_parts(
    tags: Sequence[frozenset[str]], sizes: Sequence[int], keys: Sequence[str], parts: Sequence[str],
    wanted: dict[str, float], seed: str, *, at_least_one: Sequence[str] = (),
) -> list[str]:
    """The part of each unit.

    Args:
        tags: each unit's tags (an empty set for an image without any).
        sizes: each unit's number of samples.
        keys: each unit's stable identity, to order units before the seeded draws.
        parts: the names of the parts, in the order that breaks the last ties.
        wanted: each part's share of the samples (they add up to 1).
        seed: the string the draws are seeded with.
        at_least_one: parts that want one sample of every tag that has at least
            ``len(parts)`` of them, however small their share.
    """
    total = sum(sizes)
    samples_of: dict[str, int] = defaultdict(int)
    units_of: dict[str, list[int]] = defaultdict(list)
    for index, (unit_tags, size) in enumerate(zip(tags, sizes)):
        for tag in unit_tags:
            samples_of[tag] += size
            units_of[tag].append(index)
    want = {part: wanted[part] * total for part in parts}
    want_tag = {
        tag: {part: _tag_want(n, wanted[part], part in at_least_one, len(parts)) for part in parts}
        for tag, n in samples_of.items()
    }
    rng = random.Random(seed)
    order = sorted(range(len(tags)), key=lambda i: keys[i])
    rng.shuffle(order)  # the order a tag's units are dealt in, and the tie-breaker
    position = {unit: place for place, unit in enumerate(order)}
    assigned: list[str | None] = [None] * len(tags)
    remaining = dict(samples_of)
    while remaining:
        tag = min(remaining, key=lambda t: (remaining[t], t))
        for unit in sorted(units_of[tag], key=position.__getitem__):
            if assigned[unit] is not None:
                continue
            part = _choose(parts, lambda p: (want_tag[tag][p], want[p]), rng)
            _give(unit, part, tags, sizes, assigned, want, want_tag, remaining)
        remaining.pop(tag, None)
    for unit in order:  # images without a tag fill what the parts still want
        if assigned[unit] is None:
            part = _choose(parts, lambda p: (want[p],), rng)
            _give(unit, part, tags, sizes, assigned, want, want_tag, remaining)
    return [part for part in assigned if part is not None]


def _tag_want(samples: int, share: float, held_out: bool, parts: int) -> float:
    exact = samples * share
    if held_out and samples >= parts:
        return max(exact, 1.0)
    return exact


def _choose(parts: Sequence[str], score, rng: random.Random) -> str:
    best = max(score(p) for p in parts)
    tied = [p for p in parts if score(p) == best]
    return tied[0] if len(tied) == 1 else tied[rng.randrange(len(tied))]


def _give(unit, part, tags, sizes, assigned, want, want_tag, remaining) -> None:
    assigned[unit] = part
    want[part] -= sizes[unit]
    for tag in tags[unit]:
        want_tag[tag][part] -= sizes[unit]
        if tag in remaining:
            remaining[tag] -= sizes[unit]
