"""Drawing dataset statistics as rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from prep.cli.output import escape, stdout


IMBALANCED_TRAINING = (
    "prep train monitors valid_balanced_acc and weighs the classes (--class-weights auto) unless told otherwise."
)


def _absent(absent: dict[str, list[str]], unit: str) -> None:
    """A line per split that lacks a class: its scores there are undefined (n/a)."""
    for split, classes in absent.items():
        if classes:
            which = ", ".join(classes)
            after = "so it cannot be scored there; prep split stratifies by class, and puts every class in valid when it can" if split != "train" else "so no model can learn it from this split"
            stdout.print(f"[yellow]{escape(split)} has no {unit} of {escape(which)}[/], {after}")


def render_stats(stats: dict[str, Any], path: Path, written: bool = True) -> None:
    kind = "exact" if stats["exact"] else "[yellow]approximate[/] (" + ("--fast half-scale decode" if stats["fast"] else f"--sample {stats['sample']}") + ")"
    table = Table(title=f"Normalisation over {stats['images']} train images ({stats['pixels']:,} pixels), {kind}")
    table.add_column("")
    for channel in ("R", "G", "B"):
        table.add_column(channel, justify="right")
    table.add_row("mean", *(f"{v:.6f}" for v in stats["mean"]))
    table.add_row("std", *(f"{v:.6f}" for v in stats["std"]))
    stdout.print(table)
    splits = stats["splits"]
    if "classes" in stats:
        counts = Table(title="Images per split and class")
        counts.add_column("class")
        for split in splits:
            counts.add_column(split, justify="right")
        counts.add_column("train share", justify="right")
        for name in stats["classes"]:
            counts.add_row(name, *(str(splits[s].get(name, 0)) for s in splits), f"{stats['class_balance']['shares'][name]:.1%}")
        stdout.print(counts)
        balance = stats["class_balance"]
        if balance.get("imbalanced"):
            stdout.print(escape(f"Imbalanced: {balance['about'].removeprefix('imbalanced: ')}.") + f" [yellow]{IMBALANCED_TRAINING}[/]")
        elif balance["max_over_min"] and balance["max_over_min"] > 1.5:
            stdout.print(f"[yellow]Somewhat imbalanced: the largest class has {balance['max_over_min']:.1f}x the images of the smallest[/]")
        _absent(stats.get("absent", {}), "images")
    elif "tags" in stats:
        _render_tags(stats)
    else:
        stdout.print("Images per split: " + ", ".join(f"{s} {n}" for s, n in splits.items()))
    sizes = stats["sizes"]
    if sizes["width"]:
        stdout.print(
            "Sizes (train): width {min}-{max} (median {median:.0f}), ".format(**sizes["width"])
            + "height {min}-{max} (median {median:.0f})".format(**sizes["height"])
        )
    stdout.print("Modes: " + ", ".join(f"{m} {n}" for m, n in stats["modes"].items())
                 + "; formats: " + ", ".join(f"{f} {n}" for f, n in stats["formats"].items()))
    for failure in stats["failed"]:
        stdout.print("[red]Could not decode[/] " + escape(f"{failure['file']}: {failure['reason']}"))
    masks = stats.get("masks")
    if masks:
        colour = len(masks.get("not_single_channel", []))
        stdout.print(
            f"Masks: {masks['masks']} single-channel, values {masks['values'][:20]}"
            + (f"; {colour} colour-coded (read through the class table)" if colour else "")
        )
        if masks.get("class_pixels"):
            shares = ", ".join(f"{name} {share:.1%}" for name, share in masks["class_pixels"].items())
            source = f" (from {masks['class_table']})" if masks.get("class_table") else ""
            stdout.print(escape(f"Classes{source}, share of pixels: {shares}"))
        if masks.get("class_balance", {}).get("imbalanced") and len(masks.get("classes", [])) > 2:
            stdout.print(escape(f"Imbalanced pixels: {masks['class_balance']['about'].removeprefix('imbalanced: ')}.") + " [yellow]prep train weighs the classes' pixels (--class-weights auto) unless told otherwise.[/]")
        _absent(masks.get("absent", {}), "pixels")
        if masks.get("problem"):
            stdout.print(f"[red]Training would stop here:[/] {escape(masks['problem'])}")
        for line in masks["advice"]:
            stdout.print(f"[yellow]{line}[/]")
    stdout.print(f"{'Written to' if written else 'Not written (it keeps the exact figures):'} {path} ({stats['seconds']:.2f}s)")


def _render_tags(stats: dict[str, Any]) -> None:
    """A multi-label dataset's tags: images holding each per split, the training split's
    shares, tags per image, and the pairs of tags that come together most."""
    splits, tags = stats["splits"], stats["tags"]
    counts = Table(title="Images holding each tag, per split")
    counts.add_column("tag")
    for split in splits:
        counts.add_column(split, justify="right")
    counts.add_column("train share", justify="right")
    for name in sorted(tags, key=lambda t: -stats["tag_shares"][t]):
        counts.add_row(escape(name), *(str(splits[s].get(name, 0)) for s in splits), f"{stats['tag_shares'][name]:.1%}")
    counts.add_row("[bold]images[/]", *(f"[bold]{stats['images_per_split'][s]}[/]" for s in splits), "")
    stdout.print(counts)
    per_image = stats["tags_per_image"]
    stdout.print(f"Tags per train image: {per_image['mean']:.2f} on average ({per_image['min']} to {per_image['max']})")
    together = stats["co_occurrence"]
    pairs = sorted(
        ((together[a][b], tags[a], tags[b]) for a in range(len(tags)) for b in range(a + 1, len(tags)) if together[a][b]),
        key=lambda pair: (-pair[0], pair[1], pair[2]),
    )
    if pairs:
        shown = ", ".join(f"{a} + {b} {n}" for n, a, b in pairs[:6])
        stdout.print(escape(f"Most frequent pairs (train images): {shown}"))
    balance = stats["class_balance"]
    if balance.get("imbalanced"):
        stdout.print(escape(f"Imbalanced tags: {balance['about'].removeprefix('imbalanced: ')}.") + " [yellow]prep train monitors valid_map, which weighs every tag equally; --sampler balanced or --class-weights auto weigh the rare ones more.[/]")
    _absent(stats.get("absent", {}), "images")
