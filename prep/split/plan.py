"""Turning an inventory of samples into a journal's worth of placements.

Checks every file, sets aside the bad ones, keeps groups and duplicates together, asks the
chosen splitter for a split per group, and names every destination without clashes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prep.errors import PluginError, TargetExistsError, UsageError
from prep.plugins import label_parsers, splitters
from prep.registry import Registration
from prep.util.progress import NO_PROGRESS, Progress
from prep.split.checks import DEFAULT_MAX_PIXELS, Probe, Reason, Verify, probe_paths
from prep.split.duplicates import find_duplicates
from prep.split.journal import Entry
from prep.layout import IMAGES_DIR, MASKS_DIR, REJECTED_DIR, SPLITS, is_image_name, is_junk
from prep.split.sources import MULTILABEL_CSV, Inventory, LayoutOptions, Sample
from prep.split.label_parsers import regex_label_parser
from prep.split.mask_strata import mask_strata
from prep.split.splitters import SplitRequest, SplitSize, Unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitOptions:
    """Everything ``prep split`` can be told. The defaults are the CLI's defaults."""

    valid: SplitSize = SplitSize(0.2, False)  # fraction per class, or a total count
    test: SplitSize = SplitSize(0.0, False)  # no test split unless asked for
    seed: int = 42
    mode: str = "move"  # move | link | copy | symlink
    out: Path | None = None  # None: split in place, inside the source folder
    splitter: str = "stratified"
    label_parser: str = "prefix"
    label_pattern: str | None = None  # regex with one group; overrides label_parser
    group_pattern: str | None = None  # regex; files whose match is equal stay together ("none": no groups)
    class_table: Path | None = None  # a segmentation class table to put into OUT (default: SRC/classes.csv)
    labels_csv: Path | None = None
    id_column: str | None = None
    label_column: str | None = None
    masks: Path | None = None
    mask_suffix: str = "_mask"
    multi_label: bool | None = None  # a label CSV's cells are tags (None: decided from them)
    tag_separator: str | None = None  # what separates them (None: found in the cells)
    dedupe: bool = False  # set aside all but one copy of identical files
    verify: Verify = Verify.quick
    max_pixels: int = DEFAULT_MAX_PIXELS
    folds: int = 0  # K >= 2: a K-fold cross-validation of the training pool instead of a valid split
    workers: int = field(default_factory=lambda: os.cpu_count() or 1, compare=False)

    def decisive(self) -> dict[str, Any]:
        """The options that decide the plan, as recorded in the journal.

        A re-run resumes an interrupted split only when these are equal.
        """
        return {
            "valid": self.valid.describe(), "test": self.test.describe(), "seed": self.seed,
            "mode": self.mode, "splitter": self.splitter, "label_parser": self.label_parser,
            "label_pattern": self.label_pattern, "group_pattern": self.group_pattern,
            "labels_csv": str(self.labels_csv) if self.labels_csv else None,
            "id_column": self.id_column, "label_column": self.label_column,
            "masks": str(self.masks) if self.masks else None, "mask_suffix": self.mask_suffix,
            "class_table": str(self.class_table) if self.class_table else None,
            "dedupe": self.dedupe, "verify": self.verify.value, "max_pixels": self.max_pixels,
            # Only when asked: the journals of splits without them stay as they were.
            **({"folds": self.folds} if self.folds else {}),
            **({"multi_label": self.multi_label} if self.multi_label is not None else {}),
            **({"tag_separator": self.tag_separator} if self.tag_separator is not None else {}),
        }

    def layout_options(self) -> LayoutOptions:
        parser = (
            regex_label_parser(self.label_pattern) if self.label_pattern
            else _CheckedLabelParser(label_parsers().registration(self.label_parser))
        )
        return LayoutOptions(
            parser, self.labels_csv, self.id_column, self.label_column, self.masks, self.mask_suffix, self.multi_label, self.tag_separator,
        )


class _CheckedLabelParser:
    """A registered label parser, called so that what it raises, or returns instead of a
    class name or None, is one line naming it and its plugin."""

    def __init__(self, registration: Any) -> None:
        self.registration = registration

    def __call__(self, file_name: str) -> str | None:
        label = self.registration.call(file_name)
        if label is not None and not isinstance(label, str):
            raise PluginError(
                f"The {self.registration.origin} returned {label!r} ({type(label).__name__}) for {file_name!r}; "
                "a label parser returns a class name (a str), or None for a file without a label"
            )
        return label


@dataclass
class Plan:
    """The placements, and what the report says about them."""

    entries: list[Entry]
    counts: dict[str, dict[str, int]]  # split -> class -> samples (multi-label: tag -> images holding it)
    rejected: list[dict[str, str]]
    duplicate_groups: int = 0
    duplicate_files: int = 0  # files beyond the first of each group
    conflicting_duplicates: int = 0  # groups whose copies carry different labels
    conflicts: list[list[dict[str, str]]] = field(default_factory=list)  # each such group: its copies' file and label
    grouping: str | None = None  # how files were kept together, when prep chose it
    folds: dict[str, dict[str, int]] | None = None  # fold -> class -> samples (segmentation: images holding it)
    fold_sizes: dict[str, int] | None = None  # fold -> samples
    rare_classes: dict[str, int] | None = None  # segmentation: classes in fewer masks than folds -> masks
    missing_classes: dict[str, list[str]] | None = None  # segmentation, multi-label: split -> classes some sample holds but none of its
    images: dict[str, int] | None = None  # multi-label: split -> images (counts are per tag)
    folders: dict[str, str] = field(default_factory=dict)  # a split whose folder is not its name -> that folder (testing/)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# Carvana-style views of one object: ``<id>_<view>.jpg`` (``0cdf5b5d0ce1_01.jpg``).
VIEWS_PATTERN = r"^(.+)_\d{1,3}\.[^.]+$"
NO_GROUPING = "none"


def views_grouping(inventory: Inventory) -> tuple[str, str] | None:
    """For image/mask pairs named ``<id>_<view>`` (Carvana's cars, 16 views each), the group
    pattern that keeps the views of one object in one split, and a sentence saying so;
    ``None`` when the names are not like that. A split that puts views of one car on both
    sides of train/valid measures memory, not generalisation."""
    if inventory.layout != "segmentation" or len(inventory.samples) < 2:
        return None
    compiled = re.compile(VIEWS_PATTERN)
    keys = [compiled.search(os.path.basename(s.rel)) for s in inventory.samples]
    if not all(keys):
        return None
    groups = Counter(k.group(1) for k in keys)
    if len(groups) == len(keys):
        return None
    return VIEWS_PATTERN, (
        f"the {len(keys)} images are views of {len(groups)} objects (names <id>_<view>), so all views of one "
        f"object stay in one split; --group-pattern overrides this (--group-pattern none: no grouping)"
    )


def _group_key_function(pattern: str | None):
    if pattern is None or pattern == NO_GROUPING:
        return lambda rel: rel
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--group-pattern {pattern!r} is not a valid regex: {exc}") from None

    def key(rel: str) -> str:
        match = compiled.search(os.path.basename(rel))
        if not match:
            return rel
        return "group:" + (match.group(1) if compiled.groups else match.group(0))

    return key


class _Destinations:
    """Hands out destination paths, renaming only on a clash, deterministically.

    A destination clashes with one already handed out, and with the place of any source
    file but the file's own: placing onto another source would replace it before it has
    moved (``cat/0/a.jpg`` onto ``cat/a.jpg``). The renaming rule, documented in the
    README: the file keeps its source path in its name (``cat__0__a.jpg``), then ``-1``,
    ``-2``, ... until the name is free.

    Args:
        occupied: every source file's path, relative to the output folder (only those
            inside it).
        out_prefix: the source root relative to the output folder (``""`` in place), or
            None when the sources are outside it.
    """

    def __init__(self, occupied: set[str] = frozenset(), out_prefix: str | None = None) -> None:
        self.taken: set[str] = set()
        self.occupied = occupied
        self.out_prefix = out_prefix

    def _free(self, candidate: str, own: str | None) -> bool:
        return candidate not in self.taken and (candidate == own or candidate not in self.occupied)

    def claim(self, folder: str, rel: str) -> str:
        candidate = f"{folder}/{rel[rel.rfind('/') + 1:]}"
        own = None if self.out_prefix is None else self.out_prefix + rel
        # The common case inline (a free name): this runs once per file.
        if candidate in self.taken or (candidate in self.occupied and candidate != own):
            # Same name from two source folders: keep the path in the name.
            candidate = f"{folder}/{rel.replace('/', '__')}"
            stem, ext = os.path.splitext(candidate)
            number = 1
            while not self._free(candidate, own):
                candidate = f"{stem}-{number}{ext}"
                number += 1
        self.taken.add(candidate)
        return candidate


def _sources_inside_out(src: Path, out: Path, inventory: Inventory) -> tuple[set[str], str | None]:
    """Source files' paths relative to ``out``, and the prefix that makes them so."""
    if out != src and out not in src.parents:
        return set(), None
    prefix = "" if out == src else src.relative_to(out).as_posix() + "/"
    occupied = {prefix + s.rel for s in inventory.samples}
    occupied.update(prefix + s.mask_rel for s in inventory.samples if s.mask_rel)
    return occupied, prefix


class _PlanBuilder:
    """The state shared by the steps of ``build_plan``: entries, names and counts so far."""

    def __init__(self, samples: list[Sample], destinations: _Destinations) -> None:
        self.samples = samples
        self.destinations = destinations
        self.entries: list[Entry] = []
        self.rejected: list[dict[str, str]] = []

    def reject(self, rel: str, size: int, reason: str, detail: str, label: str | None) -> None:
        folder = f"{REJECTED_DIR}/{reason}"
        self.entries.append(Entry(rel, self.destinations.claim(folder, rel), folder, label, size))
        self.rejected.append({"file": rel, "reason": reason, "detail": detail})

    def set_aside_bad(self, image_probes: list[Probe], mask_probe: dict[str, Probe]) -> list[int]:
        """Reject every sample whose image or mask failed its check; return the good ones."""
        good: list[int] = []
        for index, (sample, probe) in enumerate(zip(self.samples, image_probes)):
            mask = mask_probe[sample.mask_rel] if sample.mask_rel else None
            if probe.reason is None and (mask is None or mask.reason is None):
                good.append(index)
            elif probe.reason is not None:
                self.reject(sample.rel, probe.size, probe.reason, probe.detail, sample.label)
                if mask is not None:
                    self.reject(sample.mask_rel, mask.size, Reason.PARTNER_REJECTED, f"its image {sample.rel} is {probe.reason}", None)
            else:
                self.reject(sample.mask_rel, mask.size, mask.reason, mask.detail, None)
                self.reject(sample.rel, probe.size, Reason.PARTNER_REJECTED, f"its mask {sample.mask_rel} is {mask.reason}", sample.label)
        return good

    def units(self, good: list[int], union: _UnionFind) -> tuple[list[int], dict[int, list[int]], list[Unit]]:
        """Group the good samples by their union-find root, one splitter unit per group."""
        members_of: dict[int, list[int]] = defaultdict(list)
        for index in good:
            members_of[union.find(index)].append(index)
        roots = sorted(members_of, key=lambda r: self.samples[members_of[r][0]].rel)
        units = []
        for root in roots:
            members = members_of[root]
            if len(members) == 1:  # the common case, kept cheap
                units.append(Unit(self.samples[root].rel, self.samples[root].label, 1))
                continue
            labels = Counter(self.samples[i].label for i in members)
            majority = min(labels.items(), key=lambda kv: (-kv[1], kv[0] or ""))[0]
            units.append(Unit(self.samples[members[0]].rel, majority, len(members)))
        return roots, members_of, units


def build_plan(src: Path, inventory: Inventory, options: SplitOptions, progress: Progress = NO_PROGRESS, *, class_table: Path | None = None) -> Plan:
    """Check the files and decide where each goes.

    Args:
        class_table: the segmentation class table the split puts into OUT, checked already
            (with ``--folds``, it reads colour masks as class ids).

    Raises:
        UsageError, UnknownNameError: a bad option or an unknown splitter.
        TooFewSamplesError: a class cannot give every split (or fold) a sample, or a group
            is larger than a fold.
    """
    if options.folds:
        _check_fold_options(options)
    splitter = splitters().registration(options.splitter)
    samples = inventory.samples
    root = f"{src}{os.sep}"
    paths = [root + s.rel for s in samples]
    with_masks = [s for s in samples if s.mask_rel]
    began = time.perf_counter()
    with progress.task("Checking images", len(paths) + len(with_masks)) as advance:
        probes = probe_paths(paths + [root + s.mask_rel for s in with_masks], options.verify, options.max_pixels, options.workers, advance)
    log.debug("check images: %.3fs", time.perf_counter() - began)
    image_probes = probes[: len(paths)]
    mask_probe = {s.mask_rel: p for s, p in zip(with_masks, probes[len(paths):])}

    out = options.out.expanduser().resolve() if options.out else src
    builder = _PlanBuilder(samples, _Destinations(*_sources_inside_out(src, out, inventory)))
    good = builder.set_aside_bad(image_probes, mask_probe)
    plan = Plan(builder.entries, {}, builder.rejected)

    # Identical files stay together (or, with --dedupe, all but the first are set aside).
    groups, digests = find_duplicates([paths[i] for i in good], [image_probes[i] for i in good])
    digest_of = {good[i]: digest for i, digest in digests.items()}  # by sample index
    plan.duplicate_groups = len(groups)
    union = _UnionFind(len(samples))
    set_aside: set[int] = set()
    for group in groups:
        members = [good[i] for i in group]
        plan.duplicate_files += len(members) - 1
        if len({samples[m].label for m in members}) > 1:
            plan.conflicting_duplicates += 1
            plan.conflicts.append([{"file": samples[m].rel, "label": samples[m].label or ""} for m in members])
        for extra in members[1:]:
            if not options.dedupe:
                union.union(members[0], extra)
                continue
            sample = samples[extra]
            set_aside.add(extra)
            builder.reject(sample.rel, image_probes[extra].size, Reason.DUPLICATE, f"same bytes as {samples[members[0]].rel}", sample.label)
            if sample.mask_rel:
                builder.reject(sample.mask_rel, mask_probe[sample.mask_rel].size, Reason.PARTNER_REJECTED, f"its image {sample.rel} is a duplicate", None)
    good = [i for i in good if i not in set_aside]

    # Files whose --group-pattern match is equal stay together too.
    pattern = options.group_pattern
    if pattern is None:
        chosen = views_grouping(inventory)
        if chosen is not None:
            pattern, plan.grouping = chosen
    group_key = _group_key_function(pattern)
    first_with_key: dict[str, int] = {}
    for index in good:
        key = group_key(samples[index].rel)
        if key in first_with_key:
            union.union(first_with_key[key], index)
        else:
            first_with_key[key] = index

    roots, members_of, units = builder.units(good, union)
    request = SplitRequest(SplitSize(0.0, False) if options.folds else options.valid, options.test)
    tagged = inventory.layout == MULTILABEL_CSV
    if tagged:  # multi-label units carry their tags, and their rarest as the stratum
        units = _tagged_units(samples, good, roots, members_of, units)
    masks = _MaskClasses.read(src, samples, good, options, class_table, progress) if inventory.layout == "segmentation" else None
    if masks is not None:  # pairs are stratified by the rarest class their masks hold
        strata = mask_strata([masks.unit_ids(members_of[root]) for root in roots], 1 + len(request.held_out))
        units = [Unit(unit.key, stratum, unit.size) for unit, stratum in zip(units, strata)]
    assigned = _assign_splits(splitter, units, request, options.seed) if units else []
    split_of = {i: split for root, split in zip(roots, assigned) for i in members_of[root]}
    if masks is not None:
        plan.missing_classes = masks.missing(split_of)
    if tagged:
        plan.missing_classes = _missing_tags(samples, split_of)
    fold_of = _assign_folds(inventory, options, plan, roots, members_of, units, assigned, masks) if options.folds else {}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    images: Counter = Counter()
    plan.folders = split_folders(out, set(split_of.values()) - {"train"}, builder.destinations.occupied)
    for index in sorted(good, key=lambda i: samples[i].rel):
        sample = samples[index]
        split = split_of[index]
        folder = plan.folders.get(split, split)
        _add_sample(builder.entries, builder.destinations, sample, split, folder, image_probes[index].size, digest_of.get(index), mask_probe, fold_of.get(index), tagged)
        images[split] += 1
        for name in sample_tags(sample) if tagged else [sample.label or ""]:
            counts[split][name] += 1
    plan.counts = {s: dict(c) for s, c in counts.items()}
    if tagged:
        plan.images = dict(images)
    return plan


def split_folders(out: Path, splits: set[str], sources: set[str]) -> dict[str, str]:
    """The folder of each held-out split in OUT that does not take its own name: ``testing/``
    for the test split when OUT already has a ``test/`` of bare images that are not this
    split's sources (Kaggle's unlabeled test images), which prep's readers take as the test
    split just the same. Any other file in the way is left for ``check_targets`` to refuse.

    Args:
        sources: the split's source files, relative to OUT (those inside it).
    """
    from prep.layout import SPLIT_ALIASES

    folders = {}
    for split in sorted(splits):
        taken = out / split
        if not taken.is_dir():
            continue
        entries = [entry for entry in os.scandir(taken) if not is_junk(entry.name, entry.is_dir())]
        bare = [e for e in entries if not e.is_dir() and is_image_name(e.name) and f"{split}/{e.name}" not in sources]
        if bare and not any(e.is_dir() for e in entries):
            free = next((alias for alias, name in SPLIT_ALIASES.items() if name == split and not (out / alias).exists()), None)
            if free is not None:
                folders[split] = free
    return folders


def sample_tags(sample: Sample) -> list[str]:
    """A multi-label sample's tags (its label holds them, joined by spaces)."""
    from prep.layout import TAG_SEPARATOR

    return sample.label.split(TAG_SEPARATOR) if sample.label else []


def _tagged_units(samples, good: list[int], roots, members_of, units: list[Unit]) -> list[Unit]:
    """The units with their images' tags, and the rarest of them (over the good samples)
    as the stratum a plugin's splitter sees."""
    holding = Counter(tag for i in good for tag in sample_tags(samples[i]))
    tagged = []
    for root, unit in zip(roots, units):
        tags = frozenset(tag for i in members_of[root] for tag in sample_tags(samples[i]))
        rarest = min(tags, key=lambda t: (holding[t], t)) if tags else None
        tagged.append(Unit(unit.key, rarest, unit.size, tags))
    return tagged


def _missing_tags(samples, split_of: dict[int, str]) -> dict[str, list[str]]:
    """Each split -> the tags some image holds but none of that split's images do."""
    held: dict[str, set[str]] = defaultdict(set)
    for index, split in split_of.items():
        held[split].update(sample_tags(samples[index]))
    every = set().union(*held.values()) if held else set()
    return {split: sorted(every - tags) for split, tags in sorted(held.items()) if every - tags}


def _check_fold_options(options: SplitOptions) -> None:
    from prep.split.folds import FOLD_SPLITTERS, check_fold_count

    check_fold_count(options.folds)
    if not options.valid.is_zero:
        raise UsageError(f"--folds {options.folds} makes the validation parts itself (one fold each); leave out --valid")
    if options.splitter not in FOLD_SPLITTERS:
        raise UsageError(f"--folds deals out folds {' or '.join(FOLD_SPLITTERS)}; the splitter {options.splitter!r} makes train/valid splits only")


class _MaskClasses:
    """The class ids each pair's mask holds (read once, for the strata, the folds and the
    report), and their names."""

    def __init__(self, ids_of: dict[int, tuple[int, ...]], names: dict[int, str]) -> None:
        self.ids_of, self.names = ids_of, names
        self.holding = Counter(i for ids in ids_of.values() for i in ids)

    @classmethod
    def read(cls, src: Path, samples, good: list[int], options: SplitOptions, class_table: Path | None, progress: Progress) -> "_MaskClasses":
        from prep.masks.class_table import read_class_table
        from prep.split.mask_strata import mask_ids_present

        table = read_class_table(class_table) if class_table is not None else None
        paired = [i for i in good if samples[i].mask_rel]
        found = mask_ids_present([f"{src}{os.sep}{samples[i].mask_rel}" for i in paired], table, options.workers, progress)
        if table is not None and table.ignore is not None:
            found = [tuple(i for i in ids if i != table.ignore) for ids in found]
        return cls(dict(zip(paired, found)), dict(zip(table.ids, table.names)) if table is not None else {})

    def name(self, class_id: int) -> str:
        return self.names.get(class_id, f"class {class_id}")

    def unit_ids(self, members: list[int]) -> list[int]:
        return sorted({c for i in members for c in self.ids_of.get(i, ())})

    def missing(self, split_of: dict[int, str]) -> dict[str, list[str]]:
        """Each split -> the classes that some mask holds but none of that split's does."""
        held: dict[str, set[int]] = defaultdict(set)
        for index, split in split_of.items():
            held[split].update(self.ids_of.get(index, ()))
        every = set(self.holding)
        return {split: [self.name(i) for i in sorted(every - ids)] for split, ids in sorted(held.items()) if every - ids}


def _assign_folds(
    inventory: Inventory, options: SplitOptions, plan: Plan, roots, members_of, units: list[Unit],
    assigned: list[str], masks: "_MaskClasses | None",
) -> dict[int, int]:
    """The fold of each training sample (by sample index), with the report's per-fold counts
    in ``plan``; see ``prep.split.folds``."""
    from prep.split.folds import assign_folds, rare_mask_classes
    from prep.split.mask_strata import rarest_class

    samples = inventory.samples
    pool = [u for u, split in enumerate(assigned) if split == "train"]
    if masks is not None:
        members = [i for u in pool for i in members_of[roots[u]]]
        holding = Counter(c for i in members for c in masks.ids_of.get(i, ()))
        pool_units = [Unit(units[u].key, rarest_class(masks.unit_ids(members_of[roots[u]]), holding), units[u].size) for u in pool]
        plan.rare_classes = {masks.name(i): n for i, n in rare_mask_classes(holding, options.folds).items()}
    else:
        pool_units = [units[u] for u in pool]
    tagged = inventory.layout == MULTILABEL_CSV
    if tagged:
        holding = Counter(t for u in pool for i in members_of[roots[u]] for t in sample_tags(samples[i]))
        plan.rare_classes = {tag: n for tag, n in sorted(holding.items()) if n < options.folds}
    folds = assign_folds(pool_units, options.folds, options.seed, stratified=options.splitter == "stratified", every_class=masks is None and not tagged)
    fold_of = {i: fold for u, fold in zip(pool, folds) for i in members_of[roots[u]]}
    per_fold: dict[str, Counter] = {str(f): Counter() for f in range(options.folds)}
    for index, fold in fold_of.items():
        if masks is not None:
            per_fold[str(fold)].update(masks.name(c) for c in masks.ids_of.get(index, ()))
        elif tagged:
            per_fold[str(fold)].update(sample_tags(samples[index]))
        else:
            per_fold[str(fold)][samples[index].label or ""] += 1
    plan.folds = {f: dict(sorted(c.items())) for f, c in per_fold.items()}
    plan.fold_sizes = {str(f): 0 for f in range(options.folds)}
    for fold in fold_of.values():
        plan.fold_sizes[str(fold)] += 1
    return fold_of


def _assign_splits(splitter: Registration, units: list[Unit], request: SplitRequest, seed: int) -> list[str]:
    """Call a splitter and check its answer before anything moves: one documented split
    name per unit (so nothing can ever be written outside OUT), naming the plugin if not."""
    origin = splitter.origin
    try:
        assigned = splitter.call(units, request, seed)
    except PluginError as exc:
        raise PluginError(f"{exc}. Nothing was moved.") from None
    if isinstance(assigned, (str, bytes)) or not hasattr(assigned, "__len__"):
        raise PluginError(f"The {origin} returned {type(assigned).__name__}, not a list of split names. Nothing was moved.")
    assigned = list(assigned)
    if len(assigned) != len(units):
        raise PluginError(
            f"The {origin} returned {len(assigned)} split names for {len(units)} units; it must return one "
            f"per unit. Nothing was moved."
        )
    bad = next((name for name in assigned if name not in SPLITS), None)
    if bad is not None:
        raise PluginError(
            f"The {origin} returned the split name {bad!r}; only {', '.join(SPLITS)} are allowed. Nothing was moved."
        )
    return assigned


def _check_name_lengths(out: Path, entries: list[Entry]) -> None:
    """Find, before anything moves, destination names the file system cannot create."""
    existing = out if out.exists() else next(p for p in out.parents if p.exists())
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    out_bytes = len(os.fsencode(str(out))) + 1
    # A character takes at most 4 bytes in UTF-8: most destinations are short enough that
    # no part of them can be too long, and are passed over without encoding them.
    safe_chars = min(name_max, path_max - out_bytes - 1) // 4
    checked: set[str] = set()
    for e in entries:
        if len(e.dst) <= safe_chars:
            continue
        if out_bytes + len(os.fsencode(e.dst)) >= path_max:
            raise UsageError(f"The destination {out / e.dst} (for {e.src}) is longer than the file system allows. Nothing was moved; choose a shorter --out.")
        for part in e.dst.split("/"):
            if part in checked:
                continue
            checked.add(part)
            if len(os.fsencode(part)) > name_max:
                raise UsageError(
                    f"The name {part!r} (destination of {e.src}) is longer than the file system's "
                    f"{name_max} bytes. Nothing was moved; rename the file or its class."
                )


def _add_sample(entries, destinations, sample: Sample, split: str, folder: str, size: int, digest, mask_probe, fold: int | None = None, tagged: bool = False) -> None:
    if tagged:  # the tags stay in the journal's entry, for the split's labels.csv
        entries.append(Entry(sample.rel, destinations.claim(f"{folder}/{IMAGES_DIR}", sample.rel), split, sample.label, size, digest, fold))
        return
    if sample.mask_rel is None:
        entries.append(Entry(sample.rel, destinations.claim(f"{folder}/{sample.label}", sample.rel), split, sample.label, size, digest, fold))
        return
    image_dst = destinations.claim(f"{folder}/{IMAGES_DIR}", sample.rel)
    entries.append(Entry(sample.rel, image_dst, split, None, size, digest, fold))
    entries.append(Entry(sample.mask_rel, destinations.claim(f"{folder}/{MASKS_DIR}", sample.mask_rel), split, None, mask_probe[sample.mask_rel].size))


def check_kept_sources(src: Path, out: Path, mode: str, entries: list[Entry]) -> None:
    """Refuse a split whose ``--mode`` keeps the sources (copy, link, symlink) when a source
    that goes elsewhere lies where prep's readers find a split's images (``OUT/train/cat/``,
    ``OUT/valid/images/``): it would stay there as a training image and be in its new split
    as well, a validation image trained on. Loose files directly in ``OUT/train/`` (Kaggle's
    ``train/cat.0.jpg``) are read as no class, and may stay.

    Raises:
        UsageError: naming the mode, the folder and the first such file.
    """
    from prep.layout import SPLIT_ALIASES

    if mode == "move":
        return
    read_as_splits = {"train", "valid", "test", *SPLIT_ALIASES}
    src_root, out_root = f"{src}{os.sep}", f"{out}{os.sep}"
    kept = []
    for e in entries:
        source = src_root + e.src
        if not source.startswith(out_root) or source == out_root + e.dst:
            continue
        parts = source[len(out_root):].split(os.sep)
        if len(parts) > 2 and parts[0] in read_as_splits:
            kept.append(e)
    if kept:
        first = kept[0]
        folder = out / (src_root + first.src)[len(out_root):].split(os.sep, 1)[0]
        raise UsageError(
            f"--mode {mode} keeps each source where it is, and {len(kept)} that go to other splits are in {folder}, "
            f"which is read as a split: they would be in both (the first: {first.src} -> {first.dst}). Nothing was "
            "written. Use --mode move, or split into another folder with --out."
        )


def check_targets(src: Path, out: Path, entries: list[Entry]) -> None:
    """Refuse to overwrite anything, to pour files into a split folder that has others, or to
    make a name the output's file system cannot hold.

    A target may exist only when it is the file's own source (a file that stays put); every
    other existing target, a source of this split included, is in the way.

    Raises:
        TargetExistsError: naming the first files in the way.
        UsageError: naming a destination whose name is too long for the file system.
    """
    _check_name_lengths(out, entries)
    src_root, out_root = f"{src}{os.sep}", f"{out}{os.sep}"
    # List each destination folder once instead of testing every file: a folder that
    # does not exist yet holds nothing in the way.
    targets_in: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for e in entries:
        target = out_root + e.dst
        folder, _, name = target.rpartition(os.sep)
        targets_in[folder].append((name, target == src_root + e.src))
    in_the_way = []
    for folder, names in targets_in.items():
        try:
            present = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        in_the_way += [os.path.join(folder, n) for n, stays in names if n in present and not stays]
    if in_the_way:
        shown = ", ".join(in_the_way[:3]) + (f" and {len(in_the_way) - 3} more" if len(in_the_way) > 3 else "")
        raise TargetExistsError(f"Would overwrite {shown}. Nothing was moved. Choose another --out or move them away.")
    sources_in = {(src_root + e.src).rpartition(os.sep)[0] for e in entries}
    # Other files may share a folder with the sources (Kaggle's unlabeled images in
    # train/), but a split folder elsewhere that holds anything is someone else's.
    for split in sorted({e.dst.split("/", 1)[0] for e in entries} - {REJECTED_DIR}):
        folder = out / split
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not is_junk(d, is_dir=True)]
            if dirpath in sources_in:
                continue
            foreign = sorted(f for f in filenames if not is_junk(f))
            if foreign:
                raise TargetExistsError(
                    f"{folder} already holds files that are not part of this split "
                    f"(such as {os.path.join(dirpath, foreign[0])}). Nothing was moved. "
                    f"Choose another --out, or run prep split --undo if they come from an earlier split."
                )
