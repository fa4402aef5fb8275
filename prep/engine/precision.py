"""Mixed precision: which number format the forward pass runs in, and the loss scaling
float16 needs.

``--amp auto`` is bfloat16 on a CUDA GPU that has it (else float16), and float32 elsewhere;
``bf16`` and ``fp16`` ask for one; ``off`` is float32. ``fp16`` needs a CUDA GPU; ``bf16``
also runs on a CPU with bfloat16 instructions (AVX512-BF16 or AMX, as recent Xeons and
EPYCs have), where ResNet-18's training step runs 1.3x (64 px) to 2.2x (128 px) faster than
float32 on 2 EPYC cores, with channels_last (see benchmarks/bench_train.py; accuracy in
benchmarks/bench_recipes.py). ``auto`` stays float32 on CPUs: a CPU without those
instructions runs bfloat16 slower than float32. Only float16
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


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def check_amp(amp: str, device: torch.device) -> str:
    """``amp`` when it is a mode this device can use.

    Raises:
        UsageError: an unknown mode, fp16 without a CUDA GPU, or bf16 on a device that
            has no bfloat16 instructions.
    """
    check_choice("--amp", amp, AMP_MODES)
    if amp == "fp16" and device.type != "cuda":
        raise UsageError(f"--amp fp16 needs a CUDA GPU; on {device.type} prep trains in float32 (--amp off), or bfloat16 (--amp bf16) where the CPU has it")
    if amp == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise UsageError("--amp bf16 needs a CUDA GPU or a CPU with bfloat16 instructions (AVX512-BF16 or AMX), which this one lacks; leave out --amp")
    if amp == "bf16" and device.type not in ("cuda", "cpu"):
        raise UsageError(f"--amp bf16 runs on CUDA GPUs and on CPUs, not on {device.type}; leave out --amp")
    return amp


@dataclass
class Precision:
    """The forward pass's number format on one device, and its gradient scaler.

    Attributes:
        dtype: ``torch.bfloat16``, ``torch.float16``, or None for float32.
        scaler: a ``GradScaler``, enabled for float16 only.
        device_type: ``cuda`` or ``cpu``: where autocast runs.
    """

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    device_type: str = "cuda"

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
        elif device.type == "cpu" and amp == "bf16":
            dtype = torch.bfloat16
        return cls(dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), device.type)

    @property
    def wants_channels_last(self) -> bool:
        """Whether convolutions run faster with channels_last weights: on CUDA always, and on
        a CPU in bfloat16 (oneDNN's bfloat16 kernels are channels_last; in float32 it was
        slower at 64 px)."""
        return self.device_type == "cuda" or self.dtype == torch.bfloat16

    def autocast(self) -> ContextManager[Any]:
        """The context the forward pass and the loss run in."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state for a checkpoint (None when it is disabled)."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
