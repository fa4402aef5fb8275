"""Several trained models predicting as one: the folds of a cross-validation
(``prep predict runs/cv IMAGES``) or any list of checkpoints of one dataset.

``Ensemble`` is a model like any other, so evaluate, predict and TTA take it unchanged: its
input is the batch as the first model's run validated (normalised with its statistics, at its
size), and each member sees it normalised with its own statistics and, when it was trained at
another size, resized to that size. The members' probabilities (softmax over classes, or the
sigmoid of a single logit; each output's sigmoid for a multi-label model) are averaged, and
returned as logits again (their logarithm, or the logit of sigmoids), as
``prep.inference.tta.FlipAveraged`` returns them; maps of other sizes are resized to the
first member's first. The mean is taken one member at a time (m += (p - m) / k), so that
members that agree exactly give exactly their probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from prep.engine.run_folder import CV_FILE, FINISHED, fold_folder, is_cross_validation, read_cross_validation, read_summary, run_checkpoint
from prep.errors import PrepError, UsageError



class EnsembleError(PrepError):
    """The models named cannot predict as one, or a cross-validation lacks a fold."""


def cross_validation_members(folder: Path, complete_folds: bool = False) -> list[Path]:
    """The checkpoints that stand for a cross-validation's folds (each fold's best.pt, else
    last.pt).

    Args:
        complete_folds: leave out the folds that are missing or did not finish, instead of
            refusing (at least one must be complete).

    Raises:
        EnsembleError: a fold is missing or unfinished (unless ``complete_folds``), or none is complete.
        FoldsError: an unreadable cross-validation record.
    """
    count = read_cross_validation(folder)["folds"]
    members, missing = [], []
    for fold in range(count):
        fold_dir = fold_folder(folder, fold)
        checkpoint, status = run_checkpoint(fold_dir), (read_summary(fold_dir) or {}).get("status")
        if checkpoint is None or status not in FINISHED:
            why = "has no checkpoint" if checkpoint is None else "did not finish" if status else "was stopped before its end"
            missing.append(f"fold {fold} {why}")
        else:
            members.append(checkpoint)
    if missing and not complete_folds:
        raise EnsembleError(
            f"{folder} is a cross-validation of {count} folds, but {', '.join(missing)}; finish it with "
            f"prep train --fold all --resume --run-dir {folder}, or use the complete folds only with --complete-folds"
        )
    if not members:
        raise EnsembleError(f"{folder} holds no complete fold to predict with; finish it with prep train --fold all --resume --run-dir {folder}")
    return members


def resolve_members(models: Sequence[Path], complete_folds: bool = False) -> list[Path]:
    """The checkpoint files that ``models`` name: checkpoints themselves, run folders (their
    best.pt, else last.pt) and cross-validation folders (every fold's).

    Raises:
        EnsembleError: a cross-validation lacks a fold (see ``cross_validation_members``).
        UsageError: a folder that is neither a run nor a cross-validation.
    """
    found: list[Path] = []
    for model in models:
        if model.is_dir():
            if is_cross_validation(model):
                found += cross_validation_members(model, complete_folds)
                continue
            checkpoint = run_checkpoint(model)
            if checkpoint is None:
                raise UsageError(f"{model} is a folder without best.pt or last.pt, and no cross-validation ({CV_FILE})")
            found.append(checkpoint)
        else:
            found.append(model)
    return found


def check_members(checkpoints: Sequence[Path], states: Sequence[dict[str, Any]]) -> None:
    """Refuse, before anything is predicted, models that cannot be averaged: other tasks,
    other classes, or other datasets.

    Raises:
        EnsembleError: naming the first model that differs, and how.
    """
    from prep.inference.checkpoints import model_task

    first, reference = checkpoints[0], states[0]
    task = model_task(reference).name
    for checkpoint, state in zip(checkpoints[1:], states[1:]):
        other = model_task(state).name
        if other != task:
            raise EnsembleError(f"{checkpoint} is a {other} model and {first} a {task} one; an ensemble averages models of one task")
        if list(state["classes"]) != list(reference["classes"]):
            raise EnsembleError(
                f"{checkpoint} predicts the classes {', '.join(state['classes'])}, {first} {', '.join(reference['classes'])}; "
                f"an ensemble averages models of the same classes, in the same order"
            )
        if state.get("data") and reference.get("data") and state["data"] != reference["data"]:
            raise EnsembleError(
                f"{checkpoint} was trained on {state['data']} and {first} on {reference['data']}; an ensemble averages "
                f"models of one dataset"
            )


def load_ensemble(checkpoints: Sequence[Path], device: str | None = None) -> "tuple[torch.nn.Module, dict[str, Any]]":
    """The model of one checkpoint, or the ``Ensemble`` of several, and the state that
    stands for it (the first checkpoint's, with ``ensemble``: the checkpoints' paths, and
    ``task_states``: each one's ``task_state``)."""
    from prep.inference.checkpoints import load_model, model_task

    if len(checkpoints) == 1:
        return load_model(checkpoints[0], device)
    loaded = [load_model(checkpoint, device) for checkpoint in checkpoints]
    check_members(checkpoints, [state for _, state in loaded])
    reference = loaded[0][1]
    sigmoid = getattr(model_task(reference), "scores", "softmax") == "sigmoid"
    ensemble = Ensemble([model for model, _ in loaded], [state for _, state in loaded], sigmoid=sigmoid)
    stands = {**reference, "ensemble": [str(c) for c in checkpoints], "task_states": [state.get("task_state") for _, state in loaded]}
    return ensemble.to(next(iter(loaded[0][0].parameters())).device).eval(), stands


def _channels(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


class Ensemble(torch.nn.Module):
    """The members' probabilities averaged (see the module docstring); ``sigmoid``: each
    output's on its own (a multi-label model's)."""

    def __init__(self, models: Sequence[torch.nn.Module], states: Sequence[dict[str, Any]], sigmoid: bool = False) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(models)
        self.sigmoid = sigmoid
        reference = states[0]
        self.sizes = [int(state["options"]["image_size"]) for state in states]
        for k, state in enumerate(states):
            # A member's input from the reference's: (x * std_ref + mean_ref - mean) / std.
            # Buffers, so that they move with the model and are not copied to the device per batch.
            self.register_buffer(f"scale_{k}", _channels(reference["std"]) / _channels(state["std"]), persistent=False)
            self.register_buffer(f"shift_{k}", (_channels(reference["mean"]) - _channels(state["mean"])) / _channels(state["std"]), persistent=False)

    def _input(self, images: torch.Tensor, k: int) -> torch.Tensor:
        x = images * getattr(self, f"scale_{k}").to(images.dtype) + getattr(self, f"shift_{k}").to(images.dtype)
        size, reference = self.sizes[k], self.sizes[0]
        if size != reference:
            height, width = images.shape[-2:]
            target = (max(1, round(height * size / reference)), max(1, round(width * size / reference)))
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, images: torch.Tensor) -> Any:
        mean = None
        for k, model in enumerate(self.members):
            probabilities = _probabilities(model(self._input(images, k)), self.sigmoid)
            mean = probabilities if mean is None else _towards(mean, _resized_like(probabilities, mean), k + 1)
        return _as_logits(mean, self.sigmoid)


def _probabilities(outputs: Any, sigmoid: bool) -> Any:
    if isinstance(outputs, dict):  # torchvision's segmentation models: {"out": ..., "aux": ...}
        return {key: _probabilities(value, sigmoid) for key, value in outputs.items()}
    outputs = outputs.float()
    return outputs.sigmoid() if sigmoid or outputs.shape[1] == 1 else outputs.softmax(dim=1)


def _resized_like(value: Any, like: Any) -> Any:
    if isinstance(value, dict):
        return {key: _resized_like(value[key], like[key]) for key in like}
    if value.ndim == 4 and value.shape[-2:] != like.shape[-2:]:
        return F.interpolate(value, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return value


def _towards(mean: Any, value: Any, k: int) -> Any:
    if isinstance(mean, dict):
        return {key: _towards(mean[key], value[key], k) for key in mean}
    return mean + (value - mean) / k


def _as_logits(probabilities: Any, sigmoid: bool) -> Any:
    if isinstance(probabilities, dict):
        return {key: _as_logits(value, sigmoid) for key, value in probabilities.items()}
    if sigmoid or probabilities.shape[1] == 1:
        return torch.logit(probabilities, eps=1e-7)
    return probabilities.clamp_min(1e-12).log()
