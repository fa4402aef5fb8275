"""A run's state: the counters the loop moves on and everything a checkpoint holds.

``RunState`` is the one object that knows what goes into ``last.pt`` and ``best.pt`` and how
a resumed run takes it back: the model, optimiser, schedule and scaler states, the random
states, the counters (epoch, step, the best monitored value and when it was reached, epochs
without improvement), what a Ctrl-C'd epoch had done, and what identifies the model (classes,
normalisation, settings and the caller's ``extra``), so that evaluate, predict and export
can use a checkpoint alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prep.engine.checkpoint import (
    CheckpointError, capture_rng_state, load_checkpoint, load_model_weights, restore_rng_state, save_checkpoint,
)
from prep.engine.config import TrainConfig
from prep.engine.freezing import BackboneFreezer
from prep.engine.precision import Precision
from prep.engine.schedulers import LRSchedule

if TYPE_CHECKING:
    from prep.engine.ema import WeightAverage

log = logging.getLogger(__name__)

# What only a resume needs: best.pt, the file a user ships, leaves it out (for ResNet-18
# with AdamW, 45 MB instead of 134).
RESUME_ONLY = ("optimizer", "schedule", "scaler", "rng", "partial_epoch", "ema")


def shippable(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's state without what only a resume needs: the model, its classes,
    normalisation, settings and options stay, so evaluate, predict and export work."""
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


def best_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """What ``best.pt`` holds of a ``last.pt`` state: ``shippable`` of it, with the averaged
    weights as its model when they were the better ones (``best_weights`` says which)."""
    best = shippable(state)
    if state.get("best_weights") == "ema" and state.get("ema"):
        best["model"] = state["ema"]["model"]
    return best


class RunState:
    """The counters of a run and the objects whose states its checkpoints hold.

    Attributes:
        epoch: epochs completed. step: optimiser steps taken.
        task_state: what the task keeps of the validation of the weights ``best.pt`` holds
            (``Task.model_state``: a multi-label model's tuned thresholds), or None.
        best: the best monitored value so far (``-inf`` or ``inf`` before the first).
        best_epoch: the epoch that reached it (None before). bad_epochs: epochs since.
        partial: what an epoch cut short by a Ctrl-C had done (``batches``, ``seen``,
            ``loss_sum`` and the metrics' ``counts``), or None.
        classes, mean, std, extra: what identifies the model, stored in every checkpoint.
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule, precision: Precision,
        freezer: BackboneFreezer, *, config: TrainConfig, mode: str, classes: list[str], mean: list[float],
        std: list[float], extra: dict[str, Any] | None = None, ema: "WeightAverage | None" = None,
    ) -> None:
        self.model, self.optimizer, self.schedule, self.precision, self.freezer = model, optimizer, schedule, precision, freezer
        self.ema = ema
        self.config, self.mode = config, mode
        self.classes, self.mean, self.std, self.extra = classes, mean, std, dict(extra or {})
        self.epoch, self.step, self.bad_epochs = 0, 0, 0
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch: int | None = None
        self.best_weights: str | None = None  # trained | ema: which weights best.pt holds
        self.task_state: dict[str, Any] | None = None  # what the task keeps of best.pt's validation (Task.model_state)
        self.partial: dict[str, Any] | None = None

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` of the monitored metric beats the best by more than ``min_delta``."""
        if value is None or not math.isfinite(value):
            return False
        delta = self.config.early_stop_min_delta
        return value > self.best + delta if self.mode == "max" else value < self.best - delta

    def judge(self, value: float | None, weights: str = "trained") -> bool:
        """Take the monitored metric of the epoch just finished (of its ``weights``: the
        trained ones or their average); True when it is the best yet."""
        improved = self.improves(value)
        if improved:
            self.best, self.best_epoch, self.bad_epochs, self.best_weights = value, self.epoch, 0, weights
        else:
            self.bad_epochs += 1
        return improved

    def to_checkpoint(self, partial_epoch: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything ``last.pt`` holds (``shippable`` of it is ``best.pt``)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "scaler": self.precision.state_dict(), "rng": capture_rng_state(),
            "epoch": self.epoch, "step": self.step, "best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "backbone_frozen": self.freezer.frozen, "partial_epoch": partial_epoch, "best_weights": self.best_weights,
            "task_state": self.task_state,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "classes": self.classes, "mean": self.mean, "std": self.std, "config": asdict(self.config), **self.extra,
        }

    def resume(self, path: Path, repair: bool) -> None:
        """Take back the state of ``path`` (``last.pt``), exactly where it stopped; with
        ``repair``, first make ``best.pt`` what it calls best (see ``repair_best``).

        Raises:
            CheckpointError: an unreadable checkpoint, or one of another model.
        """
        state = load_checkpoint(path)
        if repair:
            repair_best(path.parent, state)
        load_model_weights(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.precision.load_state_dict(state.get("scaler"))
        restore_rng_state(state["rng"])
        self.epoch, self.step, self.best, self.bad_epochs = state["epoch"], state["step"], state["best"], state["bad_epochs"]
        self.best_epoch, self.best_weights = state.get("best_epoch"), state.get("best_weights")
        self.task_state = state.get("task_state")
        self.partial = state.get("partial_epoch")
        if self.ema is not None:
            if not state.get("ema"):
                raise CheckpointError(f"{path} was saved without --ema; resume it without --ema, or start a new run")
            self.ema.load_state_dict(state["ema"])


def repair_best(run_dir: Path, last: dict[str, Any]) -> None:
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
    save_checkpoint(best_path, best_checkpoint(last))
