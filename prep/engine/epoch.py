"""One epoch of training and one validation pass, and the training step both the loop and
the learning-rate finder are made of.

The host reads what the device computed as seldom as it can: every read (``.item()``, a
finite-loss check) waits for the GPU to finish all the work queued before it, and a read
per batch keeps a fast GPU idle between batches. So the epoch's loss and its health (the
first step whose loss was not finite, and that loss) are summed on the device, and read
(``DeviceSums.look``) when ``Pacer`` says: after every batch on a CPU, where a read costs
nothing, and on a GPU about twice a second, when the progress bar shows them, and at the end
of the epoch. Under torchrun every process reads at the same batches (the pace is agreed at
each read), so that all of them stop at the same step.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from prep.data.collate import to_device_normalized
from prep.engine.config import TrainConfig
from prep.engine.distributed import World
from prep.engine.freezing import keep_norm_statistics
from prep.engine.precision import Precision
from prep.engine.task import EpochMetrics, Loss, Task
from prep.errors import PrepError
from prep.util.progress import NO_PROGRESS, Progress

REFRESH_S = 0.5  # how often, at most, the host reads the device's sums on a GPU
MOST_BATCHES_UNREAD = 1000


MOST_MISSING = 0.05  # of a pass's images that may vanish from the disk during a run before it stops


class NonFiniteLossError(PrepError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class ImagesMissingError(PrepError):
    """Images the run started with vanished from the disk (more than ``MOST_MISSING`` of a
    pass), or no image of a pass could be read: training on what is left would report a
    run that learnt nothing as a success."""


def _what_was_kept(epoch: int) -> str:
    if epoch > 1:
        return f"last.pt keeps epoch {epoch - 1}; put the images back and --resume"
    return "nothing was saved; put the images back and train again"


def check_images_read(loader: Any, phase: str, epoch: int, world: World, device: torch.device) -> None:
    """Stop the run when ``loader``'s last pass lost more than ``MOST_MISSING`` of its
    images to files that no longer exist, or read none at all (a corrupt image here and
    there is only skipped; see ``prep.data.loader``).

    Raises:
        ImagesMissingError: naming the first missing (or unreadable) file.
    """
    stats = getattr(loader, "stats", None)
    if stats is None or not hasattr(stats, "missing"):
        return
    missing, read, unread = world.sum([float(stats.missing), float(stats.images), float(stats.unread)], device)
    total = read + unread
    if total and missing > MOST_MISSING * total:
        raise ImagesMissingError(
            f"{int(missing)} of the {int(total)} {phase} images of epoch {epoch} went missing during the run "
            f"(the first: {stats.first_missing or 'on another process'}); more than {MOST_MISSING:.0%} gone, so the run "
            f"stops rather than train on what is left: {_what_was_kept(epoch)}"
        )
    if total and not read:
        raise ImagesMissingError(
            f"none of the {int(total)} {phase} images of epoch {epoch} could be read "
            f"(the first: {stats.first_unread or 'on another process'}); the run stops rather than train on nothing"
        )


@contextmanager
def first_interrupt_stops_gently() -> Iterator[dict[str, bool]]:
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


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors, alone or inside lists, tuples and dicts, moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def detached(outputs: Any) -> Any:
    """Model outputs, alone or inside dicts, lists and tuples, detached from the graph."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, dict):
        return {k: detached(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(detached(v) for v in outputs)
    return outputs


def sum_counts(metrics: EpochMetrics, world: World, device: torch.device, carried: dict[str, torch.Tensor] | None = None) -> None:
    """Add up a metric's counts over every rank, plus what an interrupted run had counted."""
    for name, value in metrics.counts.items():
        total = world.sum_tensor(value, device)
        if carried and name in carried:
            total = total + carried[name].to(total.device)
        metrics.counts[name] = total


@dataclass
class BatchOnDevice:
    """A batch ready for the model: normalised images and checked targets, on the device."""

    images: torch.Tensor
    targets: Any
    size: int


def batch_on_device(batch: Any, task: Task, classes: list[str], origin: str, mean, std, device: torch.device) -> BatchOnDevice:
    """``batch`` from a collate function, its targets checked by the task (on the CPU, so that
    a plugin's mistake is named before anything reaches the GPU), then moved and normalised."""
    targets = task.targets(batch, classes, origin)
    size = len(batch.inputs)
    if not size:
        return BatchOnDevice(batch.inputs, targets, 0)
    return BatchOnDevice(to_device_normalized(batch.inputs, mean, std, device), to_device(targets, device), size)


class TrainStep:
    """The training step, shared by the loop and the learning-rate finder: the forward pass
    and the loss in the run's precision, the backward pass, and the optimiser step with
    gradient clipping and float16's loss scaling.

    ``trainable`` is the module that runs forward and backward (DDP under torchrun, compiled
    on request); checkpoints always come from the plain ``model``. ``mixer`` is the task's
    mixing of training batches (mixup, cutmix), or None.
    """

    def __init__(
        self, model: torch.nn.Module, head: torch.nn.Module | None, optimizer: torch.optim.Optimizer, loss: Loss,
        precision: Precision, config: TrainConfig, mixer: Any = None,
    ) -> None:
        self.model, self.head, self.optimizer, self.loss, self.precision = model, head, optimizer, loss, precision
        self.mixer, self.seed = mixer, config.seed
        self.clip_grad_norm, self.compile = config.clip_grad_norm, config.compile
        self.trainable: torch.nn.Module = model
        self.ddp: Any = None

    def wrap(self, world: World, device: torch.device) -> None:
        """(Re)build the module that trains: after a change of which parameters take a
        gradient, DDP and torch.compile must be built again."""
        self.trainable, self.ddp = self.model, None
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.trainable = self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if self.compile:
            self.trainable = torch.compile(self.trainable)

    def accumulating(self, steps_now: bool):
        """The context of a batch's forward and backward: under DDP, gradients are
        all-reduced only on the batch whose optimiser step follows."""
        return nullcontext() if steps_now or self.ddp is None else self.ddp.no_sync()

    def mix(self, batch: BatchOnDevice, epoch: int, index: int, rank: int) -> BatchOnDevice:
        """The batch mixed (when the mixer is on for ``epoch``), its draws seeded by (seed,
        epoch, batch ``index``, ``rank``): a resumed epoch mixes its batches as before."""
        if self.mixer is None or not self.mixer.active(epoch) or not batch.size:
            return batch
        import numpy as np

        images, targets = self.mixer(batch.images, batch.targets, np.random.default_rng([self.seed, epoch, index, rank]))
        return BatchOnDevice(images, targets, batch.size)

    def forward(self, batch: BatchOnDevice) -> tuple[torch.Tensor, Any]:
        """The batch's loss and the model's outputs."""
        with self.precision.autocast():
            outputs = self.trainable(batch.images)
            return self.loss(outputs, batch.targets), outputs

    def backward(self, loss: torch.Tensor, group_size: int = 1) -> None:
        """Add this batch's share of its group's gradient (the mean over ``group_size`` batches)."""
        self.precision.scaler.scale(loss).div(group_size).backward()

    def apply(self) -> None:
        """The optimiser step from the gradients added since the last one."""
        scaler = self.precision.scaler
        if self.clip_grad_norm:
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


class Pacer:
    """When the host reads the device's sums: after every batch where reading costs nothing
    (a CPU), else every ``every`` batches, chosen at each read so that reads come about
    every ``REFRESH_S`` seconds. Under torchrun the batches' time is the processes' mean,
    summed at the read, so that every process reads at the same batches."""

    def __init__(self, reads_are_free: bool, clock=time.perf_counter) -> None:
        self.reads_are_free, self.clock = reads_are_free, clock
        self.every, self.batches, self.since = 1, 0, clock()

    @classmethod
    def for_device(cls, device: torch.device) -> "Pacer":
        return cls(device.type == "cpu")

    def due(self, last_batch: bool) -> bool:
        """Count a batch; True when the host should read after it."""
        self.batches += 1
        return last_batch or self.batches >= self.every

    def seconds(self) -> float:
        """The time since the last read, to sum over processes at this read."""
        return self.clock() - self.since

    def read(self, mean_seconds: float) -> None:
        """A read happened; the batches since the last one took ``mean_seconds``."""
        if not self.reads_are_free:
            pace = self.batches * REFRESH_S / max(mean_seconds, 1e-6)
            self.every = max(1, min(MOST_BATCHES_UNREAD, int(pace)))
        self.batches, self.since = 0, self.clock()


class DeviceSums:
    """An epoch's training loss and its health, summed on the device: the loss times the
    images (float64, as exact as summing on the host), and the first step whose loss was not
    finite, with that loss. ``seen`` (images) is counted on the host, which knows it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, size: int, step: int) -> None:
        loss = loss.detach()
        self.loss_sum += loss.double() * size
        self.seen += size
        first_bad = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step.masked_fill_(first_bad, step)
        self.bad_loss = torch.where(first_bad, loss.float(), self.bad_loss)

    def look(self, world: World, pacer: Pacer, interrupted: bool, *, step: int, epoch: int, checkpoint: Any) -> bool:
        """Read the sums (one wait for the device) and agree with the other processes;
        True when a Ctrl-C (in any process) asks to stop.

        Raises:
            NonFiniteLossError: a loss in this process or another was not finite, with the
                step (now ``step``, in epoch ``epoch``) and the ``checkpoint`` that stays.
        """
        bad_step = int(self.bad_step)
        bad, stop, seconds = world.sum([float(bad_step >= 0), float(interrupted), pacer.seconds()], self.device)
        pacer.read(seconds / world.size)
        if bad:
            became = f"became {float(self.bad_loss)}" if bad_step >= 0 else "became NaN or infinite in another process"
            raise NonFiniteLossError(
                f"The loss {became} at step {bad_step if bad_step >= 0 else step} (epoch {epoch}); stopped. "
                f"The last good checkpoint is {checkpoint}. Try a lower --lr."
            )
        return bool(stop)

    def running_loss(self) -> float:
        return float(self.loss_sum) / max(self.seen, 1)


def live_status(loss: float, images_per_s: float, loader: Any, world_size: int) -> str:
    """The epoch bar's text: the running loss, the training speed, and what the loader can
    make (when it is much more than the speed, the model is what limits training)."""
    status = f"loss {loss:.4f} · {images_per_s:,.0f} img/s"
    stats = getattr(loader, "stats", None)
    if stats is not None and stats.images_per_s is not None:
        status += f" · loader {stats.images_per_s * world_size:,.0f} img/s"
    return status


def loader_record(loader: Any, elapsed: float, world_size: int) -> dict[str, float]:
    """An epoch's loading figures: ``loader_images_per_s``, what the loader can make (all
    processes together), and ``data_wait``, the share of the epoch spent waiting for it."""
    stats = getattr(loader, "stats", None)
    if stats is None or stats.images_per_s is None:
        return {}
    return {"loader_images_per_s": stats.images_per_s * world_size, "data_wait": min(stats.wait_s / max(elapsed, 1e-9), 1.0)}


@dataclass
class TrainedEpoch:
    """What a training epoch measured (over every process, and with what a Ctrl-C'd part of
    it had measured before a resume).

    Attributes:
        seen, loss_sum: images, and their summed loss.
        metrics: the task's training metrics, summed.
        images_per_s: the training speed of this part of the epoch; ``loading``: the
            loader's figures (``loader_record``).
        stopped: ``interrupted`` (a Ctrl-C: the epoch is unfinished), ``max-steps``, or None.
        batches: the batches of the epoch done (what a resume skips).
        lr: the (head's) learning rate the epoch started with; per-epoch schedules keep it
            for the whole epoch.
    """

    seen: float
    loss_sum: float
    metrics: EpochMetrics
    images_per_s: float
    loading: dict[str, float] = field(default_factory=dict)
    stopped: str | None = None
    batches: int = 0
    lr: float | None = None

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    def unfinished(self) -> dict[str, Any]:
        """What ``last.pt`` keeps of an interrupted epoch, for a resume to finish it."""
        counts = {name: value.cpu() for name, value in self.metrics.counts.items()}
        return {"batches": self.batches, "seen": self.seen, "loss_sum": self.loss_sum, "counts": counts, "lr": self.lr}


def train_epoch(
    step: TrainStep, loader: Any, task: Task, state: Any, *, classes: list[str], mean, std, device: torch.device,
    world: World, interrupt: dict[str, bool], checkpoint: Any, progress: Progress = NO_PROGRESS,
) -> TrainedEpoch:
    """Train one epoch (``state.epoch``), or what is left of it after a Ctrl-C'd run resumed.

    Everything random in an epoch follows from (seed, epoch), see ``SeededSampler``; an epoch
    that a Ctrl-C cut short goes on from its next batch, with the random state its
    checkpoint restored. ``state`` (a ``RunState``) counts the optimiser steps; ``checkpoint``
    is the last one saved, named when a loss is not finite.

    Raises:
        NonFiniteLossError: a loss was not finite.
    """
    config: TrainConfig = state.config
    partial = state.partial
    done = int(partial["batches"]) if partial else 0
    loader.set_epoch(state.epoch, skip_batches=done)
    # The rate this epoch trains with, read before its first step (after its last, a
    # schedule has moved on to the next epoch's: the last epoch's would read 0).
    groups = step.optimizer.param_groups
    lr = partial.get("lr") if partial and partial.get("lr") is not None else next(
        (group["lr"] for group in groups if group.get("name") == "head"), groups[0]["lr"],
    )
    if not partial:
        torch.manual_seed(config.seed * 1_000_003 + state.epoch)
    step.model.train()
    if config.freeze_norm_stats:
        keep_norm_statistics(step.model, step.head)
    metrics = task.metrics(classes, train=True)
    sums, pacer = DeviceSums(device), Pacer.for_device(device)
    origin = getattr(loader, "collate_origin", "collate function")
    stopped, stop_asked, index = None, False, done - 1
    started = time.perf_counter()
    step.optimizer.zero_grad(set_to_none=True)
    batches = len(loader)
    with progress.task(f"Epoch {state.epoch + 1}/{config.epochs}", batches) as advance:
        if done:
            advance(done)
        for index, raw in enumerate(loader, start=done):
            batch = batch_on_device(raw, task, classes, origin, mean, std, device)
            # A batch whose every image was corrupt is empty. Under torchrun all ranks skip it
            # together: one rank skipping alone would leave the others waiting in DDP's
            # all-reduce forever.
            if world.sum([float(batch.size == 0)], device)[0] if world.distributed else batch.size == 0:
                advance(1)
                continue
            batch = step.mix(batch, state.epoch, index, world.rank)
            # The gradient of a step is the mean over its group of batches; the last group
            # of an epoch may be shorter than --accumulate.
            group_start = index - index % config.accumulate
            group_size = min(config.accumulate, batches - group_start)
            steps_now = index + 1 == group_start + group_size
            with step.accumulating(steps_now):
                loss, outputs = step.forward(batch)
                sums.add(loss, batch.size, state.step)
                looked = pacer.due(last_batch=index + 1 == batches)
                if looked:
                    stop_asked = sums.look(world, pacer, interrupt["stop"], step=state.step, epoch=state.epoch + 1, checkpoint=checkpoint)
                step.backward(loss, group_size)
            metrics.update(detached(outputs), batch.targets)
            if looked:
                speed = sums.seen * world.size / (time.perf_counter() - started)
                advance(1, status=live_status(sums.running_loss(), speed, loader, world.size))
            else:
                advance(1)
            if not steps_now:
                continue
            step.apply()
            if state.ema is not None:
                state.ema.update(step.model)
            state.schedule.after_batch()
            state.step += 1
            if stop_asked:
                stopped = "interrupted"
                break
            if config.max_steps and state.step >= config.max_steps:
                stopped = "max-steps"
                break
    # One last read whatever ended the epoch (its last batch, max_steps, a Ctrl-C): no loss
    # that was not finite goes unseen into a checkpoint.
    sums.look(world, pacer, interrupt["stop"], step=state.step, epoch=state.epoch + 1, checkpoint=checkpoint)
    elapsed = time.perf_counter() - started
    seen, loss_sum = world.sum([float(sums.seen), float(sums.loss_sum)], device)
    sum_counts(metrics, world, device, carried=partial.get("counts") if partial else None)
    trained = TrainedEpoch(
        seen, loss_sum, metrics, seen / max(elapsed, 1e-9), loader_record(loader, elapsed, world.size), stopped, index + 1, lr,
    )
    if partial:
        trained.seen, trained.loss_sum = seen + partial["seen"], loss_sum + partial["loss_sum"]
    return trained


def validate(
    model: torch.nn.Module, loader: Any, task: Task, loss_fn: Loss, classes: list[str], mean, std, device: torch.device,
    *, world: World = World(), progress: Progress = NO_PROGRESS,
) -> tuple[float, dict[str, Any], int]:
    """The mean loss, the task's validation metrics (unprefixed: ``acc``, ``per_class_acc``
    ...) and the number of images, over a loader (over every rank's share under torchrun).
    The loss is summed on the device and read once, at the end."""
    model.eval()
    metrics = task.metrics(classes, train=False)
    origin = getattr(loader, "collate_origin", "collate function")
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad(), progress.task("Validating", len(loader)) as advance:
        for raw in loader:
            advance(1)
            batch = batch_on_device(raw, task, classes, origin, mean, std, device)
            if not batch.size:
                continue
            outputs = model(batch.images)
            total_loss += loss_fn(outputs, batch.targets).detach().double() * batch.size
            count += batch.size
            metrics.update(detached(outputs), batch.targets)
    total_loss, count = world.sum([float(total_loss), float(count)], device)
    sum_counts(metrics, world, device)
    # No image, no loss: NaN, which is never a best (a 0 would be the best loss of all).
    return (total_loss / count if count else math.nan), metrics.compute(), int(count)


def phase_record(phase: str, loss: float, computed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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

