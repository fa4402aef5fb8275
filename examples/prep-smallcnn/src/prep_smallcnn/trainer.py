"""The ``small-cnn`` trainer: what prep asks of a trainer, and nothing more.

prep's engine does the rest (data, optimiser, schedule, mixed precision, checkpoints, resume,
metrics, plots), exactly as for its built-in trainers.
"""

from __future__ import annotations

import prep


class SmallCNNTrainer(prep.Trainer):
    """A small CNN for small images (32 to 128 px), trained from scratch."""

    task = "classification"
    collate = "cutout"  # this package's collate function; `prep train --collate` overrides it
    architectures = ("small", "wide")  # --arch: the network's width
    default_arch = "small"
    recipes = ("default",)

    def build_model(self, request: prep.ModelRequest):
        from prep_smallcnn.model import SmallCNN

        if request.weights != "none":
            raise prep.UsageError("small-cnn trains from scratch: use --weights none")
        model = SmallCNN(request.num_classes, width=64 if request.arch == "wide" else 32)
        # Everything is new, but naming the head lets --freeze-backbone and
        # discriminative learning rates work as they do for resnet-finetune.
        return model, model.head

    def recipe(self, name: str, request: prep.ModelRequest) -> prep.TrainConfig:
        return prep.TrainConfig(epochs=10, lr=3e-3, optimizer="adamw", weight_decay=0.05, scheduler="onecycle")
