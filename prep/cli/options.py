"""The options that several commands share, declared once (Typer's ``Annotated`` form), so
that ``prep train`` and ``prep lr-find`` set up a run from the same words and checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prep.stats.normalization import NORMALIZE_HELP
from prep.train.weights import WEIGHTS_HELP

Dataset = Annotated[Optional[Path], typer.Argument(help="The split dataset (default: the one prep split made here).")]

# What a run is set up from: prep train and prep lr-find.
Plugin = Annotated[str, typer.Option("--plugin", help="A registered trainer (see prep plugins).", rich_help_panel="Model")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="The trainer's architecture (default: the trainer's; see the list below).", rich_help_panel="Model")]
Weights = Annotated[Optional[str], typer.Option("--weights", help=WEIGHTS_HELP + " Default: the trainer's (resnet-finetune: imagenet).", rich_help_panel="Model")]
Normalize = Annotated[str, typer.Option("--normalize", help=NORMALIZE_HELP, rich_help_panel="Model")]
Recipe = Annotated[Optional[str], typer.Option("--recipe", help="The trainer's named recipe (default: its first); list: print what each recipe sets.", rich_help_panel="Model")]
Optimizer = Annotated[Optional[str], typer.Option("--optimizer", help="sgd | adam | adamw | rmsprop (default: the recipe's).", rich_help_panel="Schedule")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch (per process under torchrun; default: the trainer's, 64, unet 16).", rich_help_panel="Data")]
ImageSize = Annotated[int, typer.Option("--image-size", min=16, help="The side, in pixels, images are resized and cropped to.", rich_help_panel="Data")]
Preset = Annotated[Optional[str], typer.Option("--preset", help="Augmentation preset or pipeline file; auto: none for runs under 20 epochs, light from there (default: the recipe's).", rich_help_panel="Data")]
Seed = Annotated[int, typer.Option("--seed", help="Seeds the initialisation, the order and the augmentations: the same seed repeats a run on CPU.", rich_help_panel="Run")]

# Where a model runs and how its data loads: training and using a model alike.
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present).", rich_help_panel="Run")]
Workers = Annotated[Optional[int], typer.Option("--workers", min=0, help="Loader processes (default: all cores).", rich_help_panel="Data")]
