"""``prep lr-find``: the learning-rate range test, as a PNG and a suggested learning rate."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from prep.cli import options, output

# Fewer range-test steps than this give a suggestion too noisy to train with unchecked (the
# U-Net at 20 steps suggested 0.21, which sent valid_loss to 8e10).
RELIABLE_STEPS = 50


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
    dataset = output.chosen_dataset(data)
    result = lr_find(
        dataset, options, out, start_lr=start_lr, end_lr=end_lr, steps=steps,
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
    if result["steps"] < RELIABLE_STEPS:
        output.warn(
            f"{result['steps']} steps are too few for a suggestion to trust: the loss of a short range test is noisy, "
            f"and its steepest fall can sit next to where it diverges. Run it with --steps {RELIABLE_STEPS} or more first."
        )
    given = {
        "--arch": arch, "--weights": weights, "--recipe": recipe, "--optimizer": optimizer, "--batch-size": batch_size,
        "--image-size": image_size if image_size != 224 else None, "--preset": preset,
        "--normalize": normalize if normalize != "auto" else None,
    }
    words = ["prep", "train", str(dataset), "--plugin", setup["trainer"]]
    words += [part for option, value in given.items() if value is not None for part in (option, str(value))]
    output.stdout.print(output.escape("Train with it: " + shlex.join([*words, "--lr", lr])), soft_wrap=True)
