"""A training run's settings, as data: written next to its checkpoints so it can be repeated.

Kept free of torch so that plugins can build one while prep starts up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

SAMPLERS = ("shuffle", "balanced")


@dataclass
class TrainConfig:
    """A run's settings; written to the run folder so that it can be repeated."""

    epochs: int = 3
    min_steps: int | None = None  # without --epochs, more epochs until the run takes this many optimiser steps (see prep.train.options)
    long_run_from: int | None = None  # a run of at least this many epochs takes the settings of long_run that no option gave
    long_run: dict[str, Any] | None = None  # TrainConfig settings for long runs, e.g. {"mixup": 0.2, "cutmix": 1.0}
    max_steps: int | None = None  # stop after this many optimiser steps, whatever the epoch
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.05  # never applied to biases and norms
    momentum: float = 0.9  # sgd and rmsprop
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 7  # step scheduler
    gamma: float = 0.1  # step, multistep, exponential, plateau
    accumulate: int = 1  # batches per optimiser step
    clip_grad_norm: float | None = None
    label_smoothing: float = 0.0
    loss: str | None = None  # the task's loss spec (segmentation: dice+bce, 0.5*dice+focal ...; None: the task's default)
    class_weights: list[float] | str | None = None  # one per class, or auto (see prep.stats.balance), for the losses that weigh classes
    sampler: str = "shuffle"  # shuffle | balanced: draw each class about equally often (see prep.data.sampling)
    mixup: float = 0.0  # mixup's alpha (0: off); classification
    cutmix: float = 0.0  # cutmix's alpha (0: off); classification
    mix_prob: float = 1.0  # the share of batches mixed, when mixup or cutmix is on
    mix_switch_prob: float = 0.5  # with both on, the share of mixed batches that cutmix
    mix_off_epoch: int | None = None  # no mixing from this epoch on (0-based; None: mix to the end)
    ema: float | None = None  # the decay of an exponential moving average of the weights (None: off)
    backbone_lr_scale: float = 1.0  # the backbone's lr as a fraction of the head's
    freeze_backbone_epochs: int = 0  # train only the head (and norm layers) for this many epochs
    freeze_norm_stats: bool = False  # BatchNorm keeps its pretrained running statistics (see prep.engine.freezing)
    preset: str = "light"  # the training augmentation: a preset name, a pipeline file, or auto (by run length)
    amp: str = "auto"  # auto (bf16 or fp16 on CUDA, off on CPU) | bf16 | fp16 | off
    compile: bool = False  # torch.compile the model (worth it for long GPU runs)
    early_stop_patience: int | None = None  # epochs without improvement of the monitored metric
    early_stop_min_delta: float = 0.0
    monitor: str | None = None  # the metrics key that picks best.pt and stops early (default: the task's: valid_acc, valid_dice ...)
    monitor_mode: str | None = None  # max | min (default: the task's; min for a *_loss)
    seed: int = 0
    device: str | None = None  # default: cuda when present, else cpu


# The numbers a run takes, their option and what they must be: (field, option, lowest,
# whether the lowest itself is allowed, highest or None, whether a whole number).
NUMBERS = (
    ("epochs", "--epochs", 1, True, None, True),
    ("max_steps", "--max-steps", 1, True, None, True),
    ("min_steps", "min_steps", 1, True, None, True),
    ("lr", "--lr", 0, True, None, False),  # 0 as torch allows: a run that only measures
    ("weight_decay", "--weight-decay", 0, True, None, False),
    ("momentum", "--momentum", 0, True, 1, False),
    ("warmup_epochs", "--warmup-epochs", 0, True, None, False),
    ("step_size", "--step-size", 1, True, None, True),
    ("gamma", "--gamma", 0, False, None, False),
    ("accumulate", "--accumulate", 1, True, None, True),
    ("clip_grad_norm", "--clip-grad-norm", 0, False, None, False),
    ("label_smoothing", "--label-smoothing", 0, True, 1, False),
    ("backbone_lr_scale", "backbone_lr_scale", 0, True, None, False),
    ("freeze_backbone_epochs", "--freeze-backbone", 0, True, None, True),
    ("early_stop_patience", "--patience", 0, True, None, True),
    ("early_stop_min_delta", "--min-delta", 0, True, None, False),
)


def check_numbers(config: TrainConfig) -> None:
    """Every number of ``config`` within its range (``NUMBERS``); None means unset.

    Raises:
        UsageError: the first that is not, with its option and the range.
    """
    from prep.errors import UsageError

    for field, option, low, low_ok, high, whole in NUMBERS:
        value = getattr(config, field)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        fits = number and (value >= low if low_ok else value > low) and (high is None or value < high) and (not whole or float(value).is_integer())
        if not fits:
            kind = "a whole number" if whole else "a number"
            bound = f"{'at least' if low_ok else 'above'} {low:g}" + (f" and below {high:g}" if high is not None else "")
            raise UsageError(f"{option} must be {kind} {bound}, not {value!r}")


def check_class_weights(weights: Any, classes: Sequence[str]) -> list[float] | None:
    """``--class-weights`` when it is one non-negative number per class, not all zero
    (``auto`` must have been turned into numbers by then, see ``prep.train.imbalance``).

    Raises:
        UsageError: another count, a negative or non-numeric value, all zeros, or ``auto``
            where no one resolved it.
    """
    from prep.errors import UsageError

    if weights is None:
        return None
    if isinstance(weights, str):
        raise UsageError(f"--class-weights {weights!r} was not resolved into numbers; give one number per class ({len(classes)})")
    values = list(weights)
    if len(values) != len(classes):
        raise UsageError(f"--class-weights gives {len(values)} weights, but the dataset has {len(classes)} classes ({', '.join(classes)})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values) or not any(values):
        raise UsageError(f"--class-weights must be numbers, none negative and not all zero, not {values}")
    return [float(v) for v in values]
