"""The training loop every trainer shares: read it top to bottom.

``fit`` trains a model on batches from ``prep.data.loader`` (uint8 channels-last images,
normalised on the device), validates after every epoch, and keeps the run folder up to date:
``config.yaml`` (the resolved settings, which ``prep train --config`` repeats), ``last.pt``
and ``best.pt`` checkpoints (atomic; everything needed to resume exactly),
``metrics.jsonl``/``metrics.csv``, and at the end ``summary.json`` and the task's PNG
pictures. The loop does not know the task (``prep.engine.task``): the loss, the metrics, the
number to monitor and its direction, and the pictures come from the task object it is
given. Callbacks hear about the run through ``on_train_start``, ``on_epoch_end`` and
``on_train_end`` (``prep.engine.events``).

What stops a run: the last epoch or ``max_steps``; early stopping; a callback's
``request_stop``; a loss that is not finite (the last good checkpoint stays, and
``NonFiniteLossError`` says at which step); Ctrl-C (the first one saves ``last.pt`` at the
end of the current step, with the batches and training sums of the unfinished epoch, and
returns, marked interrupted; a resume skips those batches unread and finishes the epoch).

Under torchrun every process runs this same function on its share of the data
(``prep.engine.distributed``); the counts behind the metrics are summed over processes so
that every rank takes the same decisions, and only rank 0 writes files (``RunIO``).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from prep.data.collate import to_device_normalized
from prep.engine.checkpoint import (
    CheckpointError, capture_rng_state, load_checkpoint, load_model_weights, restore_rng_state, save_checkpoint,
    temp_checkpoint_path,
)
from prep.engine.config import TrainConfig
from prep.engine.distributed import World
from prep.engine.events import TrainingRun, emit
from prep.engine.freezing import BackboneFreezer, keep_norm_statistics
from prep.engine.logbook import MetricsLog
from prep.engine.optim import build_optimizer, parameter_groups
from prep.engine.schedulers import LRSchedule, LrLambdaFactory, ScheduleConfig
from prep.engine.task import MODES, EpochMetrics, Loss, Task
from prep.errors import PrepError, UsageError, check_choice
from prep.util.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

CONFIG_HEADER = "# The resolved settings of this run. Repeat it with: prep train --config THIS_FILE\n"


class NonFiniteLossError(PrepError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class RunExistsError(PrepError):
    """The run folder already holds a run, and it was not asked to resume."""


class RunIO:
    """The one place that writes a run's files and draws its progress; only the main
    process (rank 0) does."""

    def __init__(self, run_dir: Path, is_main: bool, progress: Progress) -> None:
        self.run_dir = run_dir
        self.is_main = is_main
        self.progress = progress if is_main else NO_PROGRESS
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, state: dict[str, Any]) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / name, state)

    def write_json(self, name: str, value: Any) -> None:
        if self.is_main:
            from prep.util.files import atomic_write_json

            atomic_write_json(self.run_dir / name, value, indent=2)

    def write_config(self, value: dict[str, Any]) -> None:
        if self.is_main:
            import yaml

            from prep.util.files import atomic_write_bytes

            text = CONFIG_HEADER + yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
            atomic_write_bytes(self.run_dir / "config.yaml", text.encode("utf-8"))


def pick_device(requested: str | None) -> torch.device:
    """``requested``, else CUDA when present (this rank's GPU under torchrun), else CPU."""
    return World.from_env().device(requested)


AMP_MODES = ("auto", "bf16", "fp16", "off")


def check_amp(amp: str, device: torch.device) -> str:
    """``amp`` when it is a mode this device can use.

    Raises:
        UsageError: an unknown mode, or bf16/fp16 without a CUDA GPU.
    """
    check_choice("--amp", amp, AMP_MODES)
    if amp in ("bf16", "fp16") and device.type != "cuda":
        raise UsageError(f"--amp {amp} needs a CUDA GPU; on {device.type} prep trains in float32 (--amp auto or off)")
    return amp


def _autocast(device: torch.device, amp: str):
    check_amp(amp, device)
    if device.type != "cuda" or amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


@contextmanager
def _first_interrupt_stops_gently() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C sets a flag the loop checks after each step; a second one kills."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def evaluate(
    model: torch.nn.Module, loader, task: Task, loss_fn: Loss, classes: list[str], mean, std, device: torch.device,
    *, world: World = World(), progress: Progress = NO_PROGRESS,
) -> tuple[float, dict[str, Any], int]:
    """The mean loss, the task's validation metrics (unprefixed: ``acc``, ``per_class_acc``
    ...) and the number of images, over a loader (over every rank's share under torchrun)."""
    model.eval()
    metrics = task.metrics(classes, train=False)
    origin = getattr(loader, "collate_origin", "collate function")
    total_loss, count = 0.0, 0
    with torch.no_grad(), progress.task("Validating", len(loader)) as advance:
        for batch in loader:
            advance(1)
            targets = task.targets(batch, classes, origin)
            n = len(batch.inputs)
            if n == 0:
                continue
            targets = _to_device(targets, device)
            outputs = model(to_device_normalized(batch.inputs, mean, std, device))
            total_loss += loss_fn(outputs, targets).item() * n
            count += n
            metrics.update(_detached(outputs), targets)
    total_loss, count = world.sum([total_loss, float(count)], device)
    _sum_counts(metrics, world, device)
    return total_loss / max(count, 1), metrics.compute(), int(count)


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors, alone or inside lists, tuples and dicts, moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _live_status(loss: float, images_per_s: float, loader: Any, world_size: int) -> str:
    """The epoch bar's text: the running loss, the training speed, and what the loader can
    make (when it is much more than the speed, the model is what limits training)."""
    status = f"loss {loss:.4f} · {images_per_s:,.0f} img/s"
    stats = getattr(loader, "stats", None)
    if stats is not None and stats.images_per_s is not None:
        status += f" · loader {stats.images_per_s * world_size:,.0f} img/s"
    return status


def _loader_record(loader: Any, elapsed: float, world_size: int) -> dict[str, float]:
    """An epoch's loading figures: ``loader_images_per_s``, what the loader can make (all
    processes together), and ``data_wait``, the share of the epoch spent waiting for it."""
    stats = getattr(loader, "stats", None)
    if stats is None or stats.images_per_s is None:
        return {}
    return {"loader_images_per_s": stats.images_per_s * world_size, "data_wait": min(stats.wait_s / max(elapsed, 1e-9), 1.0)}


def _detached(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, dict):
        return {k: _detached(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_detached(v) for v in outputs)
    return outputs


def _sum_counts(metrics: EpochMetrics, world: World, device: torch.device, carried: dict[str, torch.Tensor] | None = None) -> None:
    """Add up a metric's counts over every rank, plus what an interrupted run had counted."""
    for name, value in metrics.counts.items():
        total = world.sum_tensor(value, device)
        if carried and name in carried:
            total = total + carried[name].to(total.device)
        metrics.counts[name] = total


def _phase_record(phase: str, loss: float, computed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pass's numbers, prefixed with its phase (``valid_acc``), and its lists and tables
    under their own names (``per_class_acc``, ``confusion``)."""
    numbers = {f"{phase}_loss": loss}
    tables = {}
    for name, value in computed.items():
        if value is None or isinstance(value, (int, float)):
            numbers[f"{phase}_{name}"] = value
        else:
            tables[name] = value
    return numbers, tables


def resolve_monitor(task: Task, config: TrainConfig, classes: list[str] | None = None) -> tuple[str, str]:
    """The metrics key to monitor and its direction: the config's, else the task's (its
    ``monitor_for(classes)`` when it has one, as segmentation does: Dice for two classes).

    A monitor given without a mode is minimised when it is a loss and maximised otherwise.

    Raises:
        UsageError: the key is not one the engine or the task records, or the mode is unknown.
    """
    default = task.monitor_for(classes) if classes is not None and hasattr(task, "monitor_for") else task.monitor
    monitor = config.monitor or default
    known = [f"{phase}_{name}" for phase in ("valid", "train") for name in ("loss", *task.metric_names)]
    if monitor not in known:
        raise UsageError(f"--monitor must be one of {', '.join(known)} for the {task.name} task, not {monitor!r}")
    mode = config.monitor_mode or (task.mode if monitor == default else "min" if monitor.endswith("_loss") else "max")
    if mode not in MODES:
        raise UsageError(f"--monitor-mode must be max or min, not {mode!r}")
    return monitor, mode


def _wrap_for_training(
    model: torch.nn.Module, config: TrainConfig, world: World, device: torch.device
) -> tuple[torch.nn.Module, Any]:
    """The module that runs forward and backward (DDP under torchrun, compiled on request), and
    the DDP wrapper or None. Checkpoints always come from the plain ``model``."""
    wrapped = ddp = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        wrapped = torch.compile(wrapped)
    return wrapped, (ddp if world.distributed else None)


# What a run folder holds: fit's own files and the task's pictures.
RUN_FILES = {
    "config.yaml", "last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "summary.json", "tensorboard",
    "curves.png", "confusion.png", "examples.png", "per_class.png",
}


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a folder that holds a run unless resuming, and resuming a folder that does not.

    Raises:
        RunExistsError, CheckpointError: with what to do instead.
    """
    if not resume and (run_dir / "last.pt").exists():
        raise RunExistsError(
            f"{run_dir} already holds a run (last.pt); continue it with --resume, or choose another --run-dir"
        )
    if resume and not (run_dir / "last.pt").exists():
        raise CheckpointError(
            f"Nothing to resume in {run_dir}: it has no last.pt (the run stopped before its first "
            f"checkpoint, or this is not a run folder). Start the run again without --resume."
        )
    if run_dir.is_dir():
        # A run stopped before its first checkpoint may start again in its folder; anything
        # else there is someone's, and a run must not mix its files with theirs.
        foreign = sorted(e.name for e in run_dir.iterdir() if e.name not in RUN_FILES and not e.name.startswith("."))
        if foreign:
            raise RunExistsError(
                f"{run_dir} holds files that are not a prep run's (such as {foreign[0]}); choose an empty or new --run-dir"
            )


def _discard_interrupted_saves(run_dir: Path) -> None:
    """Remove what a process killed in the middle of saving a checkpoint left behind."""
    for name in ("last.pt", "best.pt"):
        temp = temp_checkpoint_path(run_dir / name)
        if temp.exists():
            log.info("Removing %s, left by a run killed while saving", temp)
            temp.unlink()


# What only a resume needs: best.pt, the file a user ships, leaves it out (for ResNet-18
# with AdamW, 45 MB instead of 134).
RESUME_ONLY = ("optimizer", "schedule", "scaler", "rng", "partial_epoch")


def shippable(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's state without what only a resume needs: the model, its classes,
    normalisation, settings and options stay, so evaluate, predict and export work."""
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


def _repair_best(run_dir: Path, last: dict[str, Any]) -> None:
    """Make ``best.pt`` the checkpoint that ``last.pt`` calls best.

    An epoch that improves saves ``last.pt`` and then ``best.pt``. A kill between the two
    leaves a ``best.pt`` one improvement behind, but then ``last.pt`` itself is the best
    checkpoint (its ``best_epoch`` is its own epoch), so it is copied over.
    """
    best_epoch = last.get("best_epoch")
    if best_epoch is None or best_epoch != last["epoch"] or last.get("partial_epoch"):
        return
    best_path = run_dir / "best.pt"
    if best_path.exists():
        try:
            if load_checkpoint(best_path).get("epoch") == best_epoch:
                return
        except CheckpointError:
            pass  # a damaged best.pt is replaced just the same
    log.info("best.pt was one improvement behind (the run was killed between saves); restoring it from last.pt")
    save_checkpoint(best_path, shippable(last))


def fit(
    model: torch.nn.Module,
    train_loader,
    valid_loader,
    config: TrainConfig,
    run_dir: Path,
    *,
    task: Task,
    classes: list[str],
    mean: list[float],
    std: list[float],
    loss: Loss | None = None,
    head: torch.nn.Module | None = None,
    callbacks: Sequence[object] = (),
    lr_lambdas: dict[str, LrLambdaFactory] | None = None,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    setup: dict[str, Any] | None = None,
    progress: Progress = NO_PROGRESS,
    world: World | None = None,
) -> dict[str, Any]:
    """Train, validate every epoch, checkpoint, and return the run's summary.

    Args:
        model: the model; trained in place.
        train_loader, valid_loader: loaders from ``prep.data.loader.create_loader``.
        config: the run's settings.
        run_dir: the run folder; it must not hold a run already unless ``resume``.
        task: what the data is (``prep.engine.task.Task``): it checks the batches and gives
            the default loss, the metrics, the number to monitor and the pictures.
        classes, mean, std: stored with the checkpoints, so the model can be used alone.
        loss: the training loss, ``loss(outputs, targets)``, instead of the task's
            (validation always uses the task's).
        head: the newly initialised part of the model (discriminative learning rates and
            ``freeze_backbone_epochs`` need it).
        callbacks: objects with any of ``on_train_start``, ``on_epoch_end`` and
            ``on_train_end`` (``prep.engine.events``).
        lr_lambdas: the factories that ``config.scheduler = "lambda:NAME"`` may name.
        resume: continue from ``run_dir/last.pt`` exactly where it stopped.
        extra: plain data (such as the trainer's options) stored in every checkpoint and
            in config.yaml.
        setup: how the run was set up, in words, for the callbacks (``TrainingRun.setup``).
        progress: draws a bar per epoch with the live loss and images/s.
        world: this process's place in a torchrun job (default: from the environment).

    Returns:
        The summary (also written to ``summary.json``): ``status``, ``epochs``, ``steps``,
        ``best_<monitor>``, ``final_<monitor>``, ``best_epoch``, ``classes``, and the paths
        of ``best`` and ``last``.

    Raises:
        RunExistsError: ``run_dir`` holds a run and ``resume`` is false.
        NonFiniteLossError: the loss became NaN or infinite.
        CheckpointError: ``resume`` found an unusable ``last.pt``.
        UsageError: a setting the engine cannot use (``--amp``, ``--monitor``, the scheduler).
    """
    world = world or World.from_env()
    device = world.device(config.device)
    world.join(device)
    # Settings are checked before anything is written.
    autocast, scaler = _autocast(device, config.amp)
    monitor, mode = resolve_monitor(task, config, classes)
    check_run_dir(run_dir, resume)
    torch.manual_seed(config.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    # Built before any freezing: frozen parameters keep their groups and simply get no
    # gradient, so the optimiser state has the same shape in every phase and on resume.
    optimizer = build_optimizer(
        config.optimizer,
        parameter_groups(model, lr=config.lr, weight_decay=config.weight_decay, head=head, backbone_lr_scale=config.backbone_lr_scale),
        lr=config.lr, momentum=config.momentum,
    )
    freezer = BackboneFreezer(model, head, config.freeze_backbone_epochs)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulate)
    schedule = LRSchedule(optimizer, ScheduleConfig(
        name=config.scheduler, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma,
    ), lr_lambdas)
    loss_fn = loss or task.loss(config, classes, train=True)
    valid_loss_fn = task.loss(config, classes, train=False)
    # Only now that every setting has been used is the run folder made: a bad one leaves nothing.
    io = RunIO(run_dir, world.is_main, progress)
    better = (lambda value, best: value > best + config.early_stop_min_delta) if mode == "max" else (lambda value, best: value < best - config.early_stop_min_delta)

    epoch, step, best, bad_epochs, best_epoch = 0, 0, -math.inf if mode == "max" else math.inf, 0, None
    # What a Ctrl-C'd epoch had done: its batches (skipped on resume), its training loss and
    # its metrics' counts.
    partial: dict[str, Any] | None = None
    if io.is_main:
        _discard_interrupted_saves(run_dir)
    if resume:
        state = load_checkpoint(run_dir / "last.pt")
        if io.is_main:
            _repair_best(run_dir, state)
        load_model_weights(model, state["model"], run_dir / "last.pt")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        epoch, step, best, bad_epochs = state["epoch"], state["step"], state["best"], state["bad_epochs"]
        best_epoch = state.get("best_epoch")
        partial = state.get("partial_epoch")
    io.write_config({**(extra or {}), "train": asdict(config), "classes": classes, "mean": mean, "std": std})
    # A resumed log keeps the epochs that last.pt has: one logged after the last save is
    # measured again rather than written twice.
    log_book = MetricsLog(run_dir, classes=classes, keep_through=epoch if resume else 0) if io.is_main else None
    run = TrainingRun(
        run_dir, config, model, optimizer, classes, task=task.name, monitor=monitor, mode=mode,
        epoch=epoch, step=step, is_main=world.is_main, setup=dict(setup or {}),
    )

    def checkpoint_state(partial_epoch: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": capture_rng_state(),
            "epoch": epoch, "step": step, "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "backbone_frozen": freezer.frozen, "partial_epoch": partial_epoch,
            "classes": classes, "mean": mean, "std": std, "config": asdict(config), **(extra or {}),
        }

    stopped, record = "completed", None
    train_origin = getattr(train_loader, "collate_origin", "collate function")
    # From here on a Ctrl-C, even during a plugin's on_train_start, stops gently.
    with _first_interrupt_stops_gently() as interrupt:
        emit(callbacks, "on_train_start", run=run)
        freezer.apply(epoch)
        trainable, ddp = _wrap_for_training(model, config, world, device)
        while epoch < config.epochs and stopped == "completed":
            if config.max_steps and step >= config.max_steps:  # a resumed run already there
                stopped = "max-steps"
                break
            if freezer.apply(epoch):
                trainable, ddp = _wrap_for_training(model, config, world, device)
            # Everything random in this epoch follows from (seed, epoch): see SeededSampler. An
            # epoch that a Ctrl-C cut short goes on from its next batch, with the random state
            # the checkpoint restored.
            done = int(partial["batches"]) if partial else 0
            train_loader.set_epoch(epoch, skip_batches=done)
            if not partial:
                torch.manual_seed(config.seed * 1_000_003 + epoch)
            model.train()
            if config.freeze_norm_stats:
                keep_norm_statistics(model, head)
            train_metrics = task.metrics(classes, train=True)
            started, seen, loss_sum = time.perf_counter(), 0, 0.0
            optimizer.zero_grad(set_to_none=True)
            batches = len(train_loader)
            with io.progress.task(f"Epoch {epoch + 1}/{config.epochs}", batches) as advance:
                if done:
                    advance(done)
                for index, batch in enumerate(train_loader, start=done):
                    targets = task.targets(batch, classes, train_origin)
                    n = len(batch.inputs)
                    # A batch whose every image was corrupt is empty. Under torchrun all ranks
                    # skip it together: one rank skipping alone would leave the others waiting
                    # in DDP's all-reduce forever.
                    empty = float(n == 0)
                    if (world.sum([empty], device)[0] if world.distributed else empty):
                        advance(1)
                        continue
                    targets = _to_device(targets, device)
                    images = to_device_normalized(batch.inputs, mean, std, device)
                    # The gradient of a step is the mean over its group of batches; the last group
                    # of an epoch may be shorter than --accumulate.
                    group_start = index - index % config.accumulate
                    group_size = min(config.accumulate, batches - group_start)
                    steps_now = index + 1 == group_start + group_size
                    # Under DDP, gradients are all-reduced only on the batch that steps.
                    with nullcontext() if steps_now or ddp is None else ddp.no_sync():
                        with autocast:
                            outputs = trainable(images)
                            loss_value = loss_fn(outputs, targets)
                        # One small all-reduce under torchrun, so that every rank stops at
                        # the same step: a rank left alone would wait forever.
                        not_finite, stop_now = world.sum([float(not torch.isfinite(loss_value)), float(interrupt["stop"])], device)
                        if not_finite:
                            value = loss_value.item()
                            became = f"became {value}" if not math.isfinite(value) else "became NaN or infinite in another process"
                            raise NonFiniteLossError(
                                f"The loss {became} at step {step} (epoch {epoch + 1}); stopped. "
                                f"The last good checkpoint is {run_dir / 'last.pt'}. Try a lower --lr."
                            )
                        (scaler.scale(loss_value) if scaler else loss_value).div(group_size).backward()
                    seen += n
                    loss_sum += loss_value.item() * n
                    train_metrics.update(_detached(outputs), targets)
                    advance(1, status=_live_status(loss_sum / seen, seen * world.size / (time.perf_counter() - started), train_loader, world.size))
                    if not steps_now:
                        continue
                    if config.clip_grad_norm:
                        if scaler:
                            scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    schedule.after_batch()
                    step += 1
                    if stop_now:
                        stopped = "interrupted"
                        break
                    if config.max_steps and step >= config.max_steps:
                        stopped = "max-steps"
                        break
            elapsed = time.perf_counter() - started
            seen, loss_sum = world.sum([float(seen), loss_sum], device)
            images_per_s = seen / max(elapsed, 1e-9)
            loading = _loader_record(train_loader, elapsed, world.size)
            _sum_counts(train_metrics, world, device, carried=partial.get("counts") if partial else None)
            if partial:
                seen, loss_sum = seen + partial["seen"], loss_sum + partial["loss_sum"]
                partial = None
            if stopped == "interrupted":
                # Leave at once: no validation, no epoch-end scheduler step; --resume finishes
                # this epoch from its next batch, exactly as if it had never stopped.
                counts = {name: value.cpu() for name, value in train_metrics.counts.items()}
                io.save("last.pt", checkpoint_state({"batches": index + 1, "seen": seen, "loss_sum": loss_sum, "counts": counts}))
                break
            valid_loss, valid_metrics, _ = evaluate(
                model, valid_loader, task, valid_loss_fn, classes, mean, std, device, world=world, progress=io.progress,
            )
            epoch += 1
            schedule.after_epoch(valid_loss)
            train_numbers, _ = _phase_record("train", loss_sum / max(seen, 1), train_metrics.compute())
            valid_numbers, tables = _phase_record("valid", valid_loss, valid_metrics)
            record = {
                "epoch": epoch, "step": step, **train_numbers, **valid_numbers, "lr": schedule.lrs()[0],
                "images_per_s": images_per_s, **loading, "backbone_frozen": freezer.frozen, **tables,
            }
            value = record[monitor]
            improved = value is not None and math.isfinite(value) and better(value, best)
            best, bad_epochs = (value, 0) if improved else (best, bad_epochs + 1)
            best_epoch = epoch if improved else best_epoch
            if log_book is not None:
                log_book.append(record)
            state = checkpoint_state()
            # This order, and _repair_best on resume, keep best.pt what last.pt calls best
            # whenever a kill comes.
            io.save("last.pt", state)
            if improved:
                io.save("best.pt", shippable(state))
            run.epoch, run.step = epoch, step
            emit(callbacks, "on_epoch_end", run=run, metrics=record)
            if config.early_stop_patience is not None and bad_epochs > config.early_stop_patience and stopped == "completed":
                stopped = "early-stopped"
            if world.sum([float(run.stop_reason is not None)], device)[0] and stopped == "completed":
                stopped = "stopped"
    if record is None and log_book is not None and log_book.records:
        record = log_book.records[-1]  # a resumed run that had already finished
    summary = {
        "status": stopped, "epochs": epoch, "steps": step,
        f"best_{monitor}": best if math.isfinite(best) else None, f"final_{monitor}": record[monitor] if record else None,
        "best_epoch": best_epoch, "classes": classes,
        # Every unreadable image that was left out, with why (this process's share under torchrun).
        "skipped_images": {**getattr(train_loader, "skipped", {}), **getattr(valid_loader, "skipped", {})},
        # Only files that exist: a run stopped in its first epoch has no best.pt yet.
        "best": str(run_dir / "best.pt") if (run_dir / "best.pt").exists() else None,
        "last": str(run_dir / "last.pt") if (run_dir / "last.pt").exists() else None,
    }
    if stopped == "stopped":
        summary["stop_reason"] = run.stop_reason or "another process's callback asked to stop"
    if log_book is not None:
        if log_book.records:
            task.pictures(log_book.records, classes, run_dir)
        log_book.close()  # also when a Ctrl-C came before any epoch ended: TensorBoard's writer has a thread
    io.write_json("summary.json", summary)
    world.barrier()
    emit(callbacks, "on_train_end", run=run, summary=summary)
    return summary
