"""How many samples each split gets, and which groups go where.

Also a built-in plugin: it registers the ``stratified`` (default) and ``random`` splitters.
Both are group-aware: a unit is a set of files that must land in one split (a group from
``--group-pattern``, or files with identical bytes).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

from prep.errors import TooFewSamplesError, UsageError
from prep.hookspecs import hookimpl

# Held-out splits in the order they are filled; train takes what is left.
HELD_OUT = ("test", "valid")


@dataclass(frozen=True)
class SplitSize:
    """A held-out split's size: a fraction of each class, or a total count of samples."""

    value: float
    is_count: bool

    @classmethod
    def parse(cls, text: str | float | int, option: str) -> "SplitSize":
        """Read ``0.2`` as a fraction and ``2000`` as a count.

        Raises:
            UsageError: negative, a fraction of 1 or more, or not a number.
        """
        raw = str(text).strip()
        try:
            if raw.isdigit():
                return cls(int(raw), True)
            value = float(raw)
        except ValueError:
            raise UsageError(f"{option} takes a fraction like 0.2 or a count like 2000, got {raw!r}") from None
        if not 0 <= value < 1 or math.isnan(value):
            raise UsageError(
                f"{option} {raw} is neither a fraction in [0, 1) nor a whole count of samples"
            )
        return cls(value, False)

    @property
    def is_zero(self) -> bool:
        return self.value == 0

    def describe(self) -> str:
        return f"{int(self.value)} samples" if self.is_count else f"{self.value:g}"


@dataclass(frozen=True)
class SplitRequest:
    """The held-out split sizes a user asked for."""

    valid: SplitSize
    test: SplitSize

    def __post_init__(self) -> None:
        fractions = [size.value for size in (self.valid, self.test) if not size.is_count]
        if sum(fractions) >= 1:
            raise UsageError(
                f"--valid {self.valid.describe()} and --test {self.test.describe()} leave nothing for train: "
                f"their fractions add up to {sum(fractions):g}; make them add up to less than 1"
            )

    def size_of(self, split: str) -> SplitSize:
        return self.valid if split == "valid" else self.test

    @property
    def held_out(self) -> tuple[str, ...]:
        """The held-out splits that were asked for, in fill order."""
        return tuple(s for s in HELD_OUT if not self.size_of(s).is_zero)


@dataclass(frozen=True)
class Unit:
    """Files that must land in the same split, seen from the splitter."""

    key: str  # stable identity, used to order units before the seeded shuffle
    label: str | None  # the stratum (majority class; segmentation: the rarest class its masks hold; multi-label: its rarest tag)
    size: int  # number of files
    tags: frozenset[str] | None = None  # multi-label: every tag of its images (else None)


Splitter = Callable[[Sequence[Unit], SplitRequest, int], list[str]]


def _largest_remainder(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Share ``total`` in proportion to ``weights`` so that the shares add up exactly."""
    weight_sum = sum(weights.values())
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    shares = {k: math.floor(v) for k, v in exact.items()}
    leftover = total - sum(shares.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), k))[:leftover]:
        shares[k] += 1
    return shares


def stratum_targets(
    strata: dict[str, int], request: SplitRequest
) -> dict[str, dict[str, int]]:
    """How many samples of each stratum go to each held-out split.

    A fraction is rounded per stratum; a count is shared between strata in proportion to
    their size. Every requested split then gets at least one sample of every stratum.

    Args:
        strata: samples per stratum (class).
        request: the requested sizes.

    Raises:
        UsageError: the counts ask for more samples than there are.
    """
    total = sum(strata.values())
    targets: dict[str, dict[str, int]] = {s: {} for s in strata}
    for split in request.held_out:
        size = request.size_of(split)
        if size.is_count:
            shares = _largest_remainder(int(size.value), strata)
        else:
            shares = {s: math.floor(n * size.value + 0.5) for s, n in strata.items()}
        for stratum, share in shares.items():
            targets[stratum][split] = share
    _check_counts(request, total)
    for stratum, n in strata.items():
        wanted = targets[stratum]
        for split in wanted:
            wanted[split] = max(wanted[split], 1)
        # train needs at least one sample too: take from the largest held-out split.
        while wanted and sum(wanted.values()) >= n:
            largest = max(wanted, key=lambda s: (wanted[s], s))
            if wanted[largest] <= 1:
                break
            wanted[largest] -= 1
    return targets


def _check_counts(request: SplitRequest, total: int) -> None:
    """Raises: UsageError: held-out counts that ask for every sample or more."""
    asked = sum(int(request.size_of(s).value) for s in request.held_out if request.size_of(s).is_count)
    if asked >= total and asked:
        raise UsageError(f"--valid and --test ask for {asked} samples but there are only {total}")


def _never_empty(assigned: list[str], wanted) -> list[str]:
    """Give a requested held-out split that got no unit (groups too large, or too few
    units) one of train's, while train keeps at least one."""
    for split in wanted:
        if split not in assigned and assigned.count("train") > 1:
            assigned[assigned.index("train")] = split
    return assigned


def _check_strata_large_enough(units_by_stratum: dict[str, list[Unit]], request: SplitRequest) -> None:
    needed = 1 + len(request.held_out)
    small = {s: len(u) for s, u in units_by_stratum.items() if len(u) < needed}
    if small:
        names = ", ".join(f"{s!r} ({n})" for s, n in sorted(small.items()))
        splits = ", ".join(("train",) + tuple(reversed(request.held_out)))
        raise TooFewSamplesError(
            f"Too few samples (or groups) to split into {splits}: {names}. Each class needs "
            f"at least {needed}. Add images, merge or remove these classes, or ask for fewer splits."
        )


def _fill(units: list[Unit], wanted: dict[str, int]) -> list[str]:
    """Assign shuffled units in order: each goes to the first held-out split it brings
    closer to its target, else to train."""
    remaining = dict(wanted)
    assigned = []
    for unit in units:
        for split in HELD_OUT:
            if split in remaining and unit.size < 2 * remaining[split]:
                remaining[split] -= unit.size
                assigned.append(split)
                break
        else:
            assigned.append("train")
    return _never_empty(assigned, wanted)  # large groups can overshoot every target


def _split_by_strata(
    units: Sequence[Unit], request: SplitRequest, seed: int, stratum_of: Callable[[Unit], str]
) -> list[str]:
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for index, unit in enumerate(units):
        by_stratum[stratum_of(unit)].append(index)
    _check_strata_large_enough({s: [units[i] for i in ix] for s, ix in by_stratum.items()}, request)
    sizes = {s: sum(units[i].size for i in ix) for s, ix in by_stratum.items()}
    targets = stratum_targets(sizes, request)
    result = ["train"] * len(units)
    for stratum in sorted(by_stratum):
        order = sorted(by_stratum[stratum], key=lambda i: units[i].key)
        # A string seed is hashed with SHA-512 by random.Random: the same on every machine.
        random.Random(f"{seed}:{stratum}").shuffle(order)
        for index, split in zip(order, _fill([units[i] for i in order], targets[stratum])):
            result[index] = split
    return result


def stratified_split(units: Sequence[Unit], request: SplitRequest, seed: int) -> list[str]:
    """Split every class in the requested proportions (the default); multi-label units by
    iterative stratification over their tags (``prep.split.iterative``)."""
    if units and units[0].tags is not None:
        return _split_by_tags(units, request, seed)
    return _split_by_strata(units, request, seed, lambda u: u.label or "")


def _split_by_tags(units: Sequence[Unit], request: SplitRequest, seed: int) -> list[str]:
    from prep.split.iterative import iterative_parts

    total = sum(unit.size for unit in units)
    _check_counts(request, total)
    shares = {}
    for split in request.held_out:
        size = request.size_of(split)
        shares[split] = size.value / total if size.is_count else size.value
    shares["train"] = 1 - sum(shares.values())
    parts = ("train", *reversed(request.held_out))
    assigned = iterative_parts(
        [unit.tags or frozenset() for unit in units], [unit.size for unit in units], [unit.key for unit in units],
        parts, shares, f"{seed}:tags", at_least_one=request.held_out,
    )
    return _never_empty(assigned, request.held_out)


def random_split(units: Sequence[Unit], request: SplitRequest, seed: int) -> list[str]:
    """Split all samples together, ignoring classes."""
    return _split_by_strata(units, request, seed, lambda u: "")


@hookimpl
def register_splitters(register: Callable[[str, Splitter], None]) -> None:
    register("stratified", stratified_split)
    register("random", random_split)
