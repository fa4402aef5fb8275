"""RandAugment and TrivialAugment, built from albumentations transforms, and random erasing.

Both policies draw from the operations of TrivialAugment Wide (Müller & Hutter 2021), as
torchvision and timm list them: identity, shear x/y, translate x/y, rotate, brightness,
saturation ("color"), contrast, sharpness, posterize, solarize, autocontrast, equalize.

* ``rand_augment(ops=2, magnitude=9)`` (Cubuk et al. 2020; timm's ``rand-m9-n2``): two
  operations per image, each at up to ``magnitude`` of 30 bins of its range (rotation up to
  9 degrees at 9, shear up to 0.09, ...);
* ``trivial_augment()``: one operation per image, at a magnitude drawn uniformly over its
  whole (wide) range: no settings to tune.

Where torchvision draws a fixed magnitude and a random sign, these draw the magnitude
uniformly up to it in either direction (albumentations' ranges): the closest equivalent
made of maintained transforms. Geometric operations move a mask with its image
(nearest-neighbour, so a mask never gains a value); the others change the image only, so
both policies serve segmentation too. They run on the decoded uint8 image, after the crop,
so the decoded cache is used as with any preset.

``random_erasing(p)`` (Zhong et al. 2020, timm's ``--reprob``): with probability ``p``, a
rectangle of 2-33% of the image, of aspect 0.3-3.3, is filled with random noise; masks are
left as they are.
"""

from __future__ import annotations

import math

BINS = 30  # magnitudes run from 0 to 30, as in timm's and torchvision's RandAugment


def _operations(*, shear: float, translate: float, rotate: float, factor: float, fewest_bits: int, solarize: float) -> list:
    """The operations up to these strengths (shear as a tangent, translation as a share of
    the side, rotation in degrees, colour factors as 1 +- factor, solarize as the share of
    the range above the threshold), each always applied when chosen."""
    import albumentations as A

    degrees = math.degrees(math.atan(shear))
    return [
        A.NoOp(p=1.0),
        A.Affine(shear={"x": (-degrees, degrees), "y": (0, 0)}, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-degrees, degrees)}, p=1.0),
        A.Affine(translate_percent={"x": (-translate, translate), "y": (0, 0)}, p=1.0),
        A.Affine(translate_percent={"x": (0, 0), "y": (-translate, translate)}, p=1.0),
        A.Affine(rotate=(-rotate, rotate), p=1.0),
        A.RandomBrightnessContrast(brightness_limit=(-factor, factor), contrast_limit=(0, 0), p=1.0),
        A.ColorJitter(brightness=0, contrast=0, saturation=(1 - factor, 1 + factor), hue=0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(-factor, factor), p=1.0),
        A.Sharpen(alpha=(0.0, factor), lightness=(1.0, 1.0), p=1.0),
        A.Posterize(num_bits=(fewest_bits, 8), p=1.0),
        A.Solarize(threshold_range=(1 - solarize, 1.0), p=1.0),
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
    ]


def rand_augment(ops: int = 2, magnitude: int = 9):
    """RandAugment: ``ops`` operations per image (drawn with replacement), each up to
    ``magnitude`` of ``BINS`` of RandAugment's ranges (shear 0.3, translation 0.45 of the
    side, rotation 30 degrees, colour factors 0.9, posterize down to 4 bits)."""
    import albumentations as A

    f = magnitude / BINS
    operations = _operations(shear=0.3 * f, translate=0.45 * f, rotate=30 * f, factor=0.9 * f, fewest_bits=max(1, round(8 - 4 * f)), solarize=f)
    return A.SomeOf(operations, n=ops, replace=True, p=1.0)


def trivial_augment():
    """TrivialAugment Wide: one operation per image, its strength drawn uniformly over the
    whole of Wide's ranges (shear 0.99, translation 32 px of 224, rotation 135 degrees,
    colour factors 0.99, posterize down to 2 bits), in either direction."""
    import albumentations as A

    return A.OneOf(_operations(shear=0.99, translate=32 / 224, rotate=135, factor=0.99, fewest_bits=2, solarize=1.0), p=1.0)


def random_erasing(p: float = 0.25):
    """Random erasing with probability ``p`` (see the module docstring)."""
    import albumentations as A

    return A.Erasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), fill="random", fill_mask=None, p=p)
