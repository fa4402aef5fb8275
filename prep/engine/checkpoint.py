"""Checkpoints: written atomically, read back without ever unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (model,
optimiser, scheduler and scaler state, epoch and step, random states, class names,
normalisation constants and the run's config), so it loads with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused.
It is saved to a temporary file beside the target, flushed to disk and renamed over it, so
a process killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prep.errors import PrepError
from prep.fsutil import atomic_write_bytes

CHECKPOINT_FORMAT = 1


class CheckpointError(PrepError):
    """A checkpoint is missing, unreadable, not prep's, or refused as unsafe."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus a format marker) to ``path`` atomically and durably."""
    buffer = io.BytesIO()
    torch.save({"prep_checkpoint": CHECKPOINT_FORMAT, **state}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue(), tmp=path.with_name(f".{path.name}.tmp"))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: missing or corrupt file, a pickle that is not plain data (refused,
            never executed), or a file that is not a prep checkpoint.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint at {path}") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        lines = [line for line in str(exc).splitlines() if line.strip()]
        unsafe = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line), None)
        if unsafe:  # the safe unpickler met a reference to code: refuse, never execute
            raise CheckpointError(f"Refusing {path}: it holds objects other than plain data ({unsafe.strip()})") from None
        detail = next((line.strip() for line in lines if "Unsupported operand" in line), lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"Cannot read checkpoint {path}: {detail}") from None
    if not isinstance(state, dict) or state.get("prep_checkpoint") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a prep checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch random states, as plain data that loads with weights_only."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng_state`` took, so a resumed run draws the same numbers."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
