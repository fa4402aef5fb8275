"""The training loop every trainer shares: ``fit``, an outline to read top to bottom.

``fit`` trains a model on batches from ``prep.data.loader`` (uint8 channels-last images,
normalised on the device), validates after every epoch, and keeps the run folder up to date
(``prep.engine.run_folder``): ``config.yaml`` (the resolved settings, which ``prep train
--config`` repeats), ``last.pt`` and ``best.pt`` (atomic; everything needed to resume
exactly, see ``prep.engine.state``), ``metrics.jsonl``/``metrics.csv``, and at the end
``summary.json`` and the task's PNG pictures. The loop does not know the task
(``prep.engine.task``): the loss, the metrics, the number to monitor and its direction, and
the pictures come from the task object it is given. Callbacks hear about the run through
``on_train_start``, ``on_epoch_end`` and ``on_train_end`` (``prep.engine.events``).

What stops a run: the last epoch or ``max_steps``; early stopping; a callback's
``request_stop``; a loss that is not finite (the last good checkpoint stays, and
``NonFiniteLossError`` says at which step); images that vanish from the disk during the run
(``ImagesMissingError``: more than 5% of a pass, or all of it); Ctrl-C (the first one saves ``last.pt`` at the
end of the current step, with the batches and training sums of the unfinished epoch, and
returns, marked interrupted; a resume skips those batches unread and finishes the epoch).

Under torchrun every process runs this same function on its share of the data
(``prep.engine.distributed``); the counts behind the metrics are summed over processes so
that every rank takes the same decisions, and only rank 0 writes files (``RunIO``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from prep.engine.config import TrainConfig
from prep.engine.distributed import World
from prep.engine.ema import WeightAverage
from prep.engine.epoch import (
    TrainedEpoch, TrainStep, check_images_read, first_interrupt_stops_gently, phase_record, train_epoch, validate,
)
from prep.engine.events import TrainingRun, emit
from prep.engine.freezing import BackboneFreezer
from prep.engine.logbook import MetricsLog
from prep.engine.optim import build_optimizer, parameter_groups
from prep.engine.run_folder import RunIO, check_run_dir
from prep.engine.schedulers import LRSchedule, LrLambdaFactory, ScheduleConfig
from prep.engine.settings import RunSettings, resolve_settings
from prep.engine.state import RunState, best_checkpoint
from prep.engine.task import Loss, Task
from prep.util.progress import NO_PROGRESS, Progress


def fit(
    model: torch.nn.Module, train_loader, valid_loader, config: TrainConfig, run_dir: Path, *, task: Task,
    classes: list[str], mean: list[float], std: list[float], loss: Loss | None = None, head: torch.nn.Module | None = None,
    callbacks: Sequence[object] = (), lr_lambdas: dict[str, LrLambdaFactory] | None = None, resume: bool = False,
    extra: dict[str, Any] | None = None, setup: dict[str, Any] | None = None, progress: Progress = NO_PROGRESS,
    world: World | None = None, settings: RunSettings | None = None,
) -> dict[str, Any]:
    """Train, validate every epoch, checkpoint, and return the run's summary (``summary.json``).

    ``model`` is trained in place; ``head`` is its newly initialised part (for discriminative
    learning rates and ``freeze_backbone_epochs``). ``classes``, ``mean``, ``std`` and
    ``extra`` go into every checkpoint, so that the model can be used alone; ``loss``
    replaces the task's for training; ``callbacks`` have any of ``on_train_start``,
    ``on_epoch_end`` and ``on_train_end``; ``lr_lambdas`` are what ``lambda:NAME`` schedulers
    name; ``setup`` describes the run for them; ``settings`` is ``resolve_settings``'s result
    (made here when not given). ``resume`` continues from ``run_dir/last.pt`` exactly.

    Raises:
        RunExistsError, CheckpointError: ``run_dir`` does not fit ``resume``.
        NonFiniteLossError: the loss became NaN or infinite.
        ImagesMissingError: images vanished during the run (see ``check_images_read``).
        UsageError: a setting the engine cannot use (see ``resolve_settings``).
    """
    world = world or World.from_env()
    device = world.device(config.device)
    world.join(device)
    settings = settings or resolve_settings(task, config, classes, device, loss)  # before anything is written
    check_run_dir(run_dir, resume)
    torch.manual_seed(config.seed)
    step, state = _start(model, head, train_loader, config, settings, lr_lambdas, device, classes, mean, std, extra)
    io = RunIO(run_dir, world.is_main, progress)  # only now that every setting is used: a bad one leaves nothing
    if resume:
        state.resume(run_dir / "last.pt", repair=io.is_main)
    io.write_config({**(extra or {}), "train": asdict(config), "classes": classes, "mean": mean, "std": std})
    # A resumed log keeps the epochs that last.pt has: one logged after the last save is
    # measured again rather than written twice.
    log_book = MetricsLog(run_dir, classes=classes, keep_through=state.epoch if resume else 0) if io.is_main else None
    run = TrainingRun(
        run_dir, config, model, step.optimizer, classes, task=task.name, monitor=settings.monitor, mode=settings.mode,
        epoch=state.epoch, step=state.step, is_main=world.is_main, setup=dict(setup or {}),
    )
    record = None
    stopped = "max-steps" if config.max_steps and state.step >= config.max_steps else None  # resumed, already there
    with first_interrupt_stops_gently() as interrupt:  # from here on, even in a plugin's on_train_start
        emit(callbacks, "on_train_start", run=run)
        state.freezer.apply(state.epoch)
        step.wrap(world, device)
        while state.epoch < config.epochs and stopped is None:
            if state.freezer.apply(state.epoch):
                step.wrap(world, device)
            trained = train_epoch(step, train_loader, task, state, classes=classes, mean=mean, std=std, device=device,
                                  world=world, interrupt=interrupt, checkpoint=run_dir / "last.pt", progress=io.progress)
            state.partial = None
            if trained.stopped is None:
                check_images_read(train_loader, "training", state.epoch + 1, world, device)
            if trained.stopped == "interrupted":
                # Leave at once, with no validation and no epoch-end scheduler step: --resume
                # finishes this epoch from its next batch, exactly as if it had never stopped.
                io.save("last.pt", state.to_checkpoint(trained.unfinished()))
                stopped = "interrupted"
                break
            valid_loss, valid_metrics, _ = validate(
                model, valid_loader, task, settings.valid_loss, classes, mean, std, device, world=world, progress=io.progress,
            )
            check_images_read(valid_loader, "validation", state.epoch + 1, world, device)
            averaged = None
            if state.ema is not None:  # the average of the weights, validated the same way
                averaged = validate(
                    state.ema.module, valid_loader, task, settings.valid_loss, classes, mean, std, device, world=world,
                    progress=io.progress,
                )
            state.epoch += 1
            state.schedule.after_epoch(valid_loss)
            record = _epoch_record(state, trained, valid_loss, valid_metrics, averaged)
            improved = state.judge(*_monitored(record, settings))
            record["improved"] = improved  # best.pt now holds this epoch (its pictures say which)
            if improved and hasattr(task, "model_state"):  # what the model needs of its own validation
                state.task_state = task.model_state(averaged[1] if state.best_weights == "ema" else valid_metrics)
            if log_book is not None:
                log_book.append(record)
            # last.pt first, and repair_best on resume: whenever a kill comes, best.pt is what last.pt calls best.
            saved = state.to_checkpoint()
            io.save("last.pt", saved)
            if improved:
                io.save("best.pt", best_checkpoint(saved))
            run.epoch, run.step = state.epoch, state.step
            emit(callbacks, "on_epoch_end", run=run, metrics=record)
            stopped = _stop_after_epoch(state, run, trained.stopped, world, device)
    return _finish(
        run, state, stopped or "completed", record, log_book, io, task, settings.monitor, world, callbacks,
        skipped={**getattr(train_loader, "skipped", {}), **getattr(valid_loader, "skipped", {})},
    )


def _start(
    model: torch.nn.Module, head: torch.nn.Module | None, train_loader: Any, config: TrainConfig, settings: RunSettings,
    lr_lambdas: dict[str, LrLambdaFactory] | None, device: torch.device, classes: list[str], mean, std, extra,
) -> tuple[TrainStep, RunState]:
    """The model on the device, its optimiser, schedule and freezer: the step that trains it,
    and the state that checkpoints it."""
    model.to(device)
    if settings.precision.wants_channels_last:
        model.to(memory_format=torch.channels_last)
    ema = WeightAverage(model, config.ema) if config.ema else None
    # Built before any freezing: frozen parameters keep their groups and simply get no
    # gradient, so the optimiser state has the same shape in every phase and on resume.
    groups = parameter_groups(model, lr=config.lr, weight_decay=config.weight_decay, head=head, backbone_lr_scale=config.backbone_lr_scale)
    optimizer = build_optimizer(config.optimizer, groups, lr=config.lr, momentum=config.momentum)
    freezer = BackboneFreezer(model, head, config.freeze_backbone_epochs)
    schedule = LRSchedule(optimizer, ScheduleConfig(
        name=config.scheduler, epochs=config.epochs, steps_per_epoch=math.ceil(len(train_loader) / config.accumulate),
        warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma,
    ), lr_lambdas)
    step = TrainStep(model, head, optimizer, settings.loss, settings.precision, config, settings.mixer)
    state = RunState(
        model, optimizer, schedule, settings.precision, freezer, config=config, mode=settings.mode,
        classes=classes, mean=mean, std=std, extra=extra, ema=ema,
    )
    return step, state


def _epoch_record(
    state: RunState, trained: TrainedEpoch, valid_loss: float, valid_metrics: dict[str, Any], averaged: tuple | None,
) -> dict[str, Any]:
    """The epoch's line of metrics.jsonl (see ``prep.engine.task`` for its keys); with
    ``--ema``, the average's validation numbers too, prefixed ``ema_`` (``ema_valid_acc``)."""
    train_numbers, _ = phase_record("train", trained.loss, trained.metrics.compute())
    valid_numbers, tables = phase_record("valid", valid_loss, valid_metrics)
    ema_numbers = phase_record("ema_valid", averaged[0], averaged[1])[0] if averaged is not None else {}
    return {
        "epoch": state.epoch, "step": state.step, **train_numbers, **valid_numbers, **ema_numbers, "lr": trained.lr,
        "images_per_s": trained.images_per_s, **trained.loading, "backbone_frozen": state.freezer.frozen, **tables,
    }


def _monitored(record: dict[str, Any], settings: RunSettings) -> tuple[float | None, str]:
    """The epoch's monitored value and whose it is: the trained weights', or their
    average's when ``--ema`` scored better on it (``best.pt`` then holds the average)."""
    trained, averaged = record[settings.monitor], record.get(f"ema_{settings.monitor}")
    if averaged is None or not math.isfinite(averaged):
        return trained, "trained"
    if trained is None or not math.isfinite(trained):
        return averaged, "ema"
    better = averaged > trained if settings.mode == "max" else averaged < trained
    return (averaged, "ema") if better else (trained, "trained")


def _stop_after_epoch(state: RunState, run: TrainingRun, stopped: str | None, world: World, device: torch.device) -> str | None:
    """Why the run stops after this epoch, if it does: ``max-steps``, early stopping, or a
    callback's ``request_stop`` in any process (asked of every process, every epoch)."""
    asked = world.sum([float(run.stop_reason is not None)], device)[0]
    patience = state.config.early_stop_patience
    if stopped is None and patience is not None and state.bad_epochs > patience:
        stopped = "early-stopped"
    return stopped or ("stopped" if asked else None)


def _finish(
    run: TrainingRun, state: RunState, stopped: str, record: dict[str, Any] | None, log_book: MetricsLog | None, io: RunIO,
    task: Task, monitor: str, world: World, callbacks: Sequence[object], skipped: dict[str, str],
) -> dict[str, Any]:
    """Write the summary and the task's pictures, tell the callbacks, and return the summary."""
    if record is None and log_book is not None and log_book.records:
        record = log_book.records[-1]  # a resumed run that had already finished
    summary = {
        "status": stopped, "epochs": state.epoch, "steps": state.step,
        f"best_{monitor}": state.best if math.isfinite(state.best) else None,
        f"final_{monitor}": record[monitor] if record else None,
        "best_epoch": state.best_epoch, "classes": state.classes,
        **({"best_weights": state.best_weights} if state.ema is not None else {}),
        # Every unreadable image that was left out, with why (this process's share under torchrun).
        "skipped_images": skipped,
        # Only files that exist: a run stopped in its first epoch has no best.pt yet.
        "best": io.existing("best.pt"), "last": io.existing("last.pt"),
    }
    if stopped == "stopped":
        summary["stop_reason"] = run.stop_reason or "another process's callback asked to stop"
    if log_book is not None:
        if log_book.records:
            task.pictures(log_book.records, state.classes, io.run_dir)
        log_book.close()  # also when a Ctrl-C came before any epoch ended: TensorBoard's writer has a thread
    io.write_json("summary.json", summary)
    world.barrier()
    emit(callbacks, "on_train_end", run=run, summary=summary)
    return summary
