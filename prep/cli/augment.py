"""``prep augment``: preview an augmentation preset as a PNG grid."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prep.cli import options, output


def augment_command(
    data: options.Dataset = None,
    preset: str = typer.Option("auto", "--preset", help="auto (what prep train uses: the trainer's recipe, for --epochs) | none | flip | light | medium | heavy | randaugment | trivialaugment | erasing | a plugin's preset | a pipeline .yaml/.json file."),
    plugin: Optional[str] = typer.Option(None, "--plugin", help="With --preset auto: the trainer whose augmentation to show (default: the one for the dataset: resnet-finetune, or unet for masks)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="With --preset auto: the length of the run whose augmentation to show (default: the trainer's, as prep train resolves it)."),
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

    root = output.chosen_dataset(data)
    why = ""
    if preset == AUTO:
        name, preset, epochs = training_preset(root, plugin, epochs)
        why = f": what prep train --plugin {name} uses for {epochs} epoch{'s' if epochs != 1 else ''}"
    shown = resolve_preset(preset, epochs or 1)
    path = render_preview(
        root, out, preset=shown, images=images, versions=versions,
        image_size=size, split=canonical_split_name(split), seed=seed,
    )
    output.info(output.escape(f"Wrote {path} (preset {shown}{why})"))


def training_preset(root: Path, plugin: str | None, epochs: int | None) -> tuple[str, str, int]:
    """The trainer, the preset and the epochs that ``prep train`` would use on ``root``:
    the trainer's default recipe, lengthened as the run would be (``resolve_config``)."""
    from prep.data.index import DatasetIndex
    from prep.train.options import TrainOptions, resolve_config
    from prep.train.prepare import trainer_for_layout, trainer_registration
    from prep.train.trainer import ModelRequest

    index = DatasetIndex.open(root)
    name = plugin or trainer_for_layout(index.kind)
    trainer = trainer_registration(name).value
    request = ModelRequest(("a", "b"), trainer.default_arch, trainer.default_weights, task=trainer.trained_tasks()[0])
    config = resolve_config(trainer, TrainOptions(plugin=name, epochs=epochs), request, train_samples=len(index.train_images()))
    return name, config.preset, config.epochs
