"""A trained model back from its checkpoint: read its state, rebuild its model, find its task."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.errors import PrepError, UsageError
from prep.train.options import options_from_data

if TYPE_CHECKING:
    import torch

    from prep.engine.task import Task


def load_model(checkpoint: Path, device: str | None = None) -> "tuple[torch.nn.Module, dict[str, Any]]":
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode.

    Returns:
        (model, state): the model on ``device``, and the checkpoint's state (classes,
        mean, std, options ...).

    Raises:
        CheckpointError: unreadable or unsafe file. PrepError: it lacks the trainer's options.
    """
    from prep.engine.checkpoint import load_checkpoint, load_model_weights
    from prep.engine.distributed import pick_device
    from prep.train.prepare import trainer_registration
    from prep.train.trainer import ModelRequest, split_model

    state = check_model_state(load_checkpoint(checkpoint), checkpoint)
    options = options_from_data(state["options"])
    # The checkpoint has the weights.
    request = ModelRequest(tuple(state["classes"]), options.arch, "none", options.image_size, model_task(state).name)
    model, _ = split_model(trainer_registration(options.plugin).call_method("build_model", request))
    load_model_weights(model, state["model"], checkpoint)
    model.to(pick_device(device)).eval()
    return model, state


def peek_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's state, memory-mapped: its options and classes are read, not its weights.

    Raises:
        CheckpointError: unreadable file. PrepError: not written by prep train.
    """
    import torch

    from prep.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, check_regular_file, load_checkpoint

    check_regular_file(checkpoint)
    try:  # memory-mapped: only the options are read, not the weights
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint at {checkpoint}") from None
    except Exception:
        state = None
    if not isinstance(state, dict) or state.get("prep_checkpoint") != CHECKPOINT_FORMAT:
        state = load_checkpoint(checkpoint)  # says precisely what is wrong with the file
    return check_model_state(state, checkpoint)


MAX_IMAGE_SIZE = 8192  # px: a checkpoint claiming more is refused before anything is allocated
MAX_CLASSES = 100_000


def check_model_state(state: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """``state``, when it has what evaluate, predict and export read from a trained model's
    checkpoint, within sane bounds: a model, its classes, a three-channel mean and std, the
    trainer's options with an image size of at most ``MAX_IMAGE_SIZE``.

    Raises:
        CheckpointError: naming the first field that is missing or out of bounds.
    """
    from prep.engine.checkpoint import CheckpointError

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{checkpoint} is not a trained model prep can use: {what}")

    if "options" not in state or not isinstance(state["options"], dict):
        raise PrepError(f"{checkpoint} does not say which trainer made it; it was not written by prep train")
    if not isinstance(state.get("model"), dict) or not state["model"]:
        raise refuse("it holds no model weights")
    classes = state.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise refuse("it names no classes")
    if len(classes) > MAX_CLASSES:
        raise refuse(f"it names {len(classes)} classes, more than {MAX_CLASSES}")
    for name in ("mean", "std"):
        value = state.get(name)
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_finite_number(v) for v in value):
            raise refuse(f"its {name} is {value!r}, not three numbers (one per colour channel)")
    if not all(v > 0 for v in state["std"]):
        raise refuse(f"its std {state['std']!r} is not positive")
    size = state["options"].get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise refuse(f"its image_size is {size!r}, not a side from 1 to {MAX_IMAGE_SIZE} px")
    return state


def _finite_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def model_task(state: dict[str, Any], threshold: float | None = None) -> "Task":
    """The task of the model of a checkpoint, from the installed plugins: as the trained
    model uses it (``Task.for_model``: a multi-label model's tuned thresholds, or
    ``threshold`` for every tag) when the task says so.

    Raises:
        UnknownNameError: the trainer, or its task, is not installed.
        UsageError: a ``threshold`` the task does not take.
    """
    from prep.plugins import tasks
    from prep.train.prepare import trainer_registration

    # Checkpoints name their task; those written before trainers could train several do not.
    task = tasks().get(state.get("task") or trainer_registration(state["options"]["plugin"]).value.task)
    if hasattr(task, "for_model"):
        return task.for_model(state, threshold)
    if threshold is not None:
        raise UsageError(f"--threshold sets the tags' decision threshold of a multi-label model; this is a {task.name} model")
    return task


def eval_transform(state: dict[str, Any], layout: str) -> Any:
    """The evaluation pipeline a checkpoint's run validated with (its preset, at its size):
    evaluate and predict decode and resize exactly as training's validation did, or their
    figures would drift from the ones the run reported."""
    from prep.augment.presets import build_pipeline

    options = state["options"]
    return build_pipeline(options.get("preset") or "none", options["image_size"], train=False, task=layout)
