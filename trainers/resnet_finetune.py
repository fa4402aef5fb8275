"""The ``resnet-finetune`` trainer: torchvision and timm classifiers with a new head for your classes.

``--arch`` takes resnet18 (default), resnet34, resnet50, any torchvision classification
model name whose head is ``fc`` or the last layer of ``classifier``, or ``timm:NAME`` for
any of timm's architectures (``prep_trainers.timm_models``; ``timm:NAME.TAG`` picks one of
its pretrained weights). The trainer keeps its name, which users' scripts and run folders
hold, though it now fine-tunes ConvNeXts and ViTs as well. For torchvision models ``--weights`` is
handled by prep (``prep.torchvision_model``, ``prep.load_matching_weights``): ``imagenet`` (the default) is torchvision's pretrained
weights, ``PATH`` loads a local state dict where shapes match, leaving the head new, and
``none`` trains from scratch. torch is imported only when a model is built, so that loading this plugin
at start-up stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from prep import ModelRequest, PrepError, TrainConfig, Trainer, UsageError, hookimpl
from prep_trainers import timm_models


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

# From 30 epochs, from scratch, mixup and cutmix: ResNet-18 from random weights on real
# digit scans for 30 epochs scored 0.983 test accuracy with them against 0.975 without (two
# seeds each); TrivialAugment alone 0.981, both 0.967, EMA 0.99 0.976 (bench_recipes.py
# --part long). Fine-tuning ImageNet weights for 30 epochs they cost 0.040 of balanced
# accuracy on the long-tailed digits and 0.004 on the 30% minority (--part imbalanced), and
# shorter runs have no time to fit mixed targets: those stay as they were.
LONG_RUN_FROM = 30
LONG_RUN = {"mixup": 0.2, "cutmix": 1.0}


class ResNetFinetune(Trainer):
    """torchvision classifiers (ResNet by default) with a new head for your classes or tags."""

    task = "classification"
    # A multi-label model is the same network: a logit per tag instead of per class.
    tasks = ("classification", "multilabel")
    architectures = ("resnet18", "resnet34", "resnet50")
    default_arch = "resnet18"
    recipes = ("modern", "book")
    default_weights = "imagenet"

    def choose_arch(self, requested: str | None) -> str | None:
        # Beyond the three ResNets, any torchvision classifier with an fc or classifier head,
        # and any timm architecture.
        if requested is None or requested in self.architectures:
            return super().choose_arch(requested)
        if requested.startswith(timm_models.PREFIX):
            return timm_models.PREFIX + timm_models.check_name(requested.removeprefix(timm_models.PREFIX), "--arch timm:")
        import torchvision

        if requested not in torchvision.models.list_models(module=torchvision.models):
            raise UsageError(
                f"--arch must be resnet18, resnet34, resnet50, another torchvision classifier or timm:NAME, not {requested!r}"
            )
        return requested

    def pretrained_normalization(self, request: ModelRequest):
        arch = request.arch or self.default_arch
        if arch.startswith(timm_models.PREFIX):
            return timm_models.normalization(arch.removeprefix(timm_models.PREFIX), request.weights)
        return None

    def find_architectures(self, pattern: str) -> list[dict]:
        import fnmatch

        import torchvision

        names = sorted(set(self.architectures) | set(torchvision.models.list_models(module=torchvision.models)))
        found = [{"arch": name, "pretrained": ["DEFAULT"]} for name in names if fnmatch.fnmatchcase(name, pattern)]
        return found + timm_models.find_architectures(pattern)

    def describe(self) -> dict:
        return {**super().describe(), "more_architectures": "any torchvision classifier, and timm:NAME for timm's architectures"}

    def build_model(self, request: ModelRequest):
        import torch

        from prep import load_matching_weights, torchvision_model

        arch = request.arch or self.default_arch
        if arch.startswith(timm_models.PREFIX):
            return timm_models.classifier(arch.removeprefix(timm_models.PREFIX), request.weights, request.num_classes, request.image_size)

        model = torchvision_model(arch, request.weights)
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
        """``modern`` (default): AdamW, cosine with warmup, label smoothing (not for
        multi-label tags) and, for
        pretrained weights, a ten times lower learning rate for the backbone, whose
        BatchNorm layers keep their pretrained statistics; augmentation follows the run's
        length (``auto``). ``book``: the PyTorch book's transfer-learning recipe, SGD at
        0.001 with momentum 0.9, the learning rate divided by 10 every 7 epochs, 25 epochs,
        every layer at the same rate, random resized crops and flips (``light``).
        benchmarks/bench_recipes.py measures both, and a linear probe, on real images.

        ``modern`` runs from random weights of ``LONG_RUN_FROM`` epochs or more also mix
        their batches (``LONG_RUN``), unless ``--mixup``/``--cutmix`` say otherwise."""
        if name == "book":
            return TrainConfig(
                epochs=25, lr=1e-3, optimizer="sgd", momentum=0.9, weight_decay=0.0,
                scheduler="step", step_size=7, gamma=0.1, preset="light",
            )
        pretrained = self.pretrained(request)
        # Smoothing spreads one answer over the classes; a multi-label model's yes/no targets
        # stay as they are, since its thresholds are tuned on the probabilities they train.
        smoothing = 0.0 if request.task == "multilabel" else 0.1
        return TrainConfig(
            epochs=3, min_steps=MIN_STEPS, lr=1e-3, optimizer="adamw", weight_decay=0.05, scheduler="cosine",
            warmup_epochs=0.3, label_smoothing=smoothing, backbone_lr_scale=0.1 if pretrained else 1.0,
            freeze_norm_stats=pretrained, preset="auto",
            long_run_from=None if pretrained else LONG_RUN_FROM, long_run=None if pretrained else dict(LONG_RUN),
        )


@hookimpl
def register_trainers(register):
    register("resnet-finetune", ResNetFinetune())
