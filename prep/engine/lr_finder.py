"""The learning-rate range test (Smith, 2015; fastai's and Lightning's ``lr_find``).

Training starts at a tiny learning rate that grows exponentially at every step, while the
loss is recorded, smoothed and compared with its best; once it is several times worse,
the test stops. The suggested learning rate is where the smoothed loss falls fastest
(against the logarithm of the learning rate), taken before the loss reaches its minimum:
large enough to learn quickly, still well below the rates that diverge. The model's
weights are put back afterwards, so a model can be trained after its test.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import torch

from prep.engine.config import TrainConfig
from prep.engine.epoch import TrainStep, batch_on_device
from prep.engine.freezing import keep_norm_statistics
from prep.engine.optim import build_optimizer, parameter_groups
from prep.engine.precision import Precision
from prep.engine.task import Loss, Task
from prep.errors import UsageError
from prep.util.progress import NO_PROGRESS, Progress

SMOOTHING = 0.98  # the weight of the past in the loss's moving average
DIVERGES_AT = 4.0  # the test stops when the smoothed loss exceeds this multiple of its best


@dataclass
class RangeTest:
    """What the range test measured.

    Attributes:
        lrs: the learning rate of each step (the head's, when the backbone's is scaled).
        losses: the smoothed loss after each step.
        suggestion: the learning rate to train with (None when the loss never fell).
        stopped: ``diverged``, ``not-finite`` or ``completed``.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped: str = "completed"


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The learning rate where the smoothed loss falls fastest against log(lr), before its
    minimum; the first tenth of the curve, still settling (a low first value is the
    average of a single batch), is left out. None when the loss never fell."""
    if len(losses) < 5:
        return None
    start = max(len(losses) // 10, 1)
    lowest = min(range(start, len(losses)), key=losses.__getitem__)
    best, steepest = None, 0.0
    for i in range(start, lowest + 1):
        slope = (losses[i] - losses[i - 1]) / (math.log(lrs[i]) - math.log(lrs[i - 1]))
        if slope < steepest:
            best, steepest = i, slope
    return lrs[best] if best is not None else None


def range_test(
    model: torch.nn.Module, loader, task: Task, loss_fn: Loss, classes: list[str], *, config: TrainConfig,
    mean: list[float], std: list[float], device: torch.device, head: torch.nn.Module | None = None,
    start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100, progress: Progress = NO_PROGRESS,
    precision: Precision | None = None,
) -> RangeTest:
    """Run the range test with the run's optimiser, weight decay, discriminative learning
    rates, precision and gradient clipping (``config``), on batches from ``loader``
    (repeated when it is short), through the training step itself (``TrainStep``);
    ``precision`` is what ``resolve_settings`` chose (chosen here from ``config.amp`` when not given).

    Raises:
        UsageError: ``start_lr`` not below ``end_lr``, fewer than 5 steps, or an ``--amp``
            this device cannot use.
    """
    if not 0 < start_lr < end_lr:
        raise UsageError(f"--start-lr must be above 0 and below --end-lr ({end_lr:g}), not {start_lr:g}")
    if steps < 5:
        raise UsageError(f"--steps must be at least 5, not {steps}")
    precision = precision or Precision.choose(config.amp, device)
    saved = copy.deepcopy(model.state_dict())
    model.to(device)
    groups = parameter_groups(model, lr=1.0, weight_decay=config.weight_decay, head=head, backbone_lr_scale=config.backbone_lr_scale)
    scales = [group["lr"] for group in groups]  # each group's share of the head's rate
    optimizer = build_optimizer(config.optimizer, groups, lr=start_lr, momentum=config.momentum)
    step = TrainStep(model, head, optimizer, loss_fn, precision, replace(config, compile=False))
    model.train()
    if config.freeze_norm_stats:
        keep_norm_statistics(model, head)
    result, average, best = RangeTest(), 0.0, math.inf
    origin = getattr(loader, "collate_origin", "collate function")
    growth = (end_lr / start_lr) ** (1 / (steps - 1))
    optimizer.zero_grad(set_to_none=True)
    try:
        with progress.task("Range test", steps) as advance:
            batches = iter(())
            for index in range(steps):
                raw = next(batches, None)
                if raw is None:
                    batches = iter(loader)
                    raw = next(batches)
                lr = start_lr * growth**index
                for group, scale in zip(optimizer.param_groups, scales):
                    group["lr"] = lr * scale
                batch = batch_on_device(raw, task, classes, origin, mean, std, device)
                if not batch.size:
                    continue
                loss, _ = step.forward(batch)
                # The test reads every step's loss: it decides from each one whether to go on.
                value = float(loss.detach())
                if not math.isfinite(value):
                    result.stopped = "not-finite"
                    break
                step.backward(loss)
                step.apply()
                average = SMOOTHING * average + (1 - SMOOTHING) * value
                smoothed = average / (1 - SMOOTHING ** (len(result.losses) + 1))
                result.lrs.append(lr)
                result.losses.append(smoothed)
                advance(1, status=f"lr {lr:.1e} · loss {smoothed:.4f}")
                best = min(best, smoothed)
                if smoothed > DIVERGES_AT * best and len(result.losses) > 5:
                    result.stopped = "diverged"
                    break
    finally:
        model.load_state_dict(saved)
    result.suggestion = suggest_lr(result.lrs, result.losses)
    return result
