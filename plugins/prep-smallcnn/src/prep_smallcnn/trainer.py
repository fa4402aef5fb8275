"""The ``small-cnn`` trainer: what prep asks of a trainer, and nothing more.

prep's engine does the rest (optimiser, schedule, mixed precision, checkpoints, resume,
metrics, plots), exactly as for its built-in trainers.
"""

from __future__ import annotations

from prep.engine.config import TrainConfig
from prep.errors import UsageError
from prep.training import TrainOptions


class SmallCNNTrainer:
    task = "classification"
    collate = "cutout"  # this package's collate function; `prep train --collate` overrides it
    recipes = ("default",)

    def pretrained(self, options: TrainOptions) -> bool:
        # Trained from scratch: prep normalises with the dataset's own stats.json.
        return False

    def build_model(self, num_classes: int, options: TrainOptions):
        from prep_smallcnn.model import SmallCNN

        if options.weights != "none":
            raise UsageError("small-cnn trains from scratch: use --weights none")
        model = SmallCNN(num_classes)
        # Everything is new, but naming the head lets --freeze-backbone and
        # discriminative learning rates work as they do for resnet-finetune.
        return model, model.head

    def recipe(self, options: TrainOptions) -> TrainConfig:
        if options.recipe not in (None, "default"):
            raise UsageError(f"small-cnn has one recipe, 'default', not {options.recipe!r}")
        return TrainConfig(epochs=10, lr=3e-3, optimizer="adamw", weight_decay=0.05, scheduler="onecycle")
