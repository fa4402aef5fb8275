"""Augmentation pipelines (albumentations): named presets, user files, previews."""
