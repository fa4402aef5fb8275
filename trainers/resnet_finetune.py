"""The ``resnet-finetune`` trainer: torchvision classifiers with a new head for your classes.

``--arch`` takes resnet18 (default), resnet34, resnet50, or any torchvision classification
model name whose head is ``fc`` or the last layer of ``classifier``. ``--weights`` is
handled by prep (``prep.torchvision_model``, ``prep.load_matching_weights``): ``imagenet`` (the default) is torchvision's pretrained
weights, ``PATH`` loads a local state dict where shapes match, leaving the head new, and
``none`` trains from scratch. torch is imported only when a model is built, so that loading this plugin
at start-up stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from prep import ModelRequest, PrepError, TrainConfig, Trainer, UsageError, hookimpl


def _head_name(model) -> str:
    import torch

    if isinstance(getattr(model, "fc", None), torch.nn.Linear):
        return "fc"
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, torch.nn.Sequential) and isinstance(classifier[-1], torch.nn.Linear):
        return f"classifier.{len(classifier) - 1}"
    raise PrepError(f"{type(model).__name__} has no fc or classifier head that resnet-finetune can replace")


# The modern recipe's three epochs, lengthened on a small dataset to at least this many
# optimiser steps (see prep.train.options.resolve_config): 350 training images at batch 64
# are 18 steps in three epochs, which left 0.05 of test balanced accuracy on the table
# (benchmarks/bench_recipes.py --part imbalanced).
MIN_STEPS = 100


class ResNetFinetune(Trainer):
    """torchvision classifiers (ResNet by default) with a new head for your classes."""

    task = "classification"
    architectures = ("resnet18", "resnet34", "resnet50")
    default_arch = "resnet18"
    recipes = ("modern", "book")
    default_weights = "imagenet"

    def choose_arch(self, requested: str | None) -> str | None:
        # Beyond the three ResNets, any torchvision classifier with an fc or classifier head.
        if requested is None or requested in self.architectures:
            return super().choose_arch(requested)
        import torchvision

        if requested not in torchvision.models.list_models(module=torchvision.models):
            raise UsageError(f"--arch must be resnet18, resnet34, resnet50 or another torchvision classifier, not {requested!r}")
        return requested

    def build_model(self, request: ModelRequest):
        import torch

        from prep import load_matching_weights, torchvision_model

        model = torchvision_model(request.arch or self.default_arch, request.weights)
        head_name = _head_name(model)
        if request.weights not in ("imagenet", "none"):
            load_matching_weights(model, Path(request.weights), skip=head_name)
        parent_name, _, attr = head_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
        head = torch.nn.Linear(old.in_features, request.num_classes)
        if attr.isdigit():
            parent[int(attr)] = head
        else:
            setattr(parent, attr, head)
        return model, head

    def recipe(self, name: str, request: ModelRequest) -> TrainConfig:
        """``modern`` (default): AdamW, cosine with warmup, label smoothing and, for
        pretrained weights, a ten times lower learning rate for the backbone, whose
        BatchNorm layers keep their pretrained statistics; augmentation follows the run's
        length (``auto``). ``book``: the PyTorch book's transfer-learning recipe, SGD at
        0.001 with momentum 0.9, the learning rate divided by 10 every 7 epochs, 25 epochs,
        every layer at the same rate, random resized crops and flips (``light``).
        benchmarks/bench_recipes.py measures both, and a linear probe, on real images."""
        if name == "book":
            return TrainConfig(
                epochs=25, lr=1e-3, optimizer="sgd", momentum=0.9, weight_decay=0.0,
                scheduler="step", step_size=7, gamma=0.1, preset="light",
            )
        pretrained = self.pretrained(request)
        return TrainConfig(
            epochs=3, min_steps=MIN_STEPS, lr=1e-3, optimizer="adamw", weight_decay=0.05, scheduler="cosine",
            warmup_epochs=0.3, label_smoothing=0.1, backbone_lr_scale=0.1 if pretrained else 1.0,
            freeze_norm_stats=pretrained, preset="auto",
        )


@hookimpl
def register_trainers(register):
    register("resnet-finetune", ResNetFinetune())
