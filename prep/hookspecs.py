"""The hooks that plugins implement. Specifications only: no logic lives here.

Two kinds of hook. Every hook that contributes named things (``register_*``) receives a
``register`` callback and returns nothing, so prep owns its registries and settles name
clashes in one place (``prep.registry.Registry``). Event hooks (``on_*``) are called while
a training runs, on every plugin that implements them; they return nothing either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import typer

    from prep.augment.presets import Preset
    from prep.engine.events import TrainingRun
    from prep.engine.task import Task
    from prep.train.trainer import Trainer
    from prep.split.label_parsers import LabelParser
    from prep.split.splitters import Splitter

hookspec = pluggy.HookspecMarker("prep")
hookimpl = pluggy.HookimplMarker("prep")


@hookspec
def register_label_parsers(register: Callable[[str, "LabelParser"], None]) -> None:
    """Register functions that read a class label from an image's file name.

    Call ``register(name, parser)`` once per parser. A parser takes a file name such as
    ``"american_bulldog_12.jpg"`` and returns the raw label (``"american_bulldog"``) or
    ``None`` when the name carries no label. Users pick one with
    ``prep split --label-parser NAME``; prep sanitises whatever it returns.
    """


@hookspec
def register_splitters(register: Callable[[str, "Splitter"], None]) -> None:
    """Register strategies that assign groups of samples to train, valid and test.

    Call ``register(name, splitter)`` once per strategy. A splitter receives the sample
    groups (files that must stay together), the requested split sizes and the seed, and
    returns one split name per group; it must give the same answer for the same seed.
    Users pick one with ``prep split --splitter NAME``.
    """


@hookspec
def register_augmentation_presets(register: Callable[[str, "Preset"], None]) -> None:
    """Register named augmentation presets.

    Call ``register(name, preset)``. A preset is ``preset(image_size, train, task)`` and
    returns a list of albumentations transforms: the train pipeline when ``train`` is true,
    else the eval one; ``task`` is ``"classification"`` or ``"segmentation"`` (masks follow
    geometric transforms). Users pick one with ``--preset NAME``; prep wraps it in a seeded
    ``albumentations.Compose``.
    """


@hookspec
def register_collate_fns(register: Callable[[str, Callable], None]) -> None:
    """Register functions that turn a list of samples into a batch.

    Call ``register(name, collate_fn)``. ``collate_fn(samples)`` receives what the dataset
    returns for each index and returns the batch; trainers and loaders choose one by name.
    One that needs the run's classes (a mixup making one-hot targets) registers an object
    with a ``with_classes(classes)`` method instead, which returns the collate function for
    that run. Built-in: ``uint8-channels-last``, ``segmentation``, ``targets-as-list``.
    """


@hookspec
def register_trainers(register: Callable[[str, "Trainer"], None]) -> None:
    """Register trainers for ``prep train --plugin NAME``.

    Call ``register(name, trainer)`` with an instance of a ``prep.Trainer`` subclass. A
    trainer names its task, builds the model from a ``prep.ModelRequest`` (saying which part
    is the new head), declares its architectures and recipes, and may supply its own loss;
    prep's shared engine does the training, checkpoints and logging.
    """


@hookspec
def register_tasks(register: Callable[[str, "Task"], None]) -> None:
    """Register tasks: kinds of problem that trainers can name (``Trainer.task``).

    Call ``register(name, task)``. A task (see ``prep.engine.task.Task``) gives the engine
    the dataset of a split and its collate function, the default loss, metric accumulators,
    the metric to monitor and its direction, and the pictures at the end of a run. Built-in:
    ``classification``.
    """


@hookspec
def register_lr_lambdas(register: Callable[[str, Callable], None]) -> None:
    """Register learning-rate curves for ``--scheduler lambda:NAME``.

    Call ``register(name, factory)``. ``factory(epochs)`` receives the number of scheduled
    epochs and returns ``f(epoch) -> factor``, the multiple of the base learning rate for
    that epoch, as torch's ``LambdaLR`` expects. It is stepped once per epoch, after any
    warmup.
    """


@hookspec
def register_commands(app: "typer.Typer") -> None:
    """Add commands to the ``prep`` command line.

    Decorate functions with ``@app.command()``. Keep them thin: parse options, then call
    a plain function. Raise ``prep.errors.PrepError`` subclasses for problems the user
    can fix; the CLI turns them into a message and an exit code.
    """


@hookspec
def on_train_start(run: "TrainingRun") -> None:
    """Called once when a training run starts (or resumes), before the first batch.

    ``run`` (``prep.TrainingRun``) gives the run folder, the resolved config, the model,
    the optimiser, the class names, the task, the monitored metric and its direction, the
    epoch and step the run starts from, and ``is_main`` (false in the other processes of a
    torchrun job).
    """


@hookspec
def on_epoch_end(run: "TrainingRun", metrics: dict) -> None:
    """Called after every epoch's validation, once its checkpoints are saved.

    ``metrics`` is the record written to ``metrics.jsonl``: the engine's ``epoch``,
    ``step``, ``train_loss``, ``valid_loss``, ``lr``, ``images_per_s`` and
    ``backbone_frozen``, and the task's (classification: ``train_acc``, ``valid_acc``,
    ``per_class_acc``, ``confusion``; segmentation: ``valid_dice``, ``valid_iou`` ...). Call ``run.request_stop(reason)`` to end the run
    after this epoch. An exception is reported with the plugin's name and the run goes on
    (strict mode stops it).
    """


@hookspec
def on_train_end(run: "TrainingRun", summary: dict) -> None:
    """Called once when a run ends for any reason but an error, after ``summary.json``
    is written. ``summary`` is its content (``status``, ``best_<monitor>`` and
    ``final_<monitor>``, the checkpoint paths)."""
