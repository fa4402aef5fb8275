"""``prep lr-find``: the learning-rate range test, as a PNG and a suggested learning rate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from prep.cli import options, output


def lr_find_command(
    data: options.Dataset = None,
    plugin: options.Plugin = "resnet-finetune",
    arch: options.Arch = None,
    weights: options.Weights = None,
    normalize: options.Normalize = "auto",
    recipe: options.Recipe = None,
    optimizer: options.Optimizer = None,
    batch_size: options.BatchSize = None,
    image_size: options.ImageSize = 224,
    preset: options.Preset = None,
    start_lr: float = typer.Option(1e-7, "--start-lr", help="The first learning rate.", rich_help_panel="Range"),
    end_lr: float = typer.Option(10.0, "--end-lr", help="The last learning rate, unless the loss diverges first.", rich_help_panel="Range"),
    steps: int = typer.Option(100, "--steps", min=5, help="Optimiser steps, the learning rate growing exponentially.", rich_help_panel="Range"),
    out: Path = typer.Option(Path("lr_find.png"), "--out", help="The PNG of loss against learning rate.", rich_help_panel="Run"),
    seed: options.Seed = 0,
    device: options.Device = None,
    workers: options.Workers = None,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON, with the curve.", rich_help_panel="Run"),
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
