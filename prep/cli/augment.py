"""``prep augment``: preview an augmentation preset as a PNG grid."""

from __future__ import annotations

from pathlib import Path

import typer

from prep.cli import options, output


def augment_command(
    data: options.Dataset = None,
    preset: str = typer.Option("auto", "--preset", help="auto (what prep train's default recipe uses for --epochs) | none | flip | light | medium | heavy | randaugment | trivialaugment | erasing | a plugin's preset | a pipeline .yaml/.json file."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="With --preset auto: the length of the run whose augmentation to show (the default recipe's is 3)."),
    out: Path = typer.Option(Path("preview.png"), "--out", help="Where to write the PNG."),
    images: int = typer.Option(4, "--images", min=1, help="Sample images, one per row."),
    versions: int = typer.Option(5, "--versions", min=1, help="Augmented versions per image."),
    size: int = typer.Option(160, "--size", min=16, help="Side of each tile in pixels."),
    split: str = typer.Option("train", "--split", help="Split to sample from."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same picture."),
) -> None:
    """Draw sample images with augmented versions (masks outlined for segmentation)."""
    from prep.augment.presets import AUTO, resolve_preset
    from prep.augment.preview import render_preview
    from prep.layout import canonical_split_name

    shown = resolve_preset(preset, epochs)
    path = render_preview(
        output.chosen_dataset(data), out, preset=shown, images=images, versions=versions,
        image_size=size, split=canonical_split_name(split), seed=seed,
    )
    why = f": what prep train uses for {epochs} epoch{'s' if epochs != 1 else ''}" if preset == AUTO else ""
    output.info(output.escape(f"Wrote {path} (preset {shown}{why})"))
