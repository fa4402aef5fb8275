"""prep: from a raw Kaggle image folder to a trained PyTorch model, through plugins.

What a plugin needs is importable from here (``import prep``), and nothing internal is::

    from prep import Trainer, ModelRequest, TrainConfig, hookimpl

The names that need torch are imported on first use, so ``import prep`` stays cheap at
start-up, when every plugin is loaded. The test kit is ``prep.testing``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# albumentations asks PyPI for a newer version of itself each time it is imported: a network
# call in every run, which prep promises not to make (and a warning on machines offline or
# behind a proxy). A user who wants the check sets the variable to 0.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from prep.errors import (
    DatasetNotFoundError, PluginError, PrepError, TaskMismatchError, UnknownNameError, UsageError,
)
from prep.util.version import __version__


# Imported when first used: name -> module. Even a plugin's first names: the ``prep``
# executable imports this package before it can catch a Ctrl-C, so the less it imports,
# the shorter the moment in which one ends in a traceback.
_LAZY = {
    "hookimpl": "prep.hookspecs",
    "TrainConfig": "prep.engine.config",
    "ModelRequest": "prep.train.trainer",
    "Trainer": "prep.train.trainer",
    # Training.
    "train": "prep.train.run",
    "cross_validate": "prep.crossval.run",
    "TrainOptions": "prep.train.options",
    "TrainingRun": "prep.engine.events",
    "Task": "prep.engine.task",
    "EpochMetrics": "prep.engine.task",
    "ClassificationTask": "prep.builtin_tasks.classification.task",
    "MultiLabelTask": "prep.builtin_tasks.multilabel.task",
    "ConfusionMatrix": "prep.builtin_tasks.classification.metrics",
    "WeightsError": "prep.train.weights",
    "torchvision_model": "prep.train.weights",
    "load_matching_weights": "prep.train.weights",
    "with_downloaded_weights": "prep.train.weights",
    # Using a trained model.
    "PredictRequest": "prep.inference.predict",
    "PredictOptions": "prep.inference.predict",
    # Data.
    "DatasetIndex": "prep.data.index",
    "load_rgb_at_side": "prep.images.decode",
    "ImageDecodeError": "prep.images.decode",
    "Batch": "prep.data.collate",
    "CorruptSample": "prep.data.datasets",
    "uint8_channels_last_collate": "prep.data.collate",
    # Splitting.
    "Unit": "prep.split.splitters",
    "SplitRequest": "prep.split.splitters",
    "SplitSize": "prep.split.splitters",
    # Registries: look up what plugins registered (and register without importing).
    "Imported": "prep.registry",
    "trainers": "prep.plugins",
    "tasks": "prep.plugins",
    "collate_fns": "prep.plugins",
    "augmentation_presets": "prep.plugins",
    "splitters": "prep.plugins",
    "label_parsers": "prep.plugins",
    "lr_lambdas": "prep.plugins",
}

__all__ = [
    "DatasetNotFoundError", "PluginError", "PrepError", "TaskMismatchError", "UnknownNameError", "UsageError",
    "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
