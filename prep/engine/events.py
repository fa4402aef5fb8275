"""Training events: what the loop tells plugins while it runs.

The loop calls the ``on_train_start``, ``on_epoch_end`` and ``on_train_end`` hooks (see
``prep.hookspecs``) through ``emit``, which calls every plugin's implementation on its own:
a callback that raises is reported by plugin name and the run goes on, unless
``PREP_STRICT_PLUGINS`` is set. A callback sees the run as a ``TrainingRun`` and may ask it
to stop after the current epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from prep.engine.config import TrainConfig


@dataclass
class TrainingRun:
    """A running training, as callbacks see it.

    Attributes:
        run_dir: the run folder (checkpoints, metrics, plots).
        config: the resolved settings.
        model: the model being trained (unwrapped, even under DDP).
        optimizer: its optimiser.
        classes: class names, in the order of the model's outputs.
        epoch: epochs completed so far.
        step: optimiser steps taken so far.
        is_main: True in the process that writes files (rank 0 under torchrun).
    """

    run_dir: Path
    config: "TrainConfig"
    model: "torch.nn.Module"
    optimizer: "torch.optim.Optimizer"
    classes: list[str]
    epoch: int = 0
    step: int = 0
    is_main: bool = True
    stop_reason: str | None = field(default=None, repr=False)

    def request_stop(self, reason: str) -> None:
        """Stop the run after the current epoch, saving its checkpoints as usual.

        The summary's ``status`` becomes ``stopped`` and ``stop_reason`` says why.
        """
        self.stop_reason = reason


def emit(hook_name: str, **kwargs: Any) -> None:
    """Call ``hook_name`` on every plugin, each on its own (see ``PluginHost.call_each``)."""
    from prep.plugins import plugin_host

    plugin_host().call_each(hook_name, lambda plugin: kwargs)
