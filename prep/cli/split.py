"""``prep split``: parse options, call ``split_dataset`` or ``undo_split``, show the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prep.cli import output
from prep.errors import check_choice
from prep.split.checks import DEFAULT_MAX_PIXELS, Verify
from prep.split.placement import MODES


def split_command(
    src: Path = typer.Argument(..., help="The raw dataset folder (or, with --undo, the split folder)."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Validation size: a fraction per class (0.2, the default) or a count (2000)."),
    folds: int = typer.Option(0, "--folds", help="Split the training pool into K folds for cross-validation (prep train --fold all), recorded in folds.csv, instead of a validation split.", show_default=False),
    test: str = typer.Option("0", "--test", help="Test size, like --valid; 0 makes no test split."),
    seed: int = typer.Option(42, "--seed", help="Seed for the shuffle: same input and seed, same split."),
    mode: str = typer.Option("move", "--mode", help="move (in place, by renaming) | link | copy | symlink."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the split here instead of inside SRC."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; touch nothing."),
    undo: bool = typer.Option(False, "--undo", help="Put every file of the split in SRC back where it was."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    label_pattern: Optional[str] = typer.Option(None, "--label-pattern", help="Regex with one group that captures the label from a file name."),
    label_parser: str = typer.Option("prefix", "--label-parser", help="Named label parser (see the README); prefix: the name before the first . _ or -."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Kaggle label CSV mapping file ids to labels."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="CSV column with file ids (default: id, else the first)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="CSV column with labels (default: the other of two)."),
    multi_label: Optional[bool] = typer.Option(None, "--multi-label/--single-label", help="Whether the --labels cells hold several tags (Planet's 'clear primary water'); default: decided from the cells, and the report says which.", show_default=False),
    tag_separator: Optional[str] = typer.Option(None, "--tag-separator", help="What separates the tags in a --labels cell (default: the one of ' ', ';', '|', ',' the cells use)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Folder of segmentation masks, paired with images by name."),
    mask_suffix: str = typer.Option("_mask", "--mask-suffix", help="What a mask's name adds to its image's name."),
    group_pattern: Optional[str] = typer.Option(None, "--group-pattern", help="Regex; files whose match (or first group) is equal stay in one split (none: no groups; default for <id>_<view> image/mask pairs: the views of one id together)."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Segmentation class table (CSV id,name[,r,g,b]) to put into the split as classes.csv (default: SRC/classes.csv)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Keep one of each set of identical files; set the others aside in _rejected/duplicate."),
    verify: Verify = typer.Option(Verify.quick, "--verify", help="quick: headers and ends of files; full: decode every image."),
    splitter: str = typer.Option("stratified", "--splitter", help="stratified (per class) | random | a plugin's splitter."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes for checking images (default: all cores)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Larger images are set aside as decompression bombs."),
) -> None:
    """Split a raw image folder into train/valid(/test) class folders, safely.

    Understands Kaggle's flat folders (labels in file names), class folders, label CSVs
    (multi-label ones too: images/ and labels.csv per split) and image/mask pairs. Journaled: a killed run is finished by running it again, and --undo
    restores the original layout.
    """
    from prep.split.api import split_dataset, undo_split
    from prep.split.plan import SplitOptions
    from prep.split.splitters import SplitSize
    from prep.cli.workspace import forget_dataset, remember_dataset

    check_choice("--mode", mode, MODES)
    progress = output.RichProgress()
    if undo:
        report = undo_split(src, progress)
        forget_dataset(src)
        if as_json:
            output.stdout.print_json(json.dumps(report.to_dict()))
        else:
            output.info(f"Restored {report.restored} files; {report.out} is back as it was ({report.seconds:.2f}s).")
        return
    options = SplitOptions(
        valid=SplitSize.parse(valid if valid is not None else ("0" if folds else "0.2"), "--valid"), folds=folds, test=SplitSize.parse(test, "--test"), seed=seed, mode=mode,
        out=out, splitter=splitter, label_parser=label_parser, label_pattern=label_pattern,
        group_pattern=group_pattern, labels_csv=labels, id_column=id_column, label_column=label_column,
        multi_label=multi_label, tag_separator=tag_separator if tag_separator is None else _separator(tag_separator),
        masks=masks, mask_suffix=mask_suffix, class_table=classes, dedupe=dedupe, verify=verify, max_pixels=max_pixels,
        **({"workers": workers} if workers else {}),
    )
    report = split_dataset(src, options, dry_run=dry_run, progress=progress)
    replaced = None if dry_run else remember_dataset(Path(report.out))
    if as_json:
        output.stdout.print_json(json.dumps(report.to_dict()))
    elif output.Verbosity.level >= 0:
        from prep.cli.split_report import render_split_report

        render_split_report(report, verbose=output.Verbosity.level > 0)
    if not dry_run:
        # A bare `prep train` uses the dataset split last: say so, and what it no longer uses.
        instead = f", instead of {output.escape(str(replaced))}" if replaced is not None else ""
        train = f"prep train --fold all ({len(report.folds)} models, one per fold)" if report.folds else "prep train"
        output.info(f"Next: prep stats, then {train}; with no path, they use {output.escape(report.out)}{instead}.", soft_wrap=True)


def _separator(text: str) -> str:
    """``--tag-separator``'s value: one character or a few, never empty or a line break.

    Raises:
        UsageError: an empty separator, or one holding a line break or a quote.
    """
    from prep.errors import UsageError

    if not text or any(ch in text for ch in "\r\n\"") or text.isspace() and text != " ":
        raise UsageError(f"--tag-separator {text!r}: give the character(s) between two tags, such as ' ' or '|'")
    return text
