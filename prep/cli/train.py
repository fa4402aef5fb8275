"""``prep train``: parse options, call ``prep.train.prepare.train``, print the summary.

With ``--config runs/NAME/config.yaml`` the run's recorded data, options and resolved
settings come back, and any option given on the command line replaces its value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from typer.core import TyperCommand

from prep.cli import options, output
from prep.errors import INTERRUPTED_EXIT_CODE
from prep.data.cache_plan import CACHE_HELP

ENGINE = "Engine (default: the recipe's)"
# The pretrained network's options apart: --freeze-norm-stats/--update-norm-stats, the longest
# name, would otherwise widen the Engine panel's name column until its help had a word a line.
FINE_TUNING = "Fine-tuning (default: the recipe's)"


# The share of an epoch spent waiting for the loader above which the epoch line says so:
# loading, not the model, then limits training.
LOADING_BOUND = 0.2


def _loading(metrics: dict) -> str:
    """What the loader could make and how long training waited for it, when that wait is a
    large share of the epoch (every epoch's figures are in metrics.jsonl)."""
    if metrics.get("loader_images_per_s") is None or metrics.get("data_wait", 0) < LOADING_BOUND:
        return ""
    return f", loader {metrics['loader_images_per_s']:,.0f} img/s, {metrics['data_wait']:.0%} waiting for it"


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class EpochPrinter:
    """Prints how the run is set up, then a line per epoch: a callback, like any other
    listener of training events."""

    def on_train_start(self, run) -> None:
        if not run.is_main or not run.setup:
            return
        setup = run.setup
        arch = f" {setup['arch']}" if setup.get("arch") else ""
        images = setup["images"]
        fold = f"Fold {setup['fold']} ({setup['fold'] + 1} of {setup['folds']}): " if "fold" in setup else ""
        for line in (
            f"{fold}Training {setup['trainer']}{arch} on {setup['device']}: {setup['data']}, {setup['classes']} classes, "
            f"{images['train']} training and {images['valid']} validation images",
            f"  weights: {setup['weights']} ({setup['weights_about']})",
            f"  normalisation: {setup['normalization']} ({setup['normalization_about']})",
            f"  recipe: {setup['recipe']} ({setup['recipe_about']}); augmentation: {setup['augmentation']}",
            *([f"  classes: {setup['balance']}"] if setup.get("balance") else []),
            *([f"  note: {setup['absent']}"] if setup.get("absent") else []),
            f"  cache: {setup['cache_about']}",
            *([f"  resuming: from last.pt, after epoch {run.epoch} of {run.config.epochs} (step {run.step})"] if run.epoch or run.step else []),
        ):
            output.info(output.escape(line), soft_wrap=True)

    def on_epoch_end(self, run, metrics: dict) -> None:
        if not run.is_main:
            return
        # The two losses and the monitored value, so that the line fits 100 columns; every
        # other number of the epoch is in metrics.jsonl (and metrics.csv).
        ema = metrics.get(f"ema_{run.monitor}")
        line = (
            f"epoch {metrics['epoch']}/{run.config.epochs}: train_loss {_number(metrics.get('train_loss'))} "
            f"valid_loss {_number(metrics.get('valid_loss'))}"
            + ("" if run.monitor in ("train_loss", "valid_loss") else f" {run.monitor} {_number(metrics.get(run.monitor))}")
            + (f" (EMA {_number(ema)})" if f"ema_{run.monitor}" in metrics else "")
            + (" best" if metrics.get("improved") else "")
            + f", {rate(metrics['images_per_s'])} img/s{_loading(metrics)}{', backbone frozen' if metrics['backbone_frozen'] else ''}"
        )
        output.info(line, soft_wrap=True)


def rate(per_second: float) -> str:
    """Images per second as a person reads them: whole from 10 on, two digits below (a slow
    CPU run shows 0.42 img/s, not 0)."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def describe_trainers() -> str:
    """One paragraph per registered trainer: its task, architectures and recipes."""
    from prep.plugins import trainers
    from prep.train.trainer import Trainer

    registry = trainers()
    lines = []
    for name in registry.names():
        trainer = registry.get(name)
        if not isinstance(trainer, Trainer):
            continue
        about = trainer.describe()

        def choices(values: list[str], default: str | None) -> str:
            return ", ".join(f"{v} (default)" if v == default else v for v in values)

        line = f"{name} ({about['task']}): {about['summary']}"
        if about["architectures"]:
            line += f" --arch {choices(about['architectures'], about['default_arch'])}."
        if about["recipes"]:
            line += f" --recipe {choices(about['recipes'], about['default_recipe'])}."
        line += f" --weights default: {about['default_weights']}."
        lines.append(line)
    return "Trainers: " + ("\n\n".join(lines) if lines else "none registered")


class TrainCommand(TyperCommand):
    """``prep train --help`` lists the installed trainers and their options, read when help
    is shown (not at every start-up)."""

    def format_help(self, ctx, formatter):  # noqa: ANN001 - click's signature
        self.epilog = describe_trainers()
        return super().format_help(ctx, formatter)


def train_command(
    ctx: typer.Context,
    data: options.Dataset = None,
    plugin: options.Plugin = "resnet-finetune",
    arch: options.Arch = None,
    weights: options.Weights = None,
    normalize: options.Normalize = "auto",
    recipe: options.Recipe = None,
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the trainer's recipe).", rich_help_panel="Schedule"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps.", rich_help_panel="Schedule"),
    batch_size: options.BatchSize = None,
    image_size: options.ImageSize = 224,
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the head (default: the recipe's).", rich_help_panel="Schedule"),
    optimizer: options.Optimizer = None,
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="none | step | multistep | exponential | cosine | cosine-restarts | onecycle | plateau | lambda:NAME.", rich_help_panel="Schedule"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", min=0, rich_help_panel=ENGINE, help="Never applied to biases and norms."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", min=0, rich_help_panel=ENGINE, help="Linear warmup, in epochs (0.3 is fine)."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", min=0, max=1, rich_help_panel=ENGINE, help="Share of each target spread over the other classes (0.1 is usual)."),
    loss: Optional[str] = typer.Option(None, "--loss", rich_help_panel=ENGINE, help="The task's loss (classification: ce (default) or focal; segmentation: dice, ce (bce), focal, tversky, weighted and summed, e.g. 0.5*dice+focal; default dice+bce or dice+ce)."),
    class_weights: Optional[str] = typer.Option(None, "--class-weights", rich_help_panel=ENGINE, help="auto (inverse square root of each class's training images, or pixels) or one weight per class, comma-separated (1,5,5). Default: auto when the largest class has over 2x the smallest."),
    sampler: Optional[str] = typer.Option(None, "--sampler", rich_help_panel=ENGINE, help="shuffle (default) | balanced: draw each class about equally often (segmentation: images holding rare classes more often)."),
    mixup: Optional[float] = typer.Option(None, "--mixup", rich_help_panel=ENGINE, help="Mixup's alpha (0.2 is usual; classification)."),
    cutmix: Optional[float] = typer.Option(None, "--cutmix", rich_help_panel=ENGINE, help="CutMix's alpha (1.0 is usual; classification)."),
    mix_prob: Optional[float] = typer.Option(None, "--mix-prob", rich_help_panel=ENGINE, help="The share of batches mixed by --mixup/--cutmix (default 1)."),
    mix_switch_prob: Optional[float] = typer.Option(None, "--mix-switch-prob", rich_help_panel=ENGINE, help="With both --mixup and --cutmix, the share of mixed batches that use cutmix (default 0.5)."),
    mix_off_epoch: Optional[int] = typer.Option(None, "--mix-off-epoch", rich_help_panel=ENGINE, help="Stop mixing from this epoch on (0-based), to end on clean images."),
    ema: Optional[float] = typer.Option(None, "--ema", rich_help_panel=ENGINE, help="Keep an exponential moving average of the weights with this decay (0.999 is usual), validated every epoch; best.pt holds whichever scores better."),
    freeze_backbone: Optional[int] = typer.Option(None, "--freeze-backbone", min=0, rich_help_panel=FINE_TUNING, help="Train only the head for the first K epochs, then everything."),
    freeze_norm_stats: Optional[bool] = typer.Option(None, "--freeze-norm-stats/--update-norm-stats", rich_help_panel=FINE_TUNING, help="Keep the pretrained BatchNorm statistics (default: the recipe's; modern keeps them for pretrained weights)."),
    accumulate: Optional[int] = typer.Option(None, "--accumulate", min=1, rich_help_panel=ENGINE, help="Batches per optimiser step."),
    clip_grad_norm: Optional[float] = typer.Option(None, "--clip-grad-norm", min=0, rich_help_panel=ENGINE, help="Rescale gradients whose total norm exceeds this."),
    patience: Optional[int] = typer.Option(None, "--patience", min=0, rich_help_panel=ENGINE, help="Early stopping: epochs without a better monitored metric."),
    min_delta: Optional[float] = typer.Option(None, "--min-delta", min=0, rich_help_panel=ENGINE, help="Early stopping: the least gain that counts."),
    monitor: Optional[str] = typer.Option(None, "--monitor", rich_help_panel=ENGINE, help="The metric that picks best.pt and stops early (default: the task's; classification: valid_acc)."),
    monitor_mode: Optional[str] = typer.Option(None, "--monitor-mode", rich_help_panel=ENGINE, help="max | min (default: the task's; min for a loss)."),
    amp: Optional[str] = typer.Option(None, "--amp", rich_help_panel=ENGINE, help="auto | bf16 | fp16 | off (mixed precision is used on CUDA only)."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", rich_help_panel=ENGINE, help="torch.compile the model."),
    preset: options.Preset = None,
    collate: Optional[str] = typer.Option(None, "--collate", help="A registered collate function (default: the trainer's).", rich_help_panel="Data"),
    seed: options.Seed = 0,
    device: options.Device = None,
    workers: options.Workers = None,
    cache: str = typer.Option("auto", "--cache", help="The decoded-image cache: " + CACHE_HELP, rich_help_panel="Data"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last.pt.", rich_help_panel="Run"),
    config: Optional[Path] = typer.Option(None, "--config", help="Repeat a run from its config.yaml; other options given here win.", rich_help_panel="Run"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run folder (default: runs/<plugin>-<arch>-<time>).", rich_help_panel="Run"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.", rich_help_panel="Run"),
    oof_masks: bool = typer.Option(False, "--oof-masks", help="With --fold all, segmentation: also write every training image's out-of-fold mask into RUN_DIR/oof-masks/.", rich_help_panel="Run"),
    fold: Optional[str] = typer.Option(None, "--fold", help="A dataset split with --folds: all (one model per fold into RUN_DIR/fold-<k>, then out-of-fold predictions and suspect labels) or one fold's number.", rich_help_panel="Run"),
) -> None:
    """Train a model with a trainer plugin, on GPU when there is one."""
    from prep.errors import UsageError
    from prep.train.options import TrainOptions, read_run_config
    from prep.train.run import train

    if recipe == "list":
        return _list_recipes(plugin, weights)
    if resume and run_dir is None:
        raise UsageError("--resume needs --run-dir: the run to continue")
    if resume and config is None and (run_dir / "config.yaml").is_file():
        config = run_dir / "config.yaml"  # a resumed run keeps its own data and settings
    # Every parameter but these is a TrainOptions field (``--compile`` is ``compile_model``
    # here only because ``compile`` is a builtin).
    every_fold = fold is not None and fold.strip().lower() == "all"
    if oof_masks and not every_fold:
        raise UsageError("--oof-masks goes with --fold all: the out-of-fold masks come from the folds' models")
    if every_fold and resume and config is None:
        config = _cross_validation_config(run_dir)
    requested = {
        ("compile" if name == "compile_model" else name): value
        for name, value in ctx.params.items() if name not in ("data", "config", "as_json", "oof_masks")
    }
    requested["class_weights"] = _weights(class_weights)
    requested["fold"] = None if every_fold else _fold_number(fold)
    base = None
    if config is not None:
        repeated = read_run_config(config)
        options, base = repeated.options, repeated.train
        for name, value in requested.items():
            # Typer vendors click privately, so the source is compared by name.
            source = ctx.get_parameter_source("compile_model" if name == "compile" else name)
            if getattr(source, "name", None) == "COMMANDLINE":
                setattr(options, name, value)
        dataset = data or repeated.data
    else:
        options = TrainOptions(**requested)
        dataset = output.chosen_dataset(data)
    if every_fold:
        from prep.cli.cross_validation import print_fold, describe_cross_validation
        from prep.crossval.run import cross_validate

        summary = cross_validate(dataset, options, config=base, callbacks=[EpochPrinter()], progress=output.RichProgress(min_total=1), on_fold=print_fold, oof_masks=oof_masks)
        describe = describe_cross_validation
    else:
        summary = train(dataset, options, config=base, callbacks=[EpochPrinter()], progress=output.RichProgress(min_total=1))
        describe = _describe
    if not summary.pop("is_main"):  # under torchrun, rank 0 speaks for the job
        return
    if as_json:
        output.stdout.print_json(json.dumps(summary))
    else:
        output.stdout.print(output.escape(describe(summary)))
    if summary["status"] == "interrupted":  # so that `prep train && prep export` stops here
        raise typer.Exit(INTERRUPTED_EXIT_CODE)


def _list_recipes(plugin: str, weights: str | None) -> None:
    """``--recipe list``: each recipe of the trainer and what it sets."""
    from prep.train.options import describe_recipes
    from prep.train.prepare import trainer_registration

    trainer = trainer_registration(plugin).value
    for name, lines in describe_recipes(trainer, weights).items():
        default = " (default)" if name == trainer.recipes[0] else ""
        output.stdout.print(output.escape(f"{name}{default}: " + "; ".join(lines)), soft_wrap=True)


def _fold_number(text: str | None) -> int | None:
    from prep.errors import UsageError

    if text is None:
        return None
    if not text.strip().isdigit():
        raise UsageError(f"--fold takes all, or a fold's number (0, 1, ...), not {text!r}")
    return int(text)


def _cross_validation_config(run_dir: Path) -> Path | None:
    """A resumed cross-validation keeps its own data and settings: those of its first fold."""
    first = run_dir / "fold-0" / "config.yaml"
    return first if first.is_file() else None


def _weights(text: str | None) -> list[float] | str | None:
    from prep.errors import UsageError

    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--class-weights takes auto or numbers separated by commas (1,5,5), not {text!r}") from None
    if any(w < 0 for w in weights) or not any(weights):
        raise UsageError(f"--class-weights must not be negative, and not all zero: {text!r}")
    return weights


def _describe(summary: dict) -> str:
    monitor = summary["monitor"]
    elapsed = f" in {_duration(summary['elapsed_s'])}" if summary.get("elapsed_s") is not None else ""
    text = (
        f"{summary['status']}: {summary['epochs']} epoch{'' if summary['epochs'] == 1 else 's'}{elapsed}, "
        f"best {monitor} {_number(summary[f'best_{monitor}'])}{' (EMA weights)' if summary.get('best_weights') == 'ema' else ''}, "
        f"final {_number(summary[f'final_{monitor}'])}; "
        f"run in {summary['run_dir']}" + (f" (now {summary['latest']})" if summary.get("latest") else "")
    )
    if summary.get("examples"):
        text += f"\nPredictions on validation samples: {summary['examples']}"
    if summary["status"] == "interrupted":
        text += f"\nContinue it with: prep train --resume --run-dir {summary['run_dir']}"
    elif summary.get("best"):
        text += f"\nNext: prep evaluate {summary['best']} HELD_OUT_FOLDER, or prep predict {summary['best']} IMAGES"
    return text


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"
