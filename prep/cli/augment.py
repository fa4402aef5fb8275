"""``prep augment``: preview an augmentation preset as a PNG grid."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prep.cli import output


def augment_command(
    data: Optional[Path] = typer.Argument(None, help="The split dataset (default: the one prep split made here)."),
    preset: str = typer.Option("medium", "--preset", help="none | flip | light | medium | heavy | a plugin's preset | a pipeline .yaml/.json file."),
    out: Path = typer.Option(Path("preview.png"), "--out", help="Where to write the PNG."),
    images: int = typer.Option(4, "--images", min=1, help="Sample images, one per row."),
    versions: int = typer.Option(5, "--versions", min=1, help="Augmented versions per image."),
    size: int = typer.Option(160, "--size", min=16, help="Side of each tile in pixels."),
    split: str = typer.Option("train", "--split", help="Split to sample from."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same picture."),
) -> None:
    """Draw sample images with augmented versions (masks overlaid for segmentation)."""
    from prep.augment.preview import render_preview
    from prep.layout import canonical_split_name
    from prep.workspace import resolve_dataset

    path = render_preview(
        resolve_dataset(data), out, preset=preset, images=images, versions=versions,
        image_size=size, split=canonical_split_name(split), seed=seed,
    )
    output.info(f"Wrote {path}")
