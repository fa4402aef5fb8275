"""Training events: what the loop tells its callbacks while it runs.

``fit`` takes a sequence of callbacks: objects with any of the methods ``on_train_start(run)``,
``on_epoch_end(run, metrics)`` and ``on_train_end(run, summary)``. The caller chooses them;
``prep train`` passes ``prep.plugins.PluginCallbacks``, which calls the hooks of the same
names on every installed plugin, and its own line printer. The engine knows callbacks only:
nothing here knows the plugin system. A callback sees the run as a ``TrainingRun`` and may
ask it to stop after the current epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch

    from prep.engine.config import TrainConfig

EVENTS = ("on_train_start", "on_epoch_end", "on_train_end")


@dataclass
class TrainingRun:
    """A running training, as callbacks see it.

    Attributes:
        run_dir: the run folder (checkpoints, metrics, plots).
        config: the resolved settings.
        model: the model being trained (unwrapped, even under DDP).
        optimizer: its optimiser.
        classes: class names, in the order of the model's outputs.
        task: the task's name (``"classification"``, ``"segmentation"`` ...).
        monitor: the metrics key that chooses ``best.pt`` and drives early stopping.
        mode: ``"max"`` when a larger ``monitor`` is better, else ``"min"``.
        epoch: epochs completed so far (the first epoch is 1 in metrics records).
        step: optimiser steps taken so far.
        is_main: True in the process that writes files (rank 0 under torchrun).
        setup: how the run was set up, for people: ``trainer``, ``weights``,
            ``normalization``, ``recipe``, ``augmentation`` ... (``prep train`` prints it
            first; empty when ``fit`` is called without one).
    """

    run_dir: Path
    config: "TrainConfig"
    model: "torch.nn.Module"
    optimizer: "torch.optim.Optimizer"
    classes: list[str]
    task: str
    monitor: str
    mode: str
    epoch: int = 0
    step: int = 0
    is_main: bool = True
    setup: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = field(default=None, repr=False)

    def request_stop(self, reason: str) -> None:
        """Stop the run after the current epoch, saving its checkpoints as usual.

        The summary's ``status`` becomes ``stopped`` and ``stop_reason`` says why.
        """
        self.stop_reason = reason


def emit(callbacks: Sequence[object], event: str, **kwargs: Any) -> None:
    """Call ``event`` on every callback that has it, in order."""
    for callback in callbacks:
        method = getattr(callback, event, None)
        if method is not None:
            method(**kwargs)
