"""Checkpoints: written atomically, read back without ever unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (model,
optimiser, scheduler and scaler state, epoch and step, random states, class names,
normalisation constants and the run's config), so it loads with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused.
It is saved to a temporary file beside the target, flushed to disk and renamed over it, so
a process killed mid-save leaves the previous checkpoint intact. Every checkpoint carries a
BLAKE2b checksum of its tensors, which loading verifies: a flipped bit in the weights is
refused instead of silently giving a different model, and so is a checkpoint without its
checksum (edited, or not written by prep) and one whose model holds NaN or infinite
weights. Only regular files are opened: a FIFO named ``best.pt`` would block forever.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prep.errors import PrepError
from prep.util.files import atomic_write_bytes

CHECKPOINT_FORMAT = 1
CHECKSUM_KEY = "tensor_checksum"


class CheckpointError(PrepError):
    """A checkpoint is missing, unreadable, not prep's, or refused as unsafe."""


def tensor_checksum(value: Any) -> str:
    """BLAKE2b over every tensor's dtype, shape and bytes, in the state's own order."""
    digest = hashlib.blake2b(digest_size=16)

    def visit(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            flat = item.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{item.dtype}{tuple(item.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
        elif isinstance(item, dict):
            for key, child in item.items():
                if key != CHECKSUM_KEY:
                    digest.update(repr(key).encode())
                    visit(child)
        elif isinstance(item, (list, tuple)):
            for child in item:
                visit(child)

    visit(value)
    return digest.hexdigest()


def temp_checkpoint_path(path: Path) -> Path:
    """Where ``save_checkpoint`` writes before it renames; a killed save leaves it behind."""
    return path.with_name(f".{path.name}.tmp")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus a format marker and a checksum of its tensors) to ``path``
    atomically and durably."""
    state = {"prep_checkpoint": CHECKPOINT_FORMAT, **state}
    state[CHECKSUM_KEY] = tensor_checksum(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue(), tmp=temp_checkpoint_path(path))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: missing or corrupt file, a pickle that is not plain data (refused,
            never executed), or a file that is not a prep checkpoint.
    """
    check_regular_file(path)
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
    expected = state.get(CHECKSUM_KEY)
    if expected is None:
        raise CheckpointError(f"{path} has no checksum of its weights (prep writes one into every checkpoint): it was edited or made by something else, so its weights cannot be trusted")
    if tensor_checksum(state) != expected:
        raise CheckpointError(f"{path} is damaged: its weights do not match the checksum saved with them. Use another checkpoint (last.pt or best.pt) or train again.")
    _check_finite(state.get("model"), path)
    return state


def check_regular_file(path: Path) -> None:
    """Refuse, without opening it, anything at ``path`` that is not a regular file (a FIFO
    would block the read forever, a device never end).

    Raises:
        CheckpointError: nothing there, or not a regular file.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint at {path}") from None
    except OSError as exc:
        raise CheckpointError(f"Cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise CheckpointError(f"{path} is {kind}, not a checkpoint file")


def _check_finite(weights: Any, path: Path) -> None:
    """Refuse a model with NaN or infinite weights (attention masks, whose -inf is meant,
    excepted): it would predict NaN, or one class, for everything."""
    if not isinstance(weights, dict):
        return
    for name, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and "mask" not in str(name):
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{path} holds NaN or infinite weights ({name}): the run that wrote it diverged; use an earlier checkpoint or train again")


def load_model_weights(model: torch.nn.Module, weights: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(weights)``, with one line naming the first misfit instead of
    torch's page-long report.

    Raises:
        CheckpointError: a missing or unexpected layer, or a layer of another shape.
    """
    own = model.state_dict()
    for name, tensor in weights.items():
        if name in own and own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path} does not fit this model: {name} is {list(tensor.shape)} in the checkpoint but "
                f"{list(own[name].shape)} in the model (another architecture or number of classes?)."
            )
    missing = [name for name in own if name not in weights]
    unexpected = [name for name in weights if name not in own]
    if missing or unexpected:
        which = f"it lacks {missing[0]}" if missing else f"it has {unexpected[0]}, which the model does not"
        count = len(missing) + len(unexpected)
        raise CheckpointError(f"{path} does not fit this model: {which} ({count} such layers; another architecture?).")
    model.load_state_dict(weights)


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
