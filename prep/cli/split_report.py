"""Drawing a split report as rich tables."""

from __future__ import annotations

from rich.table import Table

from prep.cli.output import escape, stdout
from prep.split.api import SplitReport

HEADINGS = {
    "done": "Split done",
    "dry-run": "Dry run: nothing was touched. The plan",
    "resumed": "Finished an interrupted split",
    "already-done": "Already split; nothing to do",
}


def render_split_report(report: SplitReport, verbose: bool = False) -> None:
    data = report.to_dict()
    stdout.print(f"[bold]{HEADINGS.get(report.status, report.status)}[/]: " + escape(f"{report.source} -> {report.out}"))
    stdout.print(f"Layout: {report.layout} ({report.description}); mode {report.mode}, seed {report.seed}")
    splits = [s for s in ("train", "valid", "test") if s in report.splits]
    classes = sorted({c for counts in report.splits.values() for c in counts})
    tagged = report.images is not None
    table = Table(title="Images holding each tag, per split" if tagged else "Samples per split and class", min_width=40)
    table.add_column("tag" if tagged else "class")
    for split in splits:
        table.add_column(split, justify="right")
    for name in classes:
        table.add_row(escape(name) or "(all)", *(str(report.splits[s].get(name, 0)) for s in splits))
    table.add_row(f"[bold]{'images' if tagged else 'total'}[/]", *(f"[bold]{data['totals'][s]}[/]" for s in splits))
    stdout.print(table)
    for split, folder in (report.folders or {}).items():
        stdout.print(escape(f"The {split} split is in {folder}/: {split}/ holds other files (prep leaves them there, and reads {folder}/ as the {split} split)"))
    if report.label_hint:
        stdout.print(f"[yellow]Classes may be merged:[/] {escape(report.label_hint)}")
    for split, classes in (report.missing_classes or {}).items():
        one = len(classes) == 1
        lacks = f"no image tagged {', '.join(classes)}" if tagged else f"no mask of {', '.join(classes)}"
        few = f"images carry {'it' if one else 'them'}" if tagged else f"masks hold {'it' if one else 'them'}"
        stdout.print(escape(
            f"{split} holds {lacks}: too few {few} to reach every split, so {'its' if one else 'their'} scores there will be n/a"
        ))
    if report.folds is not None:
        _render_folds(report)
    if report.rejected:
        reasons = Table(title="Set aside in _rejected/ (never deleted)")
        reasons.add_column("reason")
        reasons.add_column("files", justify="right")
        reasons.add_column("example")
        for reason, count in sorted(data["rejected_by_reason"].items()):
            example = next(r for r in report.rejected if r["reason"] == reason)
            reasons.add_row(reason, str(count), f"{example['file']}: {example['detail']}")
        stdout.print(reasons)
        if verbose:
            for item in report.rejected:
                stdout.print(f"  {item['reason']}: {item['file']} ({item['detail']})")
    if report.grouping:
        stdout.print(escape(f"Grouped: {report.grouping}"))
    if report.class_table:
        stdout.print(escape(f"Class table: {report.class_table}"))
    dup = report.duplicates
    if dup["groups"]:
        stdout.print(
            f"Duplicates: {dup['groups']} sets of identical files ({dup['files']} extra copies), each kept in one split"
            + (f"; {dup['conflicting_labels']} sets carry different labels" if dup["conflicting_labels"] else "")
        )
        conflicts = dup.get("conflicts") or []
        for group in conflicts if verbose else conflicts[:5]:
            stdout.print(escape("  identical, labeled differently: " + ", ".join(f"{c['file']} ({c['label']})" for c in group)))
        if len(conflicts) > 5 and not verbose:
            stdout.print(f"  and {len(conflicts) - 5} more sets (all of them with -v or --json)")
    if report.unlabeled:
        stdout.print(f"Unlabeled: {report.unlabeled} images left where they are (e.g. {', '.join(report.unlabeled_examples)})")
    if report.missing:
        stdout.print(f"Named but not found: {len(report.missing)} (e.g. {', '.join(report.missing[:3])})")
    if report.ignored:
        stdout.print(f"Ignored: {report.ignored} files that are not images or are system litter")
    if report.copied_instead_of_linked:
        stdout.print(f"[yellow]{report.copied_instead_of_linked} files were copied: hard links cannot cross filesystems[/]")
    if report.status == "dry-run" and report.examples:
        stdout.print("Example moves:")
        for move in report.examples:
            stdout.print(f"  {move['from']} -> {move['to']}")
    if report.journal:
        stdout.print(f"Journal: {report.journal} (undo with: prep split --undo {report.out})")
    stdout.print(f"Time: {report.seconds:.2f}s")


def _render_folds(report: SplitReport) -> None:
    """The folds of the training pool, per class (segmentation: the images holding each)."""
    folds = sorted(report.folds, key=int)
    segmentation = report.layout == "segmentation"
    title = "Images holding each class, per fold" if segmentation else "Train samples per fold and class"
    table = Table(title=title, min_width=40)
    table.add_column("class")
    for fold in folds:
        table.add_column(f"fold {fold}", justify="right")
    for name in sorted({c for counts in report.folds.values() for c in counts}):
        table.add_row(escape(name or "(all)"), *(str(report.folds[f].get(name, 0)) for f in folds))
    table.add_row("[bold]images[/]", *(f"[bold]{report.fold_sizes[f]}[/]" for f in folds))
    stdout.print(table)
    for name, masks in (report.rare_classes or {}).items():
        stdout.print(escape(f"Rare: {name} is in {masks} mask{'s' if masks != 1 else ''}, fewer than {len(folds)} folds: some folds' validation parts lack it"))
    if report.folds_file:
        stdout.print(escape(f"Folds: {report.folds_file} (train them all with: prep train --fold all)"))
