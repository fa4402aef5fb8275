"""``train``: the function behind ``prep train``. It finds the data, the trainer plugin and the
normalisation, then hands over to the shared engine (``prep.engine.loop.fit``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prep.engine.config import TrainConfig
from prep.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class TrainOptions:
    """What ``prep train`` was asked; ``None`` means the trainer's recipe decides."""

    plugin: str = "resnet-finetune"
    arch: str = "resnet18"
    weights: str = "none"  # imagenet | none | a path to a state dict
    recipe: str | None = None  # one of the trainer's named recipes (None: its default)
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 64
    image_size: int = 224
    lr: float | None = None
    optimizer: str | None = None
    scheduler: str | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    freeze_backbone: int | None = None  # epochs of training the head alone
    accumulate: int | None = None
    clip_grad_norm: float | None = None
    patience: int | None = None  # early stopping: epochs without a better valid_acc
    min_delta: float | None = None
    amp: str | None = None
    compile: bool | None = None
    preset: str = "light"
    collate: str | None = None  # a registered collate function (None: the trainer's)
    seed: int = 0
    device: str | None = None
    workers: int | None = None
    resume: bool = False
    run_dir: Path | None = None


# TrainOptions that override the recipe's TrainConfig, by the config field they set.
_OVERRIDES = {
    "epochs": "epochs", "max_steps": "max_steps", "lr": "lr", "optimizer": "optimizer", "scheduler": "scheduler",
    "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "label_smoothing": "label_smoothing",
    "freeze_backbone": "freeze_backbone_epochs", "accumulate": "accumulate", "clip_grad_norm": "clip_grad_norm",
    "patience": "early_stop_patience", "min_delta": "early_stop_min_delta", "amp": "amp", "compile": "compile",
    "seed": "seed", "device": "device",
}


class Trainer(Protocol):
    """What a trainer plugin provides; the engine does the rest.

    A trainer may also set ``collate`` to the name of a registered collate function
    (default ``uint8-channels-last``); ``--collate`` overrides it.
    """

    task: str  # "classification"

    def build_model(self, num_classes: int, options: TrainOptions) -> tuple["torch.nn.Module", "torch.nn.Module | None"]:
        """The model for ``num_classes``, and its new head (None when everything is new)."""

    def recipe(self, options: TrainOptions) -> TrainConfig:
        """The training settings of the recipe ``options.recipe`` names (None: the
        trainer's default); raise ``prep.errors.UsageError`` for a name it does not know."""

    def pretrained(self, options: TrainOptions) -> bool:
        """True when the weights were trained on ImageNet (normalise with its constants)."""


def options_as_data(options: TrainOptions) -> dict[str, Any]:
    """The options as plain data (for checkpoints and config files)."""
    return {f.name: (str(v) if isinstance(v := getattr(options, f.name), Path) else v) for f in fields(TrainOptions)}


def options_from_data(data: dict[str, Any]) -> TrainOptions:
    """``TrainOptions`` from ``options_as_data`` output, ignoring names this version lacks."""
    known = {f.name for f in fields(TrainOptions)}
    options = TrainOptions(**{k: v for k, v in data.items() if k in known})
    options.run_dir = Path(options.run_dir) if options.run_dir else None
    return options


def resolve_config(trainer: Trainer, options: TrainOptions, base: TrainConfig | None = None) -> TrainConfig:
    """The run's settings: ``base`` (default: the trainer's recipe), then every option that
    was given."""
    config = replace(base) if base is not None else trainer.recipe(options)
    for option, name in _OVERRIDES.items():
        if getattr(options, option) is not None:
            setattr(config, name, getattr(options, option))
    return config


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


def normalization(root: Path, pretrained: bool, workers: int | None, may_compute: bool = True) -> tuple[list[float], list[float], str]:
    """ImageNet's constants for ImageNet weights, else stats.json (computed if missing,
    when ``may_compute``)."""
    if pretrained:
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    from prep.errors import StatsNotFoundError
    from prep.stats.dataset_stats import compute_dataset_stats, read_mean_std, write_stats

    try:
        mean, std = read_mean_std(root)
        return mean, std, "stats.json"
    except StatsNotFoundError:
        if not may_compute:
            raise
        write_stats(root, compute_dataset_stats(root, workers=workers))
        mean, std = read_mean_std(root)
        return mean, std, "computed now"


def _new_run_dir(options: TrainOptions) -> Path:
    base = Path("runs") / f"{options.plugin}-{options.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def train(root: Path, options: TrainOptions, *, config: TrainConfig | None = None, progress: Progress = NO_PROGRESS) -> dict[str, Any]:
    """Train with a registered trainer on a split dataset; return the run's summary.

    Args:
        root: the split dataset (``train/`` and ``valid/`` class folders).
        options: what to train and how; ``None`` fields come from the recipe.
        config: settings to start from instead of the trainer's recipe (a repeated run's).
        progress: receives a task per epoch, with the live loss and images/s.

    Raises:
        UnknownNameError: no such trainer plugin or collate function.
        RunExistsError: ``options.run_dir`` already holds a run and ``resume`` is off.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    import torch

    from prep.augment.presets import build_pipeline
    from prep.data.datasets import ClassificationDataset
    from prep.data.loader import create_loader
    from prep.engine.distributed import World
    from prep.engine.loop import fit
    from prep.plugins import trainers

    trainer = trainers().get(options.plugin)
    config = resolve_config(trainer, options, config)
    world = World.from_env()
    device = world.device(config.device)
    size = options.image_size
    collate = options.collate or getattr(trainer, "collate", "uint8-channels-last")
    train_set = ClassificationDataset(root, "train", transform=build_pipeline(options.preset, size, train=True, seed=config.seed), decode_min_side=size)
    valid_set = ClassificationDataset(root, "valid", transform=build_pipeline(options.preset, size, train=False), classes=train_set.classes, decode_min_side=size)
    loader_settings = {"rank": world.rank, "world_size": world.size, "workers": options.workers, "seed": config.seed, "device": device}
    train_loader = create_loader(train_set, options.batch_size, train=True, collate=collate, **loader_settings)
    valid_loader = create_loader(valid_set, options.batch_size, train=False, **loader_settings)
    # Under torchrun every rank would compute and write stats.json at once.
    mean, std, source = normalization(root, trainer.pretrained(options), options.workers, may_compute=not world.distributed)
    torch.manual_seed(config.seed)
    model, head = trainer.build_model(len(train_set.classes), options)
    run_dir = options.run_dir or _new_run_dir(options)
    options = replace(options, run_dir=run_dir, collate=collate)  # recorded as resolved
    summary = fit(
        model, train_loader, valid_loader, config, run_dir, classes=train_set.classes, mean=mean, std=std,
        head=head, resume=options.resume, progress=progress, world=world,
        extra={"data": str(root.resolve()), "options": options_as_data(options)},
    )
    summary["normalization"] = source
    summary["run_dir"] = str(run_dir)
    summary["is_main"] = world.is_main
    return summary
