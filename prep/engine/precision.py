"""Mixed precision: which number format the forward pass runs in, and the loss scaling
float16 needs.

``--amp auto`` is bfloat16 on a CUDA GPU that has it (else float16), and float32 elsewhere;
``bf16`` and ``fp16`` ask for one, and need a CUDA GPU; ``off`` is float32. Only float16
needs its gradients scaled (its range is too small for them); the scaler is built in every
case, enabled only then, so that the training step calls it the same way whatever the
format, as nanoGPT's does (a disabled ``GradScaler`` passes everything through).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from prep.errors import UsageError, check_choice

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


@dataclass
class Precision:
    """The forward pass's number format on one device, and its gradient scaler.

    Attributes:
        dtype: ``torch.bfloat16``, ``torch.float16``, or None for float32.
        scaler: a ``GradScaler``, enabled for float16 only.
    """

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def choose(cls, amp: str, device: torch.device) -> "Precision":
        """The precision ``--amp`` asks for on ``device``.

        Raises:
            UsageError: see ``check_amp``.
        """
        check_amp(amp, device)
        dtype = None
        if device.type == "cuda" and amp != "off":
            dtype = torch.bfloat16 if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
        return cls(dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16))

    def autocast(self) -> ContextManager[Any]:
        """The context the forward pass and the loss run in."""
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else nullcontext()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state for a checkpoint (None when it is disabled)."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
