"""``split_dataset`` and ``undo_split``: the functions behind ``prep split``."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from prep.util.version import __version__
from prep.errors import JournalError, TargetExistsError
from prep.util.progress import NO_PROGRESS, Progress
from prep.layout import SPLITS
from prep.split.journal import JOURNAL_NAME, Journal, Status
from prep.split.sources import discover
from prep.split.placement import place, remove_empty_dirs, stopped_half_way, unplace
from prep.split.plan import Plan, SplitOptions, build_plan, check_kept_sources, check_targets

EXAMPLE_MOVES = 5

log = logging.getLogger(__name__)


@contextmanager
def _phase(name: str) -> Iterator[None]:
    """Log how long a phase took (shown with prep --verbose)."""
    began = time.perf_counter()
    yield
    log.debug("%s: %.3fs", name, time.perf_counter() - began)


@dataclass
class SplitReport:
    """What a split did (or, for a dry run, would do). ``to_dict`` is the ``--json`` output."""

    source: str
    out: str
    layout: str
    description: str
    mode: str
    seed: int
    status: str  # done | dry-run | resumed | already-done
    splits: dict[str, dict[str, int]]
    rejected: list[dict[str, str]]
    duplicates: dict[str, int]
    unlabeled: int
    unlabeled_examples: list[str]
    ignored: int
    missing: list[str]
    examples: list[dict[str, str]]
    journal: str | None
    copied_instead_of_linked: int = 0
    seconds: float = 0.0
    grouping: str | None = None  # how files were kept together, when prep chose it
    class_table: str | None = None  # the segmentation class table in OUT
    folds: dict[str, dict[str, int]] | None = None  # with --folds: fold -> class -> samples (segmentation: images holding it)
    fold_sizes: dict[str, int] | None = None  # fold -> samples
    rare_classes: dict[str, int] | None = None  # segmentation: classes in fewer masks than folds -> masks
    missing_classes: dict[str, list[str]] | None = None  # segmentation: split -> classes some mask holds but none of its masks
    folds_file: str | None = None  # OUT/folds.csv
    label_hint: str | None = None  # a reading of the file names that gives other classes, when there is one
    images: dict[str, int] | None = None  # multi-label: split -> images (splits count images per tag)
    folders: dict[str, str] | None = None  # a split written under another name -> its folder (test -> testing)

    def to_dict(self) -> dict[str, Any]:
        by_reason: dict[str, int] = {}
        for item in self.rejected:
            by_reason[item["reason"]] = by_reason.get(item["reason"], 0) + 1
        data = dict(self.__dict__)
        data["totals"] = dict(self.images) if self.images is not None else {s: sum(c.values()) for s, c in self.splits.items()}
        data["rejected_by_reason"] = by_reason
        return data


@dataclass
class UndoReport:
    out: str
    restored: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a folder, so that two splits never work on one output."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"Another prep split is working on {folder}; wait for it to finish.") from None
        yield
    finally:
        os.close(fd)


def _report(src: Path, out: Path, inventory_info: dict[str, Any], plan_info: dict[str, Any], options: SplitOptions, status: str, journal: Path | None, started: float) -> SplitReport:
    return SplitReport(
        source=str(src), out=str(out), mode=options.mode, seed=options.seed, status=status,
        journal=str(journal) if journal else None, seconds=round(time.perf_counter() - started, 3),
        **inventory_info, **plan_info,
    )


def _inventory_info(inventory) -> dict[str, Any]:
    return {
        "layout": inventory.layout, "description": inventory.description,
        "unlabeled": len(inventory.unlabeled), "unlabeled_examples": inventory.unlabeled[:3],
        "ignored": len(inventory.ignored), "missing": inventory.missing,
    }


def _plan_info(plan: Plan) -> dict[str, Any]:
    moves = [e for e in plan.entries if e.src != e.dst]
    return {
        "splits": plan.counts, "rejected": plan.rejected,
        "duplicates": {
            "groups": plan.duplicate_groups, "files": plan.duplicate_files,
            "conflicting_labels": plan.conflicting_duplicates, "conflicts": plan.conflicts,
        },
        "examples": [{"from": e.src, "to": e.dst} for e in moves[:EXAMPLE_MOVES]],
        "grouping": plan.grouping, "folds": plan.folds, "fold_sizes": plan.fold_sizes, "rare_classes": plan.rare_classes,
        "missing_classes": plan.missing_classes, "images": plan.images, "folders": plan.folders,
    }


def _class_table_source(src: Path, options: SplitOptions, layout: str) -> Path | None:
    """The class table to put into the split: ``--classes``, else ``SRC/classes.csv``;
    checked to be readable and well-formed.

    Raises:
        UsageError: ``--classes`` for a dataset that is not a segmentation.
        ClassTableError: the table is unreadable or malformed.
    """
    from prep.errors import UsageError
    from prep.layout import CLASS_TABLE
    from prep.masks.class_table import read_class_table

    given = options.class_table
    if given is not None:
        path = given if given.is_absolute() or given.exists() or not (src / given).exists() else src / given
    else:
        path = src / CLASS_TABLE
        if not path.is_file():
            return None
    if layout != "segmentation":
        if given is None:
            return None  # a classes.csv beside class folders is the user's own file
        raise UsageError(f"--classes is a segmentation class table, but {src} is a {layout} dataset")
    read_class_table(path)
    return path.resolve()


def _check_class_table_target(source: Path | None, out: Path) -> None:
    """Refuse, before anything moves, to replace another class table in OUT."""
    from prep.layout import CLASS_TABLE

    target = out / CLASS_TABLE
    if source is None or not target.exists() or target.resolve() == source:
        return
    if target.read_bytes() != source.read_bytes():
        raise TargetExistsError(f"{target} exists and differs from the class table {source}; move one of them away")


def _place_class_table(journal: Journal) -> None:
    """Copy the split's class table into OUT (once; never over another file)."""
    from prep.util.files import atomic_write_bytes
    from prep.layout import CLASS_TABLE

    source = journal.report.get("class_table_source")
    target = Path(journal.out_root) / CLASS_TABLE
    if source and not target.exists() and Path(source).is_file():
        atomic_write_bytes(target, Path(source).read_bytes())


def _ancestors(rel_paths: Iterable[str]) -> set[str]:
    """Every folder above the given relative paths, up to (not including) the root."""
    # Thousands of files share a handful of folders: collect those first.
    folders: set[str] = set()
    for parent in {rel.rpartition("/")[0] for rel in rel_paths}:
        while parent and parent not in folders:
            folders.add(parent)
            parent = parent.rpartition("/")[0]
    return folders


def _created_dirs(out: Path, plan: Plan) -> list[str]:
    """Folders the placements need that do not exist yet, parents first, relative to out."""
    needed = _ancestors(e.dst for e in plan.entries)
    missing = [rel for rel in needed if not (out / rel).exists()]
    return sorted(missing, key=lambda rel: (rel.count("/"), rel))


def _emptied_source_dirs(src: Path, journal: Journal) -> list[Path]:
    return [src / rel for rel in _ancestors(e.src for e in journal.entries)]


def _folds_manifest(journal: Journal) -> str | None:
    """The ``folds.csv`` a split into folds writes (None for any other split)."""
    from prep.split.folds import manifest_text

    rows = [(e.dst, e.fold) for e in journal.entries if e.fold is not None]
    return manifest_text(rows) if rows else None


def _check_folds_target(out: Path, plan: Plan) -> None:
    """Refuse, before anything moves, to replace a ``folds.csv`` that is already in OUT."""
    from prep.layout import FOLDS_FILE

    if plan.folds is not None and (out / FOLDS_FILE).exists():
        raise TargetExistsError(f"{out / FOLDS_FILE} exists already; move it away, or run prep split --undo {out} if an earlier split made it")


def _place_folds_manifest(journal: Journal) -> None:
    """Write OUT/folds.csv, after every file is in place: it names where they are."""
    from prep.layout import FOLDS_FILE
    from prep.util.files import atomic_write_bytes

    text = _folds_manifest(journal)
    if text is not None:
        atomic_write_bytes(Path(journal.out_root) / FOLDS_FILE, text.encode("utf-8"))


def _tag_manifests(journal: Journal) -> dict[str, str]:
    """Each split's ``labels.csv`` that a multi-label split writes: the split's folder
    (``testing`` when ``test/`` was taken) -> its text."""
    from prep.split.sources import MULTILABEL_CSV

    if journal.layout != MULTILABEL_CSV:
        return {}
    from prep.split.tag_manifest import labels_text

    rows: dict[str, list[tuple[str, str]]] = {}
    for entry in journal.entries:
        if entry.split in SPLITS:
            rows.setdefault(entry.dst.split("/", 1)[0], []).append((entry.dst.rpartition("/")[2], entry.label or ""))
    return {split: labels_text(split_rows) for split, split_rows in rows.items()}


def _check_tag_manifest_targets(out: Path, plan: Plan) -> None:
    """Refuse, before anything moves, to replace a split's ``labels.csv`` already in OUT."""
    from prep.layout import LABELS_FILE

    for split in sorted(plan.images or {}):
        target = out / plan.folders.get(split, split) / LABELS_FILE
        if target.exists():
            raise TargetExistsError(f"{target} exists already; move it away, or run prep split --undo {out} if an earlier split made it")


def _place_tag_manifests(journal: Journal) -> None:
    """Write each split's labels.csv, after every file is in place: it names them."""
    from prep.layout import LABELS_FILE
    from prep.util.files import atomic_write_bytes

    for folder, text in _tag_manifests(journal).items():
        atomic_write_bytes(Path(journal.out_root) / folder / LABELS_FILE, text.encode("utf-8"))


def _remove_tag_manifests(journal: Journal) -> None:
    """Remove the labels.csv files the split wrote, when they are still as written."""
    from prep.layout import LABELS_FILE

    for folder, text in _tag_manifests(journal).items():
        target = Path(journal.out_root) / folder / LABELS_FILE
        if target.is_file() and target.read_bytes() == text.encode("utf-8"):
            target.unlink()


def _finish(journal: Journal, progress: Progress, resuming: bool) -> int:
    out = Path(journal.out_root)
    _place_class_table(journal)
    for rel in journal.created_dirs:
        try:
            (out / rel).mkdir(exist_ok=True)
        except OSError as exc:
            raise stopped_half_way(journal, 0, exc) from None
    with progress.task("Placing files", len(journal.entries)) as advance:
        result = place(journal, advance, resuming=resuming)
    if journal.mode == "move":
        remove_empty_dirs(_emptied_source_dirs(Path(journal.src_root), journal))
    _place_folds_manifest(journal)
    _place_tag_manifests(journal)
    journal.status = Status.DONE
    journal.save(durable=False)
    return result.copied_instead_of_linked


def split_dataset(src: Path, options: SplitOptions = SplitOptions(), *, dry_run: bool = False, progress: Progress = NO_PROGRESS) -> SplitReport:
    """Split a raw dataset folder into train/valid(/test), or finish an interrupted split.

    The plan is written to ``OUT/split-journal.json`` before anything moves, so that a
    killed run can be finished by calling this again with the same options, or reversed
    with ``undo_split``.

    Args:
        src: the raw dataset folder.
        options: see ``SplitOptions``.
        dry_run: plan and check, but write nothing.
        progress: receives progress updates.

    Returns:
        The report: counts per split and class, rejected files, duplicates and more.

    Raises:
        PrepError: a subclass naming the problem; nothing has been moved when it is raised
            before placement starts, and the journal allows finishing or undoing after.
    """
    started = time.perf_counter()
    src = src.expanduser().resolve()
    out = (options.out.expanduser().resolve() if options.out else src)
    journal = Journal.find(out) if out.is_dir() else None
    if journal is not None:
        return _continue(journal, src, out, options, dry_run, progress, started)
    with _phase("discover"):
        inventory = discover(src, options.layout_options(), skip={out} if out != src else set())
    table = _class_table_source(src, options, inventory.layout)
    label_hint = None
    if inventory.layout == "filename-labels" and options.label_parser == "prefix" and options.label_pattern is None:
        from prep.split.label_parsers import merged_by_prefix

        label_hint = merged_by_prefix([s.rel.rpartition("/")[2] for s in inventory.samples])
    with _phase("plan"):
        plan = build_plan(src, inventory, options, progress, class_table=table)
    with _phase("check targets"):
        check_kept_sources(src, out, options.mode, plan.entries)
        check_targets(src, out, plan.entries)
        _check_class_table_target(table, out)
        _check_folds_target(out, plan)
        _check_tag_manifest_targets(out, plan)
    from prep.layout import CLASS_TABLE, FOLDS_FILE

    info = (_inventory_info(inventory), {
        **_plan_info(plan), "class_table": str(out / CLASS_TABLE) if table else None,
        "folds_file": str(out / FOLDS_FILE) if plan.folds is not None else None, "label_hint": label_hint,
    })
    if dry_run:
        return _report(src, out, *info, options, "dry-run", None, started)
    out_is_new = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        if Journal.find(out) is not None:
            raise JournalError(f"Another prep split started on {out} meanwhile; run this again.")
        Journal.discard_stale_temp(out)
        journal = Journal(
            prep_version=__version__, status=Status.IN_PROGRESS, src_root=str(src), out_root=str(out),
            mode=options.mode, seed=options.seed, options=options.decisive(), layout=inventory.layout,
            created_dirs=(["."] if out_is_new else []) + _created_dirs(out, plan), entries=plan.entries,
        )
        report = _report(src, out, *info, options, "done", journal.path, started)
        journal.report = {**report.to_dict(), "class_table_source": str(table) if table else None}
        with _phase("write journal"):
            journal.save()
        with _phase("place"):
            copied = _finish(journal, progress, resuming=False)
    report.copied_instead_of_linked = copied
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _continue(journal: Journal, src: Path, out: Path, options: SplitOptions, dry_run: bool, progress: Progress, started: float) -> SplitReport:
    if journal.status == Status.UNDOING:
        raise JournalError(f"An undo of the split in {out} was interrupted; finish it with: prep split --undo {out}")
    same = journal.options == options.decisive() and journal.src_root == str(src)
    if not same:
        if journal.status == Status.DONE:
            raise TargetExistsError(
                f"{out} already holds a split made with other options (see {journal.path}). "
                f"Undo it first with: prep split --undo {out}"
            )
        raise JournalError(
            f"{out} holds an unfinished split made with other options (see {journal.path}). "
            f"Finish it by re-running the same command, or reverse it with: prep split --undo {out}"
        )
    saved = dict(journal.report)
    for key in ("totals", "rejected_by_reason", "class_table_source"):
        saved.pop(key, None)
    if journal.status == Status.DONE or dry_run:
        saved.update(status="already-done" if journal.status == Status.DONE else "dry-run")
        saved["seconds"] = round(time.perf_counter() - started, 3)
        return SplitReport(**saved)
    with _exclusive(out):
        copied = _finish(journal, progress, resuming=True)
    saved.update(status="resumed", copied_instead_of_linked=copied, seconds=round(time.perf_counter() - started, 3))
    return SplitReport(**saved)


def _remove_class_table_copy(journal: Journal) -> None:
    """Remove the class table the split copied into OUT, when it is still an exact copy."""
    from prep.layout import CLASS_TABLE

    source = journal.report.get("class_table_source")
    target = Path(journal.out_root) / CLASS_TABLE
    if source and target.is_file() and target.resolve() != Path(source).resolve():
        if Path(source).is_file() and Path(source).read_bytes() == target.read_bytes():
            target.unlink()


def _remove_folds_manifest(journal: Journal) -> None:
    """Remove the folds.csv the split wrote, when it is still as written."""
    from prep.layout import FOLDS_FILE

    text = _folds_manifest(journal)
    target = Path(journal.out_root) / FOLDS_FILE
    if text is not None and target.is_file() and target.read_bytes() == text.encode("utf-8"):
        target.unlink()


def _mark_undoing(journal: Journal) -> None:
    """Record that an undo has begun, unless the disk is too full to write the journal.

    The mark only turns a later ``prep split`` into a pointer to ``--undo``; without it a
    re-run would simply place the files again. Undoing frees space, so a split stopped by a
    full disk must be undoable while the disk is still full.
    """
    previous = journal.status
    journal.status = Status.UNDOING
    try:
        journal.save()
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        journal.status = previous
        log.info("The disk is full: undoing without marking the journal first")


def undo_split(out: Path, progress: Progress = NO_PROGRESS) -> UndoReport:
    """Put every file back where it was before the split in ``out``, finished or not.

    Raises:
        JournalError: there is no journal in ``out``, or a file is not where it should be.
    """
    started = time.perf_counter()
    out = out.expanduser().resolve()
    if not (out / JOURNAL_NAME).exists():
        if out.is_dir():
            with _exclusive(out):  # a run killed while writing its first journal moved nothing
                Journal.discard_stale_temp(out)
        raise JournalError(f"No split journal ({JOURNAL_NAME}) in {out}; there is nothing to undo.")
    with _exclusive(out):
        journal = Journal.load(out / JOURNAL_NAME)  # read under the lock: it is the truth
        if journal.status != Status.UNDOING:
            _mark_undoing(journal)
        with progress.task("Restoring files", len(journal.entries)) as advance:
            restored = unplace(journal, advance)
        _remove_class_table_copy(journal)
        _remove_folds_manifest(journal)
        _remove_tag_manifests(journal)
        remove_empty_dirs([out / rel for rel in journal.created_dirs if rel != "."])
        journal.path.unlink()
        Journal.discard_stale_temp(out)
        if "." in journal.created_dirs:
            remove_empty_dirs([out])
    return UndoReport(str(out), restored, round(time.perf_counter() - started, 3))
