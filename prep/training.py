"""``train``: the function behind ``prep train``. It turns the names it is given (trainer, task,
collate function, LR lambda, preset) into objects, checks that the trainer fits the data, and
hands over to the shared engine (``prep.engine.loop.fit``)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from prep.engine.config import TrainConfig
from prep.errors import PluginError, TaskMismatchError
from prep.progress import NO_PROGRESS, Progress
from prep.run_config import TrainOptions, options_as_data, resolve_config
from prep.trainer import ModelRequest, Trainer, split_model

if TYPE_CHECKING:
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
    from prep.data.splits import dataset_kind
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
            the installed plugins' hooks.
        progress: receives a task per epoch, with the live loss and images/s.

    Returns:
        ``summary.json``'s content, plus ``normalization`` (where mean and std came from),
        ``run_dir``, ``monitor`` and ``is_main``.

    Raises:
        UnknownNameError: no such trainer, task, collate function or LR lambda.
        TaskMismatchError: the trainer's task does not fit the dataset.
        RunExistsError: ``options.run_dir`` already holds a run and ``resume`` is off.
        DatasetNotFoundError, PrepError: bad data or options, with the reason.
    """
    import torch

    from prep.augment.presets import build_pipeline
    from prep.data.loader import create_loader
    from prep.engine.distributed import World
    from prep.engine.events import PluginCallbacks
    from prep.engine.loop import fit, resolve_monitor
    from prep.normalization import normalization
    from prep.plugins import collate_fns, plugin_host
    from prep.weights import check_weights

    # Everything the options name is checked before anything is read or written.
    registration = trainer_registration(options.plugin)
    trainer = registration.value
    task = task_for(options.plugin, trainer, root)
    if hasattr(task, "prepare"):
        task.prepare(root, progress)
    request = ModelRequest(
        tuple(task.classes(root)), trainer.choose_arch(options.arch), check_weights(options.weights), options.image_size,
    )
    config = resolve_config(trainer, options, request, config)
    monitor, _ = resolve_monitor(task, config, list(request.classes))
    task_loss = task.loss(config, list(request.classes), train=True)  # checks --loss and --class-weights
    lr_lambdas = _lr_lambdas(config.scheduler)
    collate_name = options.collate or trainer.collate or task.collate
    train_collate, valid_collate = collate_fns().registration(collate_name), collate_fns().registration(task.collate)

    world = World.from_env()
    device = world.device(config.device)
    size, classes = options.image_size, list(request.classes)

    def loader(split: str, collate: "Registration", train: bool):
        transform = build_pipeline(options.preset, size, train=train, task=task.layout, seed=config.seed if train else None)
        dataset = task.dataset(root, split, classes=classes, transform=transform, decode_min_side=size)
        return create_loader(
            dataset, options.batch_size, train=train, collate_fn=collate.call, collate_origin=collate.origin,
            rank=world.rank, world_size=world.size, workers=options.workers, seed=config.seed, device=device,
        )

    train_loader, valid_loader = loader("train", train_collate, True), loader("valid", valid_collate, False)
    torch.manual_seed(config.seed)
    model, head = split_model(registration.call_method("build_model", request))
    loss = registration.call_method("loss", config, classes) or task_loss
    # Under torchrun every rank would compute and write stats.json at once.
    mean, std, source = normalization(root, trainer.pretrained(request), options.workers, may_compute=not world.distributed)
    run_dir = options.run_dir or _new_run_dir(options.plugin, request.arch)
    recorded = replace(options, run_dir=run_dir, collate=collate_name, arch=request.arch)
    summary = fit(
        model, train_loader, valid_loader, config, run_dir, task=task, classes=classes, mean=mean, std=std,
        loss=loss, head=head, callbacks=[PluginCallbacks(plugin_host()), *callbacks], lr_lambdas=lr_lambdas,
        resume=options.resume, progress=progress, world=world,
        extra={"data": str(root.resolve()), "options": options_as_data(recorded), "class_table": _class_table_text(root)},
    )
    examples = None
    if world.is_main and summary["epochs"] and hasattr(task, "examples"):
        examples = task.examples(model, valid_loader.dataset, classes, mean, std, device, run_dir / "examples.png")
    return {
        **summary, "normalization": source, "run_dir": str(run_dir), "monitor": monitor, "is_main": world.is_main,
        **({"examples": str(examples)} if examples else {}),
    }


def _class_table_text(root: Path) -> str | None:
    """The dataset's class table, kept in every checkpoint: predict colours its masks with it."""
    from prep.layout import CLASS_TABLE

    path = root / CLASS_TABLE
    return path.read_text(encoding="utf-8-sig") if path.is_file() else None
