"""The ``resnet-finetune`` trainer: torchvision classifiers with a new head for your classes.

``--arch`` takes resnet18, resnet34, resnet50, or any torchvision classification model name
whose head is ``fc`` or the last layer of ``classifier``. ``--weights imagenet`` uses
torchvision's pretrained weights (downloaded and cached, for users who are online);
``--weights PATH`` loads a local state dict where shapes match, leaving the head new;
``--weights none`` trains from scratch. torch is imported only when a model is built, so
that loading this plugin at start-up stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from prep.engine.config import TrainConfig
from prep.errors import PrepError, UsageError
from prep.hookspecs import hookimpl
from prep.training import TrainOptions


class WeightsError(PrepError):
    """A weights file does not fit the chosen architecture."""


def _head_name(model) -> str:
    import torch

    if isinstance(getattr(model, "fc", None), torch.nn.Linear):
        return "fc"
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, torch.nn.Sequential) and isinstance(classifier[-1], torch.nn.Linear):
        return f"classifier.{len(classifier) - 1}"
    raise PrepError(f"{type(model).__name__} has no fc or classifier head that resnet-finetune can replace")


def load_matching_weights(model, path: Path, head: str) -> int:
    """Load every tensor of ``path`` whose name and shape match, except the head's.

    Returns:
        How many tensors were loaded.

    Raises:
        WeightsError: the file is unreadable, unsafe, or leaves part of the body unloaded.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Cannot load weights {path}: {str(exc).splitlines()[0]}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if not k.startswith(head + ".") and k in own and own[k].shape == v.shape}
    body = [k for k in own if not k.startswith(head + ".")]
    missing = [k for k in body if k not in usable]
    unexpected = [k for k in state if not k.startswith(head + ".") and k not in own]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise WeightsError(
            f"{path} does not fit this architecture: {len(missing)} tensors missing or of another "
            f"shape and {len(unexpected)} unexpected, such as {example}"
        )
    model.load_state_dict(usable, strict=False)
    return len(usable)


class ResNetFinetune:
    task = "classification"

    def pretrained(self, options: TrainOptions) -> bool:
        return options.weights == "imagenet"

    def build_model(self, num_classes: int, options: TrainOptions):
        import torch
        import torchvision

        weights = "DEFAULT" if options.weights == "imagenet" else None
        try:
            model = torchvision.models.get_model(options.arch, weights=weights)
        except ValueError as exc:
            raise PrepError(f"--arch {options.arch!r}: {exc}") from None
        head_name = _head_name(model)
        if options.weights not in ("imagenet", "none"):
            load_matching_weights(model, Path(options.weights), head_name)
        parent_name, _, attr = head_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
        head = torch.nn.Linear(old.in_features, num_classes)
        if attr.isdigit():
            parent[int(attr)] = head
        else:
            setattr(parent, attr, head)
        return model, head

    recipes = ("modern", "book")

    def recipe(self, options: TrainOptions) -> TrainConfig:
        """``modern`` (default): AdamW, cosine with warmup, label smoothing, and a ten times
        lower learning rate for a pretrained backbone. ``book``: the PyTorch book's
        transfer-learning recipe, SGD at 0.001 with momentum 0.9, the learning rate divided
        by 10 every 7 epochs, 25 epochs, every layer at the same rate."""
        name = options.recipe or "modern"
        if name == "book":
            return TrainConfig(
                epochs=25, lr=1e-3, optimizer="sgd", momentum=0.9, weight_decay=0.0,
                scheduler="step", step_size=7, gamma=0.1,
            )
        if name == "modern":
            pretrained = options.weights != "none"
            return TrainConfig(
                epochs=3, lr=1e-3, optimizer="adamw", weight_decay=0.05, scheduler="cosine",
                warmup_epochs=0.3, label_smoothing=0.1, backbone_lr_scale=0.1 if pretrained else 1.0,
            )
        raise UsageError(f"--recipe must be one of {', '.join(self.recipes)} for resnet-finetune, not {name!r}")


@hookimpl
def register_trainers(register):
    register("resnet-finetune", ResNetFinetune())
