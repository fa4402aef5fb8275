"""``prep stats``: exact per-channel mean/std and a dataset audit, written to stats.json."""

from __future__ import annotations

import json
from typing import Optional

import typer

from prep.cli import options, output


def stats_command(
    data: options.Dataset = None,
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding processes (default: all cores)."),
    fast: bool = typer.Option(False, "--fast", help="Decode JPEGs at half scale (a sixteenth fully, to correct the std): faster, approximate."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="Use this many random train images (approximate)."),
    seed: int = typer.Option(0, "--seed", help="Chooses the --sample subset."),
    mask_classes: Optional[int] = typer.Option(None, "--mask-classes", min=1, help="Segmentation: number of classes, to flag out-of-range mask values."),
    replace: bool = typer.Option(False, "--replace", help="With --fast or --sample: write the approximate figures over an exact stats.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
) -> None:
    """Exact mean/std over the train split, sizes, classes, bad files and a mask audit.

    Writes DATA/stats.json, where training finds the normalisation constants; approximate
    figures (--fast, --sample) never replace exact ones unless --replace says so.
    """
    from prep.stats.dataset_stats import STATS_FILE, compute_dataset_stats, stats_kind, write_stats

    root = output.chosen_dataset(data)
    stats = compute_dataset_stats(
        root, workers=workers, fast=fast, sample=sample, seed=seed, mask_classes=mask_classes,
        progress=output.RichProgress(),
    )
    path = root / STATS_FILE
    written = bool(stats["exact"] or replace or stats_kind(root) != "exact")
    if written:
        write_stats(root, stats)
    else:  # a --config repeat of a run would otherwise normalise differently
        output.warn(f"{path} keeps its exact figures; these approximate ones are only shown (--replace writes them)")
    if as_json:
        output.stdout.print_json(json.dumps(stats))
    elif output.Verbosity.level >= 0:
        from prep.cli.stats_report import render_stats

        render_stats(stats, path, written=written)
