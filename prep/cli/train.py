"""``prep train``: parse options, call ``prep.training.train``, print the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from prep.cli import output


def train_command(
    data: Optional[Path] = typer.Argument(None, help="The split dataset (default: the one prep split made here)."),
    plugin: str = typer.Option("resnet-finetune", "--plugin", help="A registered trainer (see prep plugins)."),
    arch: str = typer.Option("resnet18", "--arch", help="resnet18 | resnet34 | resnet50 | another torchvision classifier."),
    weights: str = typer.Option("none", "--weights", help="imagenet (downloads; needs internet) | none | PATH to a state dict."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the trainer's recipe)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    image_size: int = typer.Option(224, "--image-size", min=16),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the recipe's)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd | adam | adamw | rmsprop."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="none | step | multistep | exponential | cosine | cosine-restarts | onecycle | plateau | lambda:NAME."),
    preset: str = typer.Option("light", "--preset", help="Augmentation preset or pipeline file."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Loader processes (default: all cores)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last.pt."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (default: runs/<plugin>-<arch>-<time>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train a model with a trainer plugin, on GPU when there is one."""
    from prep.errors import UsageError
    from prep.training import TrainOptions, train
    from prep.workspace import resolve_dataset

    if resume and run_dir is None:
        raise UsageError("--resume needs --run-dir: the run to continue")
    options = TrainOptions(
        plugin=plugin, arch=arch, weights=weights, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        image_size=image_size, lr=lr, optimizer=optimizer, scheduler=scheduler, preset=preset, seed=seed,
        device=device, workers=workers, resume=resume, run_dir=run_dir,
    )
    summary = train(resolve_dataset(data), options)
    if as_json:
        output.stdout.print_json(json.dumps(summary))
    else:
        output.stdout.print(
            f"{summary['status']}: {summary['epochs']} epochs, best valid_acc {summary['best_valid_acc']:.4f}, "
            f"final {summary['final_valid_acc']:.4f}; normalisation from {summary['normalization']}; run in {summary['run_dir']}"
        )
