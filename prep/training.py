"""``train``: the function behind ``prep train``. It finds the data, the trainer plugin and the
normalisation, then hands over to the shared engine (``prep.engine.loop.fit``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prep.engine.config import TrainConfig

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
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int = 64
    image_size: int = 224
    lr: float | None = None
    optimizer: str | None = None
    scheduler: str | None = None
    preset: str = "light"
    seed: int = 0
    device: str | None = None
    workers: int | None = None
    resume: bool = False
    run_dir: Path | None = None


class Trainer(Protocol):
    """What a trainer plugin provides; the engine does the rest."""

    task: str  # "classification"

    def build_model(self, num_classes: int, options: TrainOptions) -> tuple["torch.nn.Module", "torch.nn.Module | None"]:
        """The model for ``num_classes``, and its new head (None when everything is new)."""

    def recipe(self, options: TrainOptions) -> TrainConfig:
        """The default training settings for these options."""

    def pretrained(self, options: TrainOptions) -> bool:
        """True when the weights were trained on ImageNet (normalise with its constants)."""


def options_as_data(options: TrainOptions) -> dict[str, Any]:
    """The options as plain data (for checkpoints and config files)."""
    return {f.name: (str(v) if isinstance(v := getattr(options, f.name), Path) else v) for f in fields(TrainOptions)}


def _config(trainer: Trainer, options: TrainOptions) -> TrainConfig:
    config = trainer.recipe(options)
    for name in ("epochs", "max_steps", "lr", "optimizer", "scheduler", "seed", "device"):
        if getattr(options, name) is not None:
            setattr(config, name, getattr(options, name))
    return config


def normalization(root: Path, pretrained: bool, workers: int | None) -> tuple[list[float], list[float], str]:
    """ImageNet's constants for ImageNet weights, else stats.json (computed if missing)."""
    if pretrained:
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    from prep.errors import StatsNotFoundError
    from prep.stats.dataset_stats import compute_dataset_stats, read_mean_std, write_stats

    try:
        mean, std = read_mean_std(root)
        return mean, std, "stats.json"
    except StatsNotFoundError:
        write_stats(root, compute_dataset_stats(root, workers=workers))
        mean, std = read_mean_std(root)
        return mean, std, "computed now"


def train(root: Path, options: TrainOptions) -> dict[str, Any]:
    """Train with a registered trainer on a split dataset; return the run's summary.

    Raises:
        UnknownNameError: no such trainer plugin.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    import torch

    from prep.augment.presets import build_pipeline
    from prep.data.datasets import ClassificationDataset
    from prep.data.loader import create_loader
    from prep.engine.loop import fit, pick_device
    from prep.plugins import trainers

    trainer = trainers().get(options.plugin)
    config = _config(trainer, options)
    device = pick_device(config.device)
    size = options.image_size
    train_set = ClassificationDataset(root, "train", transform=build_pipeline(options.preset, size, train=True, seed=config.seed), decode_min_side=size)
    valid_set = ClassificationDataset(root, "valid", transform=build_pipeline(options.preset, size, train=False), classes=train_set.classes, decode_min_side=size)
    train_loader = create_loader(train_set, options.batch_size, train=True, workers=options.workers, seed=config.seed, device=device)
    valid_loader = create_loader(valid_set, options.batch_size, train=False, workers=options.workers, seed=config.seed, device=device)
    mean, std, source = normalization(root, trainer.pretrained(options), options.workers)
    torch.manual_seed(config.seed)
    model, head = trainer.build_model(len(train_set.classes), options)
    run_dir = options.run_dir or Path("runs") / f"{options.plugin}-{options.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = fit(
        model, train_loader, valid_loader, config, run_dir, classes=train_set.classes, mean=mean, std=std,
        head=head, resume=options.resume, extra={"options": options_as_data(options)},
    )
    summary["normalization"] = source
    summary["run_dir"] = str(run_dir)
    return summary
