"""Named augmentation presets, and building a pipeline from a name or a file.

Also a built-in plugin: it registers ``none``, ``flip``, ``light``, ``medium``, ``heavy``, and
the policies of longer runs, ``randaugment``, ``trivialaugment`` and ``erasing`` (see
``prep.augment.policies``). Each
preset builds a train or an eval pipeline for a task (``classification``, ``multilabel`` or
``segmentation``). Eval pipelines only resize the short side to ``size / 0.875`` and take
the centre ``size x size`` crop (segmentation and multilabel: resize the whole image to
``size x size``, so that every pixel is scored and no tag at the border is cut away; their
random crops keep at least 35% of the image). Geometric transforms move masks with the image using
nearest-neighbour interpolation (albumentations' default for masks), so a mask never gains
a value it did not have; colour transforms touch the image only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from prep.errors import PluginError, UsageError, check_choice
from prep.hookspecs import hookimpl
from prep.registry import Registration

TASKS = ("classification", "multilabel", "segmentation")
# The tasks whose labels are about the whole image's content: eval never crops, training
# crops keep more (a crop that drops the river drops the tag "water", or the mask's object).
WHOLE_IMAGE_TASKS = ("multilabel", "segmentation")
AUTO = "auto"
# Runs shorter than this train without augmentation, longer ones with `light`. Measured in
# benchmarks/bench_recipes.py: in 3-epoch fine-tuning, no augmentation was never worse than
# flips or crops; from scratch, crops cost 2-epoch runs on digits 24 points (and gained 6 on
# textures). The book recipe, which relies on crops, runs 25 epochs.
CROP_FROM_EPOCHS = 20
# A preset: (image_size, train, task) -> list of albumentations transforms.
Preset = Callable[[int, bool, str], list]


def eval_transforms(size: int, task: str = "classification") -> list:
    import albumentations as A

    if task in WHOLE_IMAGE_TASKS:
        # The whole image is scored (and predicted): resized, never cropped.
        return [A.Resize(height=size, width=size)]
    return [A.SmallestMaxSize(max_size=round(size / 0.875)), A.CenterCrop(height=size, width=size)]


def _crop(size: int, task: str, smallest: float) -> list:
    import albumentations as A

    # Segmentation and tags keep more of the image: tiny crops lose the objects outlined or tagged.
    low = max(smallest, 0.35) if task in WHOLE_IMAGE_TASKS else smallest
    return [A.RandomResizedCrop(size=(size, size), scale=(low, 1.0)), A.HorizontalFlip(p=0.5)]


def none_preset(size: int, train: bool, task: str) -> list:
    """No augmentation: train sees what eval sees."""
    return eval_transforms(size, task)


def flip_preset(size: int, train: bool, task: str) -> list:
    """The eval pipeline and a horizontal flip, nothing else: the mildest augmentation, for
    pictures whose mirror image is the same class."""
    import albumentations as A

    return eval_transforms(size, task) + ([A.HorizontalFlip(p=0.5)] if train else [])


def resolve_preset(preset: str, epochs: int) -> str:
    """``preset``, or for ``auto`` the preset that suits a run of ``epochs``: ``none`` below
    ``CROP_FROM_EPOCHS`` epochs, ``light`` (random resized crops and flips) from there on."""
    if preset != AUTO:
        return preset
    return "none" if epochs < CROP_FROM_EPOCHS else "light"


def light_preset(size: int, train: bool, task: str) -> list:
    """Random resized crop and horizontal flip: the standard fine-tuning recipe."""
    return _crop(size, task, 0.25) if train else eval_transforms(size, task)


def medium_preset(size: int, train: bool, task: str) -> list:
    """Light, plus colour jitter and a small rotation/scale."""
    import albumentations as A

    if not train:
        return eval_transforms(size, task)
    return _crop(size, task, 0.15) + [
        A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.8),
    ]


def heavy_preset(size: int, train: bool, task: str) -> list:
    """Medium, plus cut-out holes, blur or noise, and occasional grayscale."""
    import albumentations as A

    if not train:
        return eval_transforms(size, task)
    return medium_preset(size, train, task) + [
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.03, 0.1))], p=0.3),
        A.ToGray(p=0.1),
        # fill_mask=None leaves masks as they are under the holes.
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=0.5),
    ]


def randaugment_preset(size: int, train: bool, task: str) -> list:
    """Light, then RandAugment (two operations at magnitude 9) and random erasing (p 0.25):
    timm's rand-m9-n2 with --reprob 0.25, for long runs."""
    from prep.augment.policies import rand_augment, random_erasing

    return light_preset(size, train, task) + [rand_augment(), random_erasing()] if train else eval_transforms(size, task)


def trivialaugment_preset(size: int, train: bool, task: str) -> list:
    """Light, then TrivialAugment Wide (one operation at a random strength) and random
    erasing (p 0.25): strong augmentation with nothing to tune."""
    from prep.augment.policies import random_erasing, trivial_augment

    return light_preset(size, train, task) + [trivial_augment(), random_erasing()] if train else eval_transforms(size, task)


def erasing_preset(size: int, train: bool, task: str) -> list:
    """Light, then random erasing (p 0.25)."""
    from prep.augment.policies import random_erasing

    return light_preset(size, train, task) + [random_erasing()] if train else eval_transforms(size, task)


def build_pipeline(preset: str, image_size: int, *, train: bool, task: str = "classification", seed: int | None = None):
    """An ``albumentations.Compose`` from a preset name or a saved pipeline file.

    Args:
        preset: a registered preset name, or a path to an albumentations ``.yaml``,
            ``.yml`` or ``.json`` file written by ``albumentations.save``.
        image_size: output side in pixels (ignored by pipeline files).
        train: the train pipeline, or the eval one (resize and centre crop).
        task: ``classification``, ``multilabel`` or ``segmentation``.
        seed: makes the random choices repeat; the same seed gives the same augmentations.

    Raises:
        UsageError: unknown task, or a pipeline file that albumentations cannot read.
        UnknownNameError: unknown preset name.
    """
    import albumentations as A

    from prep.plugins import augmentation_presets

    check_choice("task", task, TASKS)
    path = Path(preset)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not train:
            return A.Compose(eval_transforms(image_size, task), seed=seed)
        try:
            loaded = A.load(str(path), data_format="json" if path.suffix.lower() == ".json" else "yaml")
        except Exception as exc:  # albumentations raises many kinds for a bad file
            raise UsageError(f"Cannot load the augmentation pipeline {path}: {exc}") from None
        loaded.set_random_seed(seed)
        return loaded
    return A.Compose(_preset_transforms(augmentation_presets().registration(preset), image_size, train, task), seed=seed)


def _preset_transforms(preset: Registration, image_size: int, train: bool, task: str) -> list:
    """Call a preset and check that it gave a list of albumentations transforms, naming
    the plugin when it did not."""
    import albumentations as A

    origin = preset.origin
    transforms = preset.call(image_size, train, task)
    if not isinstance(transforms, (list, tuple)):
        raise PluginError(f"The {origin} returned {type(transforms).__name__}; it must return a list of albumentations transforms.")
    allowed = (A.BasicTransform, A.BaseCompose)
    bad = next((t for t in transforms if not isinstance(t, allowed)), None)
    if bad is not None:
        raise PluginError(f"The {origin} returned {bad!r} in its list, which is not an albumentations transform.")
    return list(transforms)


@hookimpl
def register_augmentation_presets(register: Callable[[str, Preset], None]) -> None:
    register("none", none_preset)
    register("flip", flip_preset)
    register("light", light_preset)
    register("medium", medium_preset)
    register("heavy", heavy_preset)
    register("randaugment", randaugment_preset)
    register("trivialaugment", trivialaugment_preset)
    register("erasing", erasing_preset)
