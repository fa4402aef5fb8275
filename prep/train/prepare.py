"""``train``: the function behind ``prep train``. It turns the names it is given (trainer, task,
collate function, LR lambda, preset) into objects, checks that the trainer fits the data, and
hands over to the shared engine (``prep.engine.fit.fit``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from prep.engine.config import TrainConfig
from prep.errors import PluginError, TaskMismatchError
from prep.stats.normalization import Normalization
from prep.util.progress import NO_PROGRESS, Progress
from prep.train.options import TrainOptions, options_as_data, resolve_config
from prep.train.trainer import ModelRequest, Trainer, split_model

if TYPE_CHECKING:
    import torch

    from prep.data.cache_plan import CacheReport
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


def task_for(trainer_name: str, trainer: Trainer, root: Path) -> "Task":
    """The task ``trainer`` trains, after checking that ``root`` has its layout.

    Raises:
        TaskMismatchError: the dataset is of another layout (a classifier on masks, say).
        UnknownNameError: no installed plugin provides the trainer's task.
        DatasetNotFoundError: ``root`` is not a split dataset.
    """
    from prep.data.index import dataset_kind
    from prep.layout import CLASSIFICATION, SEGMENTATION
    from prep.plugins import tasks, trainers

    kind = dataset_kind(root)
    registry = tasks()
    # A task that is not installed still has a known layout when it is one of prep's own kinds,
    # so the mismatch is named before the missing task.
    layout = _layout_of(trainer, registry)
    if layout in (CLASSIFICATION, SEGMENTATION) and layout != kind:
        shape = "images/ and masks/ folders" if kind == SEGMENTATION else "class folders"
        fitting = [name for name in trainers().names() if _layout_of(trainers().get(name), registry) == kind]
        advice = f"use a {kind} trainer: --plugin {' or '.join(fitting)}" if fitting else f"no installed trainer trains {kind}"
        raise TaskMismatchError(
            f"The trainer {trainer_name!r} trains {trainer.task}, but {root} is a {kind} dataset "
            f"(its train split has {shape}); {advice}."
        )
    return registry.get(trainer.task)


def _layout_of(trainer: Any, tasks_registry) -> str | None:
    task = getattr(trainer, "task", None)
    return tasks_registry.get(task).layout if task in tasks_registry else task


def _lr_lambdas(scheduler: str) -> dict[str, Any]:
    """The plugin LR lambda that ``--scheduler lambda:NAME`` names, by name (else none)."""
    if not scheduler.startswith(LAMBDA_PREFIX):
        return {}
    from prep.plugins import lr_lambdas

    name = scheduler[len(LAMBDA_PREFIX):]
    registration = lr_lambdas().registration(name)
    return {name: registration.call}


def _new_run_dir(plugin: str, arch: str | None) -> Path:
    if arch and arch.startswith(f"{plugin}-"):
        arch = arch[len(plugin) + 1 :]  # runs/unet-resnet34-..., not runs/unet-unet-resnet34-...
    base = Path("runs") / "-".join(filter(None, (plugin, arch, time.strftime("%Y%m%d-%H%M%S"))))
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


@dataclass
class PreparedRun:
    """Everything a run needs, built and checked from the options, before anything is written."""

    root: Path
    trainer: Trainer
    task: "Task"
    request: ModelRequest
    config: TrainConfig
    options: TrainOptions  # as recorded: the resolved weights, preset, collate and arch
    model: "torch.nn.Module"
    head: "torch.nn.Module | None"
    loss: Any
    normalization: Normalization
    train_loader: Any
    valid_loader: Any
    lr_lambdas: dict[str, Any]
    world: Any
    device: "torch.device"
    cache: "CacheReport"

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
        }


def prepare_run(
    root: Path, options: TrainOptions, *, config: TrainConfig | None = None, progress: Progress = NO_PROGRESS,
    with_valid: bool = True,
) -> PreparedRun:
    """Check the options against the trainer and the data, then build the model, the
    loaders and the loss, without writing anything but a missing ``stats.json`` and the
    decoded cache (``options.cache``; a ``ram`` cache is removed by ``cache.release()``).

    Raises:
        UnknownNameError: no such trainer, task, collate function or LR lambda.
        TaskMismatchError: the trainer's task does not fit the dataset.
        WeightsError: the starting weights cannot be had or do not fit.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    import torch

    from prep.augment.presets import build_pipeline
    from prep.data.cache_plan import cache_datasets, check_cache
    from prep.data.loader import create_loader
    from prep.data.resolution import source_side
    from prep.engine.distributed import World
    from prep.engine.fit import check_amp, resolve_monitor
    from prep.engine.optim import check_optimizer
    from prep.engine.schedulers import check_scheduler
    from prep.stats.normalization import check_normalize, resolve_normalization
    from prep.plugins import collate_fns
    from prep.train.weights import check_weights

    # Everything the options name is checked before anything is read or written.
    registration = trainer_registration(options.plugin)
    trainer = registration.value
    check_normalize(options.normalize)
    check_cache(options.cache)
    weights = check_weights(options.weights if options.weights is not None else trainer.default_weights)
    task = task_for(options.plugin, trainer, root)
    if hasattr(task, "prepare"):
        task.prepare(root, progress)
    request = ModelRequest(tuple(task.classes(root)), trainer.choose_arch(options.arch), weights, options.image_size)
    config = resolve_config(trainer, options, request, config)
    resolve_monitor(task, config, list(request.classes))  # checks --monitor and --monitor-mode
    task_loss = task.loss(config, list(request.classes), train=True)  # checks --loss and --class-weights
    lr_lambdas = _lr_lambdas(config.scheduler)
    collate_name = options.collate or trainer.collate or task.collate
    train_collate, valid_collate = collate_fns().registration(collate_name), collate_fns().registration(task.collate)

    world = World.from_env()
    device = world.device(config.device)
    check_amp(config.amp, device)
    check_optimizer(config.optimizer)
    check_scheduler(config.scheduler)
    size, classes = options.image_size, list(request.classes)

    def dataset(split: str, train: bool):
        transform = build_pipeline(config.preset, size, train=train, task=task.layout, seed=config.seed if train else None)
        return task.dataset(root, split, classes=classes, transform=transform, decode_side=source_side(transform))

    def loader(dataset: Any, collate: "Registration", train: bool):
        return create_loader(
            dataset, options.batch_size, train=train, collate_fn=collate.call, collate_origin=collate.origin,
            rank=world.rank, world_size=world.size, workers=options.workers, seed=config.seed, device=device,
        )

    datasets = {"train": dataset("train", True), **({"valid": dataset("valid", False)} if with_valid else {})}
    torch.manual_seed(config.seed)
    model, head = split_model(registration.call_method("build_model", request))
    loss = registration.call_method("loss", config, classes) or task_loss
    # Under torchrun every rank would compute and write stats.json at once.
    normalization = resolve_normalization(
        root, options.normalize, trainer.pretrained(request), options.workers, may_compute=not world.distributed,
        progress=progress,
    )
    # Last, when everything else has been checked: building a cache decodes every image once.
    # Under torchrun the first process of each machine builds it; the others then take it.
    world.join(device)
    if world.local_rank == 0:
        cache = cache_datasets(options.cache, root, datasets, workers=options.workers, progress=progress)
    world.barrier()
    if world.local_rank != 0:
        cache = cache_datasets(options.cache, root, datasets, builds=False)
    train_loader = loader(datasets["train"], train_collate, True)
    valid_loader = loader(datasets["valid"], valid_collate, False) if with_valid else None
    recorded = replace(
        options, collate=collate_name, arch=request.arch, weights=weights, preset=config.preset,
        recipe=trainer.choose_recipe(options.recipe),
    )
    return PreparedRun(
        root, trainer, task, request, config, recorded, model, head, loss, normalization, train_loader, valid_loader,
        lr_lambdas, world, device, cache,
    )


def describe_weights(weights: str) -> str:
    """``--weights`` in words."""
    if weights == "imagenet":
        return "torchvision's ImageNet weights"
    if weights == "none":
        return "random: trained from scratch"
    return "from a file"


def train(
    root: Path, options: TrainOptions, *, config: TrainConfig | None = None,
    callbacks: Sequence[object] = (), progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Train with a registered trainer on a split dataset; return the run's summary.

    Args:
        root: the split dataset (``train/`` and ``valid/``).
        options: what to train and how; ``None`` fields come from the trainer.
        config: settings to start from instead of the trainer's recipe (a repeated run's).
        callbacks: more listeners of the run's events (``prep.engine.events``), called after
            the installed plugins' hooks; ``on_train_start`` finds how the run is set up in
            ``run.setup`` (weights, normalisation, recipe, augmentation).
        progress: receives a task per epoch, with the live loss and images/s.

    Returns:
        ``summary.json``'s content, plus ``setup`` (``PreparedRun.describe``),
        ``normalization`` (``imagenet`` or ``dataset``), ``run_dir``, ``monitor`` and ``is_main``.

    Raises:
        UnknownNameError: no such trainer, task, collate function or LR lambda.
        TaskMismatchError: the trainer's task does not fit the dataset.
        RunExistsError: ``options.run_dir`` already holds a run and ``resume`` is off.
        WeightsError: the starting weights cannot be had or do not fit.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    from prep.engine.events import PluginCallbacks
    from prep.engine.fit import check_run_dir, fit, resolve_monitor
    from prep.plugins import plugin_host

    if options.run_dir is not None:  # before the weights are fetched and the data read
        check_run_dir(options.run_dir, options.resume)
    run = prepare_run(root, options, config=config, progress=progress)
    task, classes, world, norm = run.task, run.classes, run.world, run.normalization
    monitor, _ = resolve_monitor(task, run.config, classes)
    run_dir = options.run_dir or _new_run_dir(options.plugin, run.request.arch)
    recorded = replace(run.options, run_dir=run_dir)
    setup = run.describe()
    started = time.perf_counter()
    try:
        summary = fit(
            run.model, run.train_loader, run.valid_loader, run.config, run_dir, task=task, classes=classes,
            mean=norm.mean, std=norm.std, loss=run.loss, head=run.head,
            callbacks=[PluginCallbacks(plugin_host()), *callbacks], lr_lambdas=run.lr_lambdas,
            resume=options.resume, progress=progress, world=world, setup=setup,
            extra={
                "data": str(root.resolve()), "options": options_as_data(recorded), "class_table": _class_table_text(root),
                "normalization": norm.mode,
            },
        )
        examples = None
        if world.is_main and summary["epochs"] and hasattr(task, "examples"):
            examples = task.examples(run.model, run.valid_loader.dataset, classes, norm.mean, norm.std, run.device, run_dir / "examples.png")
    finally:
        if world.local_rank == 0:  # the process that built it
            run.cache.release()
    return {
        **summary, "setup": setup, "normalization": norm.mode, "run_dir": str(run_dir), "monitor": monitor,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "is_main": world.is_main, **({"examples": str(examples)} if examples else {}),
    }


def _class_table_text(root: Path) -> str | None:
    """The dataset's class table, kept in every checkpoint: predict colours its masks with it."""
    from prep.layout import CLASS_TABLE

    path = root / CLASS_TABLE
    return path.read_text(encoding="utf-8-sig") if path.is_file() else None
