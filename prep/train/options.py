"""What ``prep train`` was asked (``TrainOptions``), how it becomes a run's settings, and how
a run's ``config.yaml`` is read back to repeat it."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from prep.engine.config import TrainConfig
from prep.train.trainer import ModelRequest, Trainer


@dataclass
class TrainOptions:
    """What ``prep train`` was asked; ``None`` means the trainer's recipe decides."""

    plugin: str = "resnet-finetune"
    arch: str | None = None  # None: the trainer's default_arch
    weights: str | None = None  # imagenet | none | a path to a state dict (None: the trainer's default_weights)
    normalize: str = "auto"  # auto | imagenet | dataset (see prep.stats.normalization)
    recipe: str | None = None  # one of the trainer's named recipes (None: its default)
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None  # None: the trainer's default_batch_size (64; unet 16)
    image_size: int = 224
    lr: float | None = None
    optimizer: str | None = None
    scheduler: str | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    loss: str | None = None  # the task's loss spec (None: the task's default)
    class_weights: list[float] | str | None = None  # one per class, or auto
    sampler: str | None = None  # shuffle | balanced (None: the recipe's, or the imbalance default)
    mixup: float | None = None
    cutmix: float | None = None
    mix_prob: float | None = None
    mix_switch_prob: float | None = None
    mix_off_epoch: int | None = None
    ema: float | None = None
    freeze_backbone: int | None = None  # epochs of training the head alone
    freeze_norm_stats: bool | None = None  # keep pretrained BatchNorm statistics (None: the recipe's)
    accumulate: int | None = None
    clip_grad_norm: float | None = None
    patience: int | None = None  # early stopping: epochs without a better monitored metric
    min_delta: float | None = None
    monitor: str | None = None  # the metrics key for best.pt and early stopping (None: the task's)
    monitor_mode: str | None = None  # max | min
    amp: str | None = None
    compile: bool | None = None
    preset: str | None = None  # an augmentation preset or pipeline file (None: the recipe's)
    collate: str | None = None  # a registered collate function (None: the trainer's)
    seed: int = 0
    device: str | None = None
    workers: int | None = None
    cache: str = "auto"  # auto | disk | ram | off: the decoded-image cache (see prep.data.cache_plan)
    resume: bool = False
    run_dir: Path | None = None
    fold: int | None = None  # a dataset split into folds: train on the others, validate on this one


# The options whose TrainConfig field has another name; every other option that names a
# TrainConfig field sets it (when given) over the recipe's value.
_RENAMED = {"freeze_backbone": "freeze_backbone_epochs", "patience": "early_stop_patience", "min_delta": "early_stop_min_delta"}
_OVERRIDES = {
    option.name: _RENAMED.get(option.name, option.name)
    for option in fields(TrainOptions)
    if _RENAMED.get(option.name, option.name) in {setting.name for setting in fields(TrainConfig)}
}


def options_as_data(options: TrainOptions) -> dict[str, Any]:
    """The options as plain data (for checkpoints and config files)."""
    return {f.name: (str(v) if isinstance(v := getattr(options, f.name), Path) else v) for f in fields(TrainOptions)}


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that are fields of the dataclass ``cls``: a checkpoint written by
    another prep version may hold names this one lacks."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


def options_from_data(data: dict[str, Any]) -> TrainOptions:
    """``TrainOptions`` from ``options_as_data`` output, ignoring names this version lacks."""
    options = TrainOptions(**_known_fields(TrainOptions, data))
    options.run_dir = Path(options.run_dir) if options.run_dir else None
    return options


def config_from_data(data: dict[str, Any]) -> TrainConfig:
    """A checkpoint's ``TrainConfig`` (its ``config``), ignoring names this version lacks."""
    return TrainConfig(**_known_fields(TrainConfig, data))


# A recipe's ``min_steps`` lengthens a run to at most this many epochs: below the length
# from which ``auto`` augmentation crops, so that a short run stays one; with a preset of
# its own (segmentation's light), further.
MOST_EPOCHS_FOR_STEPS = 19
MOST_EPOCHS_FOR_STEPS_FIXED_PRESET = 60


def batch_size_of(options: TrainOptions, trainer: Trainer) -> int:
    """``--batch-size``, else the trainer's ``default_batch_size``."""
    return options.batch_size or getattr(trainer, "default_batch_size", 64)


def resolve_config(
    trainer: Trainer, options: TrainOptions, request: ModelRequest, base: TrainConfig | None = None, *, train_samples: int | None = None,
) -> TrainConfig:
    """The run's settings: ``base`` (default: the trainer's recipe), then every option that
    was given.

    A recipe's ``min_steps`` applies when ``--epochs`` was not given and the training split
    holds ``train_samples``: the epochs grow until the run takes that many optimiser steps,
    to at most ``MOST_EPOCHS_FOR_STEPS`` (``MOST_EPOCHS_FOR_STEPS_FIXED_PRESET`` when the
    preset is not ``auto``). A small dataset's three epochs are a few dozen steps, too few to
    fine-tune (measured in benchmarks/bench_recipes.py --part imbalanced), and ten epochs
    of 84 slices at batch 64 are 20 steps, after which a U-Net has not found a class of 1%
    of the pixels (bench_segment.py --part brain).

    A recipe's ``long_run`` settings apply, each unless its option was given, when the run
    has at least ``long_run_from`` epochs: what helps a 30-epoch run from scratch (mixing,
    in bench_recipes.py --part long) hurts a 3-epoch fine-tune, which has no time to fit
    the mixed targets.

    Raises:
        UsageError: a recipe the trainer does not have.
        PluginError: a recipe whose ``long_run`` names a setting ``TrainConfig`` lacks.
    """
    from prep.augment.presets import AUTO, resolve_preset

    config = replace(base) if base is not None else trainer.recipe(trainer.choose_recipe(options.recipe), request)
    for option, name in _OVERRIDES.items():
        if getattr(options, option) is not None:
            setattr(config, name, getattr(options, option))
    if base is None and options.epochs is None and config.min_steps and train_samples:
        batches = max(1, math.ceil(train_samples / batch_size_of(options, trainer)))
        steps_per_epoch = max(1, math.ceil(batches / config.accumulate))
        needed = math.ceil(config.min_steps / steps_per_epoch)
        most = MOST_EPOCHS_FOR_STEPS if config.preset == AUTO else MOST_EPOCHS_FOR_STEPS_FIXED_PRESET
        config.epochs = max(config.epochs, min(needed, most))
    if base is None and config.long_run and config.long_run_from is not None and config.epochs >= config.long_run_from:
        _apply_long_run(trainer, options, config)
    # After the options: --epochs decides what `auto` augmentation becomes.
    config.preset = resolve_preset(config.preset, config.epochs)
    return config


def _apply_long_run(trainer: Trainer, options: TrainOptions, config: TrainConfig) -> None:
    """Set ``config.long_run``'s settings on ``config``, except those an option gave."""
    from prep.errors import PluginError

    settings = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(config.long_run) - settings)
    if unknown:
        raise PluginError(f"trainer {type(trainer).__name__}: its recipe's long_run names settings TrainConfig lacks: {', '.join(unknown)}")
    given = {name for option, name in _OVERRIDES.items() if getattr(options, option) is not None}
    for name, value in config.long_run.items():
        if name not in given:
            setattr(config, name, value)


def describe_recipes(trainer: Trainer, weights: str | None = None) -> dict[str, list[str]]:
    """Each of ``trainer``'s recipes as ``setting value`` lines: what it sets beyond
    ``TrainConfig``'s defaults, for ``weights`` (default: the trainer's), as ``prep train
    --recipe list`` shows them."""
    from prep.augment.presets import AUTO, CROP_FROM_EPOCHS

    request = ModelRequest(classes=("a", "b"), arch=trainer.default_arch, weights=weights or trainer.default_weights)
    defaults = TrainConfig()
    described = {}
    for name in trainer.recipes:
        config = trainer.recipe(name, request)
        lines = []
        for setting in fields(TrainConfig):
            value = getattr(config, setting.name)
            if value == getattr(defaults, setting.name) and setting.name not in ("epochs", "preset"):
                continue
            text = f"{setting.name} {value}"
            if setting.name == "preset" and value == AUTO:
                text += f" (none under {CROP_FROM_EPOCHS} epochs, light from {CROP_FROM_EPOCHS})"
            if setting.name == "long_run_from":
                continue
            if setting.name == "long_run" and value:
                text = f"from {config.long_run_from} epochs: " + ", ".join(f"{k} {v}" for k, v in value.items())
            if setting.name == "min_steps" and value:
                text += f" (without --epochs, more epochs until the run takes {value} steps, at most {MOST_EPOCHS_FOR_STEPS})"
            lines.append(text)
        scratch = trainer.recipe(name, ModelRequest(classes=request.classes, arch=request.arch, weights="none"))
        if scratch.long_run and not config.long_run:
            settings = ", ".join(f"{k} {v}" for k, v in scratch.long_run.items())
            lines.append(f"with --weights none, from {scratch.long_run_from} epochs: {settings}")
        described[name] = lines
    return described


@dataclass
class RunConfig:
    """A run's ``config.yaml``, read back to repeat the run."""

    data: Path
    options: TrainOptions
    train: TrainConfig


def _fits(setting: Any, default: Any) -> bool:
    """Whether a setting read from YAML has the kind of value its default has (settings
    whose default is None take None or a number, or a string for ``device``)."""
    if isinstance(setting, bool) or isinstance(default, bool):
        return isinstance(setting, bool) and isinstance(default, bool)
    if default is None:
        if isinstance(setting, dict):  # long_run
            return all(isinstance(k, str) for k in setting)
        if isinstance(setting, list):  # class weights
            return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting)
        return setting is None or isinstance(setting, (int, float, str))
    if isinstance(default, float):
        return isinstance(setting, (int, float))
    return isinstance(setting, type(default))


def read_run_config(path: Path) -> RunConfig:
    """Read the ``config.yaml`` that ``prep train`` wrote in a run folder.

    The options come back with ``resume`` off and no ``run_dir``, so that repeating a run
    starts a new one beside it.

    Raises:
        RunConfigError: the file is missing, is not YAML, or was not written by prep train.
    """
    import yaml

    from prep.errors import RunConfigError

    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunConfigError(f"Cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RunConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(value, dict) or not {"data", "options", "train"} <= set(value):
        raise RunConfigError(f"{path} is not a run config written by prep train (it needs data, options and train)")
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    unknown = sorted(set(value["train"]) - set(defaults))
    if unknown:
        raise RunConfigError(f"{path}: unknown train settings {', '.join(unknown)}")
    for name, setting in value["train"].items():
        if not _fits(setting, defaults[name]):
            raise RunConfigError(f"{path}: train setting {name} must be like {defaults[name]!r}, not {setting!r}")
    options = options_from_data(value["options"])
    options.resume, options.run_dir = False, None
    return RunConfig(Path(value["data"]), options, TrainConfig(**value["train"]))
