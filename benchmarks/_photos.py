"""Real photographs for the loader and stats benchmarks, from the files scikit-image ships
(``pip install -e .[bench]``): an astronaut, a cat, coffee, a motorcycle, a rocket, a
retina, the Hubble deep field, bricks, grass, gravel.

JPEG decoding costs what the pixels' detail costs, so the benchmark images are cut from
these photos at their own resolution (never enlarged): 400 x 300 crops for a Kaggle-sized
set, and 1600 x 1200 mosaics of sixteen such crops for a set of large photos.
"""

from __future__ import annotations

from pathlib import Path

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg",
          "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png")
CROP = (400, 300)


def _photos():
    import numpy as np
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for name in PHOTOS:
        with Image.open(folder / name) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape[0] < CROP[1] or pixels.shape[1] < CROP[0]:  # a small photo is tiled, not enlarged
            pixels = np.tile(pixels, (2, 2, 1))
        out.append(pixels)
    return out


def _crop(rng, photos):
    photo = photos[rng.integers(len(photos))]
    top = rng.integers(photo.shape[0] - CROP[1] + 1)
    left = rng.integers(photo.shape[1] - CROP[0] + 1)
    crop = photo[top : top + CROP[1], left : left + CROP[0]]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def photo_dataset(folder: Path, images: int, *, large: bool = False, seed: int = 0) -> Path:
    """``folder/train/<class>/N.jpg``: ``images`` JPEGs (quality 90) in two classes (by the
    photo the first crop came from), 400 x 300 crops, or with ``large`` 1600 x 1200 mosaics
    of crops. Written once; an existing folder is reused."""
    import numpy as np
    from PIL import Image

    if (folder / "train").is_dir():
        return folder
    rng = np.random.default_rng(seed)
    photos = _photos()
    for i in range(images):
        if large:
            rows = [np.concatenate([_crop(rng, photos) for _ in range(4)], axis=1) for _ in range(4)]
            pixels = np.concatenate(rows, axis=0)
        else:
            pixels = _crop(rng, photos)
        target = folder / "train" / ("a" if i % 2 else "b") / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels)).save(target, quality=90)
    return folder
