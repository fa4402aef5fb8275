"""An exponential moving average of a model's weights (``--ema DECAY``).

After every optimiser step the average moves towards the trained weights::

    average = d * average + (1 - d) * weights,     d = min(DECAY, (1 + n) / (10 + n))

where ``n`` counts the updates so far: the warmup of TensorFlow's ExponentialMovingAverage,
so that the first updates, when the average is still the starting weights, move it fast.
Every floating-point tensor of the state dict is averaged, BatchNorm's running statistics
too (as timm's ``ModelEmaV2`` does); integer buffers (``num_batches_tracked``) are copied.
The loop validates the average every epoch beside the trained weights, and ``best.pt``
holds whichever scored better (see ``prep.engine.fit``); ``last.pt`` holds the average and
its count, so a resumed run goes on exactly.

Under torchrun every process holds the same weights after each step, so every process
updates the same average, with no communication.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from prep.errors import UsageError


def check_ema(decay: float | None) -> float | None:
    """Raises: UsageError: a decay outside (0, 1)."""
    if decay is not None and not 0 < decay < 1:
        raise UsageError(f"--ema takes a decay between 0 and 1 (0.999 is usual), not {decay:g}")
    return decay


class WeightAverage:
    """The averaged copy of ``model`` (``module``, in eval mode, without gradients)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the next update (with the warmup)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s weights (after an optimiser step)."""
        decay = self.current_decay()
        self.updates += 1
        for average, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                average.lerp_(current.detach().to(average.dtype), 1 - decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
