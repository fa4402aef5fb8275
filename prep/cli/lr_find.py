"""``prep lr-find``: the learning-rate range test, as a PNG and a suggested learning rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prep.cli import output
from prep.stats.normalization import NORMALIZE_HELP
from prep.train.weights import WEIGHTS_HELP


def lr_find_command(
    data: Optional[Path] = typer.Argument(None, help="The split dataset (default: the one prep split made here)."),
    plugin: str = typer.Option("resnet-finetune", "--plugin", help="A registered trainer (see prep plugins)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="The trainer's architecture (default: the trainer's)."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP + " Default: the trainer's."),
    normalize: str = typer.Option("auto", "--normalize", help=NORMALIZE_HELP),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="The recipe whose optimiser, weight decay and backbone rate to use (default: the trainer's first)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd | adam | adamw | rmsprop (default: the recipe's)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per step: the batch size you will train with."),
    image_size: int = typer.Option(224, "--image-size", min=16, help="The side, in pixels, you will train at."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Augmentation preset or pipeline file (default: the recipe's)."),
    start_lr: float = typer.Option(1e-7, "--start-lr", help="The first learning rate."),
    end_lr: float = typer.Option(10.0, "--end-lr", help="The last learning rate, unless the loss diverges first."),
    steps: int = typer.Option(100, "--steps", min=5, help="Optimiser steps, the learning rate growing exponentially."),
    out: Path = typer.Option(Path("lr_find.png"), "--out", help="The PNG of loss against learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seeds the model's new head and the batches."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Loader processes (default: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON, with the curve."),
) -> None:
    """Find a learning rate: a short run whose rate grows, plotted, with a suggestion.

    Trains briefly with a rate growing from tiny to huge, plots the loss against it, and
    suggests the rate where the loss falls fastest. The model is left untouched: no run folder.
    """
    from prep.train.lr_find import lr_find
    from prep.train.options import TrainOptions

    options = TrainOptions(
        plugin=plugin, arch=arch, weights=weights, normalize=normalize, recipe=recipe, optimizer=optimizer,
        batch_size=batch_size, image_size=image_size, preset=preset, seed=seed, device=device, workers=workers,
        cache="off",  # a hundred steps: decoding every image first would cost more than it saves
    )
    result = lr_find(
        output.chosen_dataset(data), options, out, start_lr=start_lr, end_lr=end_lr, steps=steps,
        progress=output.RichProgress(min_total=1),
    )
    if as_json:
        output.stdout.print_json(json.dumps(result))
        return
    setup = result["setup"]
    output.info(output.escape(
        f"{setup['trainer']} {setup['arch'] or ''}: weights {setup['weights']}, normalisation {setup['normalization']}, "
        f"recipe {setup['recipe']} ({setup['recipe_about']})"
    ), soft_wrap=True)
    if result["suggestion"] is None:
        output.stdout.print(output.escape(f"The loss never fell over {result['steps']} steps; no suggestion. The curve: {result['png']}"))
        return
    lr = f"{result['suggestion']:.1e}"
    output.stdout.print(output.escape(f"Suggested learning rate: {lr} (where the loss falls fastest). The curve: {result['png']}"))
    output.stdout.print(output.escape(f"Train with it: prep train --plugin {setup['trainer']} --lr {lr}"))
