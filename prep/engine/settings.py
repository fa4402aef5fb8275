"""Every setting the engine uses, checked in one place before anything is read or written.

``resolve_settings`` turns a ``TrainConfig`` and a task into what the loop needs: the metric
to monitor and its direction, the number format, the training and validation losses. It
raises on the first setting the engine cannot use, with the option named, so that
``prepare_run`` can call it before any weights are downloaded or images decoded, and
``fit`` does not check again what it was handed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prep.engine.config import TrainConfig, check_numbers
from prep.engine.ema import check_ema
from prep.engine.optim import check_optimizer
from prep.engine.precision import Precision
from prep.engine.schedulers import check_scheduler
from prep.engine.task import MODES, Loss, Task
from prep.errors import UsageError


@dataclass
class RunSettings:
    """What the engine resolved from a run's settings.

    Attributes:
        monitor: the metrics key that picks ``best.pt`` and stops early.
        mode: ``max`` when a larger ``monitor`` is better, else ``min``.
        precision: the forward pass's number format and its gradient scaler.
        loss: the training loss (the trainer's, else the task's).
        valid_loss: the validation loss (always the task's).
        mixer: the task's mixing of training batches (mixup, cutmix), or None.
    """

    monitor: str
    mode: str
    precision: Precision
    loss: Loss
    valid_loss: Loss
    mixer: Any = None


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


def resolve_settings(
    task: Task, config: TrainConfig, classes: list[str], device: torch.device, loss: Loss | None = None,
) -> RunSettings:
    """Check every setting of ``config`` that the engine uses, for ``task`` on ``device``.

    Args:
        loss: the trainer's own training loss, if it has one (else the task's).

    Raises:
        UsageError: the first setting the engine cannot use (a number out of its range,
            see ``prep.engine.config.NUMBERS``; ``--amp`` on this device,
            ``--optimizer``, ``--scheduler``, ``--monitor``, ``--monitor-mode``, ``--ema``),
            one the task's loss refuses (``--loss``, ``--class-weights``), or mixing for a
            task that does not mix its batches (``--mixup``, ``--cutmix``).
    """
    check_numbers(config)
    precision = Precision.choose(config.amp, device)
    check_optimizer(config.optimizer)
    check_scheduler(config.scheduler)
    check_ema(config.ema)
    monitor, mode = resolve_monitor(task, config, classes)
    task_loss = task.loss(config, classes, train=True)  # the task checks --loss and --class-weights
    mixer = None
    defaults = TrainConfig()
    unused = [option for option, name in (("--mix-prob", "mix_prob"), ("--mix-switch-prob", "mix_switch_prob"), ("--mix-off-epoch", "mix_off_epoch"))
              if getattr(config, name) != getattr(defaults, name)]
    if unused and not (config.mixup or config.cutmix):
        raise UsageError(f"{' and '.join(unused)} tune --mixup and --cutmix; give one of them, or leave out {' and '.join(unused)}")
    if config.mixup or config.cutmix:
        if not hasattr(task, "mixer"):
            raise UsageError(f"--mixup and --cutmix mix the batches of classification; the {task.name} task does not mix its batches")
        mixer = task.mixer(config, classes)  # the task checks the alphas and probabilities
    return RunSettings(monitor, mode, precision, loss or task_loss, task.loss(config, classes, train=False), mixer)
