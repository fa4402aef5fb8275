"""``prepare_run``: what ``prep train`` and ``prep lr-find`` do before the engine starts. It
turns the names it is given (trainer, task, collate function, LR lambda, preset) into
objects, checks every option against the trainer, the engine and the data before anything
is read or written, lists the dataset once (``DatasetIndex``), and builds the model, the
loaders and the run's settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.engine.config import TrainConfig
from prep.errors import FoldsError, PluginError, TaskMismatchError
from prep.stats.normalization import Normalization
from prep.util.progress import NO_PROGRESS, Progress
from prep.train.options import TrainOptions, batch_size_of, resolve_config
from prep.train.trainer import ModelRequest, Trainer, split_model

if TYPE_CHECKING:
    import torch

    from prep.data.cache_plan import CacheReport
    from prep.train.imbalance import Imbalance
    from prep.data.index import DatasetIndex
    from prep.engine.distributed import World
    from prep.engine.settings import RunSettings
    from prep.engine.task import Task
    from prep.registry import Registration

LAMBDA_PREFIX = "lambda:"


def trainer_registration(name: str) -> "Registration[Trainer]":
    """The registration of the trainer ``name``, checked to be a ``prep.Trainer``.

    Raises:
        UnknownNameError: no such trainer. PluginError: it is not a ``prep.Trainer``.
    """
    from prep.plugins import trainers

    registration = trainers().registration(name)
    if not isinstance(registration.value, Trainer):
        raise PluginError(
            f"The {registration.origin} is a {type(registration.value).__name__}, not a prep.Trainer; "
            f"its plugin must subclass prep.Trainer (see the plugin guide)."
        )
    return registration


def task_for(trainer_name: str, trainer: Trainer, index: "DatasetIndex") -> "Task":
    """The task ``trainer`` trains, after checking that the dataset has its layout (when the
    layout is one prep knows, ``prep.layout.LAYOUT_SHAPES``; a plugin's own layout is the
    plugin's to check).

    Raises:
        UnknownNameError: no installed plugin provides the trainer's task.
        TaskMismatchError: the dataset is of another layout (a classifier on masks, say).
    """
    from prep.layout import LAYOUT_SHAPES
    from prep.plugins import tasks, trainers

    kind = index.kind
    candidates = [tasks().get(name) for name in trainer.trained_tasks()]
    fits = [task for task in candidates if task.layout == kind or task.layout not in LAYOUT_SHAPES]
    if fits:
        return fits[0]
    fitting = [name for name in trainers().names() if kind in _layouts_of(trainers().get(name))]
    advice = f"use a {kind} trainer: --plugin {' or '.join(fitting)}" if fitting else f"no installed trainer trains {kind}"
    raise TaskMismatchError(
        f"The trainer {trainer_name!r} trains {' and '.join(trainer.trained_tasks())}, but {index.root} is a {kind} dataset "
        f"(its train split has {LAYOUT_SHAPES.get(kind, kind)}); {advice}."
    )


def trainer_for_layout(kind: str) -> str:
    """The trainer a bare ``prep train`` would want for a dataset of layout ``kind``: the
    built-in one (resnet-finetune for class folders and tags, unet for masks), else the
    first installed trainer that trains it.

    Raises:
        UnknownNameError: no installed trainer trains that layout.
    """
    from prep.errors import UnknownNameError
    from prep.plugins import trainers

    names = trainers().names()
    fitting = [name for name in names if kind in _layouts_of(trainers().get(name))]
    for built_in in ("resnet-finetune", "unet"):
        if built_in in fitting:
            return built_in
    if not fitting:
        raise UnknownNameError(f"No installed trainer trains a {kind} dataset")
    return fitting[0]


def _layouts_of(trainer: Any) -> list[str]:
    """The layouts of the tasks a registered trainer trains (those installed)."""
    from prep.plugins import tasks

    names = trainer.trained_tasks() if isinstance(trainer, Trainer) else (getattr(trainer, "task", None),)
    return [tasks().get(name).layout for name in names if name in tasks()]


def _lr_lambdas(scheduler: str) -> dict[str, Any]:
    """The plugin LR lambda that ``--scheduler lambda:NAME`` names, by name (else none)."""
    if not scheduler.startswith(LAMBDA_PREFIX):
        return {}
    from prep.plugins import lr_lambdas

    name = scheduler[len(LAMBDA_PREFIX):]
    registration = lr_lambdas().registration(name)
    return {name: registration.call}


@dataclass
class PreparedRun:
    """Everything a run needs, built and checked from the options, before anything is written."""

    index: "DatasetIndex"
    trainer: Trainer
    task: "Task"
    request: ModelRequest
    config: TrainConfig
    settings: "RunSettings"
    options: TrainOptions  # as recorded: the resolved weights, preset, collate and arch
    model: "torch.nn.Module"
    head: "torch.nn.Module | None"
    normalization: Normalization
    train_loader: Any
    valid_loader: Any
    lr_lambdas: dict[str, Any]
    world: "World"
    device: "torch.device"
    cache: "CacheReport"
    imbalance: "Imbalance | None" = None

    @property
    def root(self) -> Path:
        return self.index.root

    @property
    def classes(self) -> list[str]:
        return list(self.request.classes)

    def describe(self) -> dict[str, Any]:
        """How the run is set up, in words: what ``prep train`` prints first."""
        config = self.config
        recipe = [f"{config.optimizer} lr {config.lr:g}"]
        if config.backbone_lr_scale != 1.0:
            recipe.append(f"backbone lr x{config.backbone_lr_scale:g}")
        recipe.append(config.scheduler + (f" with {config.warmup_epochs:g} warmup epochs" if config.warmup_epochs else ""))
        recipe.append(f"weight decay {config.weight_decay:g}")
        if config.label_smoothing:
            recipe.append(f"label smoothing {config.label_smoothing:g}")
        if config.freeze_backbone_epochs:
            recipe.append(f"head alone for {config.freeze_backbone_epochs} epochs")
        if config.freeze_norm_stats:
            recipe.append("BatchNorm statistics kept")
        if config.loss:
            recipe.append(f"loss {config.loss}")
        if config.mixup or config.cutmix:
            mixing = " and ".join(f"{name} {alpha:g}" for name, alpha in (("mixup", config.mixup), ("cutmix", config.cutmix)) if alpha)
            until = f" until epoch {config.mix_off_epoch}" if config.mix_off_epoch is not None else ""
            recipe.append(f"{mixing} on {config.mix_prob:.0%} of batches{until}")
        if config.ema:
            recipe.append(f"EMA of weights {config.ema:g}")
        recipe.append(f"{config.epochs} epoch" + ("s" if config.epochs != 1 else ""))
        return {
            "data": str(self.root), "trainer": self.options.plugin, "arch": self.request.arch, "device": str(self.device),
            "weights": self.request.weights, "weights_about": describe_weights(self.request.weights),
            "normalization": self.normalization.mode, "normalization_about": self.normalization.source,
            "mean": self.normalization.mean, "std": self.normalization.std,
            "recipe": self.trainer.choose_recipe(self.options.recipe), "recipe_about": ", ".join(recipe),
            "augmentation": config.preset, "cache": self.cache.where, "cache_about": self.cache.describe(),
            "images": {"train": len(self.train_loader.dataset), "valid": len(self.valid_loader.dataset) if self.valid_loader else 0},
            "classes": len(self.request.classes),
            **({"balance": line} if self.imbalance is not None and (line := self.imbalance.describe(config)) else {}),
            **({"absent": line} if self.imbalance is not None and (line := self.imbalance.describe_valid()) else {}),
            **({"fold": self.index.fold, "folds": self.index.fold_count} if self.index.fold is not None else {}),
        }


def prepare_run(
    root: "Path | DatasetIndex", options: TrainOptions, *, config: TrainConfig | None = None,
    progress: Progress = NO_PROGRESS, with_valid: bool = True,
) -> PreparedRun:
    """Check the options against the trainer, the engine and the data, then build the model,
    the loaders and the run's settings, without writing anything but a missing
    ``stats.json`` and the decoded cache (``options.cache``; a ``ram`` cache is removed by
    ``cache.release()``).

    Raises:
        UnknownNameError: no such trainer, task, collate function or LR lambda.
        TaskMismatchError: the trainer's task does not fit the dataset.
        WeightsError: the starting weights cannot be had or do not fit.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    import torch

    from prep.data.cache_plan import cache_datasets, check_cache
    from prep.data.index import DatasetIndex
    from prep.engine.distributed import World
    from prep.engine.settings import resolve_settings
    from prep.stats.normalization import check_normalize, resolve_normalization
    from prep.train.imbalance import resolve_imbalance
    from prep.train.weights import check_weights

    # Everything the options name is checked before anything is read or written.
    registration = trainer_registration(options.plugin)
    trainer = registration.value
    check_normalize(options.normalize)
    check_cache(options.cache)
    weights = check_weights(options.weights if options.weights is not None else trainer.default_weights)
    index = DatasetIndex.of(root)
    if options.fold is not None:
        index = index.fold_view(options.fold)
    elif with_valid and index.fold_count:
        raise FoldsError(
            f"{index.root} is split into {index.fold_count} folds for cross-validation: train them all with "
            f"--fold all, or one with --fold 0 to {index.fold_count - 1}"
        )
    task = task_for(options.plugin, trainer, index)
    if hasattr(task, "prepare"):
        task.prepare(index, progress)
    request = ModelRequest(tuple(task.classes(index)), trainer.choose_arch(options.arch), weights, options.image_size, task.name)
    classes = list(request.classes)
    train_held = task.sample_classes(index, "train", classes) if hasattr(task, "sample_classes") else None
    config = resolve_config(trainer, options, request, config, train_samples=len(train_held) if train_held is not None else None)
    # Before the settings are checked: auto class weights become numbers, and an
    # imbalanced split changes the defaults (the monitor, the weights).
    imbalance = resolve_imbalance(task, index, classes, config, options, train_held=train_held, with_valid=with_valid)
    world = World.from_env()
    device = world.device(config.device)
    settings = resolve_settings(task, config, classes, device, registration.call_method("loss", config, classes))
    lr_lambdas = _lr_lambdas(config.scheduler)
    collate_name = options.collate or trainer.collate or task.collate
    train_collate, valid_collate = collate_registration(collate_name, classes), collate_registration(task.collate, classes)

    datasets = {"train": _dataset(task, index, "train", config, options.image_size, classes, train=True)}
    if with_valid:
        datasets["valid"] = _dataset(task, index, "valid", config, options.image_size, classes, train=False)
    pools = _fold_pools(task, index, datasets, config, options.image_size, classes)
    torch.manual_seed(config.seed)
    model, head = split_model(registration.call_method("build_model", request))
    # Under torchrun every rank would compute and write stats.json at once.
    normalization = resolve_normalization(
        index, options.normalize, trainer.pretrained(request), options.workers, may_compute=not world.distributed,
        progress=progress, pretrained_constants=registration.call_method("pretrained_normalization", request),
    )
    # Last, when everything else has been checked: building a cache decodes every image once.
    # Under torchrun the first process of each machine builds it; the others then take it.
    world.join(device)
    if world.local_rank == 0:
        cache = cache_datasets(options.cache, index.root, datasets, pools=pools, workers=options.workers, progress=progress)
    world.barrier()
    if world.local_rank != 0:
        cache = cache_datasets(options.cache, index.root, datasets, pools=pools, builds=False)
    options = replace(options, batch_size=batch_size_of(options, trainer))
    loaders = {
        split: _loader(
            dataset, train_collate if split == "train" else valid_collate, options, config, world, device, train=split == "train",
            weights=imbalance.sample_weights if split == "train" else None,
        )
        for split, dataset in datasets.items()
    }
    recorded = replace(
        options, collate=collate_name, arch=request.arch, weights=weights, preset=config.preset,
        recipe=trainer.choose_recipe(options.recipe), batch_size=batch_size_of(options, trainer),
    )
    return PreparedRun(
        index, trainer, task, request, config, settings, recorded, model, head, normalization, loaders["train"],
        loaders.get("valid"), lr_lambdas, world, device, cache, imbalance,
    )


def collate_registration(name: str, classes: list[str]) -> "Registration":
    """The registered collate function ``name``, given the run's classes when it asks for
    them (a registered object with ``with_classes(classes)``, such as a mixup that makes
    one-hot targets).

    Raises:
        UnknownNameError: no such collate function. PluginError: its ``with_classes`` failed.
    """
    from prep.plugins import collate_fns

    registration = collate_fns().registration(name)
    if hasattr(registration.value, "with_classes"):
        return replace(registration, value=registration.call_method("with_classes", list(classes)))
    return registration


def _dataset(task: "Task", index: "DatasetIndex", split: str, config: TrainConfig, size: int, classes: list[str], train: bool) -> Any:
    """The task's dataset of ``split``, augmented by the run's preset (for training) and
    decoded at the side its pipeline needs."""
    from prep.augment.presets import build_pipeline
    from prep.data.resolution import source_side

    transform = build_pipeline(config.preset, size, train=train, task=task.layout, seed=config.seed if train else None)
    return task.dataset(index, split, classes=classes, transform=transform, decode_side=source_side(transform))


def _fold_pools(task: "Task", index: "DatasetIndex", datasets: dict[str, Any], config: TrainConfig, size: int, classes: list[str]) -> dict[str, Any] | None:
    """For one fold of a cross-validation, the whole training pool decoded as each split
    decodes (what the folds' shared cache holds); None for any other run.

    Raises:
        PluginError: the task's fold datasets are not the fold's two parts (a task that lists
            its samples itself, not through ``prep.DatasetIndex``, cannot train by folds).
    """
    if index.fold is None:
        return None
    pools = {split: _dataset(task, index.parent, "train", config, size, classes, train=split == "train") for split in datasets}
    sizes = {split: len(d) for split, d in datasets.items() if hasattr(d, "__len__")}
    if "valid" in sizes and hasattr(pools["train"], "__len__") and sizes["train"] + sizes["valid"] != len(pools["train"]):
        raise PluginError(
            f"The task {task.name!r} read {sizes['train']} training and {sizes['valid']} validation samples for fold "
            f"{index.fold}, which do not make up the {len(pools['train'])} of the training pool: it lists its samples itself, "
            f"not through prep.DatasetIndex, so it cannot train by folds."
        )
    return pools


def _loader(
    dataset: Any, collate: "Registration", options: TrainOptions, config: TrainConfig, world: "World", device, train: bool,
    weights: list[float] | None = None,
) -> Any:
    from prep.data.loader import create_loader

    if weights is not None and len(weights) != len(dataset):
        raise PluginError(
            f"The task gave {len(weights)} samples' classes for --sampler balanced, but its training dataset has {len(dataset)} samples"
        )
    return create_loader(
        dataset, options.batch_size, train=train, collate_fn=collate.call, collate_origin=collate.origin,
        rank=world.rank, world_size=world.size, workers=options.workers, seed=config.seed, device=device, weights=weights,
    )


def describe_weights(weights: str) -> str:
    """``--weights`` in words."""
    if weights == "imagenet":
        return "torchvision's ImageNet weights"
    if weights == "none":
        return "random: trained from scratch"
    return "from a file"
