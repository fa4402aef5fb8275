"""Learning-rate schedules: torch's schedulers, an optional linear warmup, and the rule of
when each one steps.

The training loop calls ``schedule.after_batch()`` after every optimiser step and
``schedule.after_epoch(metric)`` after every validation; the schedule knows which of the two
moves its scheduler:

* per iteration: ``onecycle``;
* per epoch: ``step``, ``multistep``, ``exponential``, ``cosine``, ``cosine-restarts``,
  ``lambda:NAME`` (a plugin's ``register_lr_lambdas``);
* per epoch, on the validation metric: ``plateau`` (ReduceLROnPlateau, mode ``min``);
* ``none`` keeps the learning rate.

A warmup of ``warmup_epochs`` (may be fractional) raises every group's learning rate
linearly from ``1 / warmup_iterations`` of its value to all of it, one iteration at a time;
the scheduler then starts, counting its epochs from the end of the warmup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from prep.errors import UsageError, check_choice

SCHEDULERS = ("none", "step", "multistep", "exponential", "cosine", "cosine-restarts", "onecycle", "plateau", "lambda:NAME")


def check_scheduler(name: str) -> str:
    """``name`` when it is one of ``SCHEDULERS`` (``lambda:NAME`` is looked up later).

    Raises:
        UsageError: anything else.
    """
    return name if name.startswith("lambda:") else check_choice("--scheduler", name, SCHEDULERS)
PER_ITERATION = {"onecycle"}

# A plugin's LR lambda: given the number of scheduled epochs, a function epoch -> factor.
LrLambdaFactory = Callable[[int], Callable[[int], float]]


@dataclass
class ScheduleConfig:
    """Everything a schedule needs; defaults are the documented ones."""

    name: str = "cosine"
    epochs: int = 1
    steps_per_epoch: int = 1
    warmup_epochs: float = 0.0
    step_size: int = 7  # step: epochs between decays (the book's recipe)
    gamma: float = 0.1  # step, multistep, exponential: the decay factor
    milestones: tuple[int, ...] = field(default_factory=tuple)  # multistep: decay epochs
    restart_epochs: int = 10  # cosine-restarts: length of the first cycle
    restart_mult: int = 1  # cosine-restarts: cycle length multiplier
    min_lr: float = 0.0  # cosine, cosine-restarts, plateau: the floor
    patience: int = 3  # plateau: decay once the metric has not improved for more epochs than this
    max_lr_factor: float = 1.0  # onecycle: peak learning rate as a multiple of the base
    pct_start: float = 0.3  # onecycle: share of the steps spent rising


class LRSchedule:
    """A torch scheduler plus warmup, stepped at the right moments (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleConfig, lr_lambdas: dict[str, LrLambdaFactory] | None = None) -> None:
        self.optimizer = optimizer
        self.config = config
        self.iteration = 0
        self.epoch = 0
        self.warmup_iterations = round(config.warmup_epochs * config.steps_per_epoch)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        # Epoch-based schedulers start with the first epoch that begins after the warmup.
        self.warmup_whole_epochs = math.ceil(config.warmup_epochs)
        self.scheduled_epochs = max(1, config.epochs - self.warmup_whole_epochs)
        self.scheduler = self._build(config, lr_lambdas or {})
        if self.warmup_iterations:
            self._set_warmup_lr(1)

    @property
    def per_iteration(self) -> bool:
        return self.config.name in PER_ITERATION

    def _build(self, config: ScheduleConfig, lr_lambdas: dict[str, LrLambdaFactory]):
        opt, name, epochs = self.optimizer, config.name, self.scheduled_epochs
        sched = torch.optim.lr_scheduler
        if name == "none":
            return None
        if name == "step":
            return sched.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
        if name == "multistep":
            milestones = config.milestones or tuple(round(epochs * f) for f in (0.5, 0.75))
            return sched.MultiStepLR(opt, milestones=list(milestones), gamma=config.gamma)
        if name == "exponential":
            return sched.ExponentialLR(opt, gamma=config.gamma)
        if name == "cosine":
            return sched.CosineAnnealingLR(opt, T_max=epochs, eta_min=config.min_lr)
        if name == "cosine-restarts":
            return sched.CosineAnnealingWarmRestarts(opt, T_0=config.restart_epochs, T_mult=config.restart_mult, eta_min=config.min_lr)
        if name == "onecycle":
            total = max(1, config.epochs * config.steps_per_epoch - self.warmup_iterations)
            return sched.OneCycleLR(opt, max_lr=[lr * config.max_lr_factor for lr in self.base_lrs], total_steps=total, pct_start=config.pct_start)
        if name == "plateau":
            return sched.ReduceLROnPlateau(opt, mode="min", factor=config.gamma, patience=config.patience, min_lr=config.min_lr)
        if name.startswith("lambda:"):
            key = name.split(":", 1)[1]
            if key not in lr_lambdas:
                known = ", ".join(sorted(lr_lambdas)) or "none registered"
                raise UsageError(f"Unknown LR lambda {key!r} ({known})")
            return sched.LambdaLR(opt, lr_lambda=lr_lambdas[key](epochs))
        check_scheduler(name)
        raise AssertionError(f"scheduler {name!r} is listed but not built")

    def _set_warmup_lr(self, iteration: int) -> None:
        factor = iteration / self.warmup_iterations
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def after_batch(self) -> None:
        """Call after every optimiser step."""
        self.iteration += 1
        if self.iteration < self.warmup_iterations:
            self._set_warmup_lr(self.iteration + 1)
            return
        if self.iteration == self.warmup_iterations:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base  # the scheduler takes over from the full learning rate
            if self.per_iteration and isinstance(self.scheduler, torch.optim.lr_scheduler.OneCycleLR):
                self.scheduler.last_epoch = -1
                self.scheduler.step()  # restart its count where the warmup ends
            return
        if self.per_iteration and self.scheduler is not None:
            self.scheduler.step()

    def after_epoch(self, metric: float | None = None) -> None:
        """Call after every epoch, with the validation loss for ``plateau``."""
        self.epoch += 1
        if self.epoch <= self.warmup_whole_epochs or self.per_iteration or self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if metric is None:
                raise UsageError("the plateau scheduler needs a validation metric every epoch")
            self.scheduler.step(metric)
        else:
            self.scheduler.step()

    def lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "epoch": self.epoch,
            "base_lrs": self.base_lrs,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = state["iteration"]
        self.epoch = state["epoch"]
        self.base_lrs = state["base_lrs"]
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
