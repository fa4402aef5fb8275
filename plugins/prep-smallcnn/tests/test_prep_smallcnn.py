"""The plugin's own tests: run them with `pytest` after `pip install -e ".[test]"`."""

from __future__ import annotations

import torch

from prep.data.datasets import CorruptSample
from prep.plugins import collate_fns, trainers
from prep.training import TrainOptions
from prep_smallcnn.cutout import cutout_collate


def test_prep_finds_the_trainer_and_the_collate_function():
    # Through the installed entry point, as `prep train --plugin small-cnn` will.
    assert trainers().get("small-cnn").collate == "cutout"
    assert collate_fns().get("cutout") is cutout_collate


def test_cutout_paints_one_square_per_image_and_keeps_the_rest():
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8) for _ in range(8)]
    samples = [(image, i % 2) for i, image in enumerate(images)] + [CorruptSample("bad.jpg", "truncated")]
    batch = cutout_collate(samples)
    assert batch.inputs.shape == (8, 32, 32, 3) and batch.inputs.dtype == torch.uint8
    assert batch.targets.tolist() == [0, 1] * 4 and [s.path for s in batch.skipped] == ["bad.jpg"]
    for original, painted in zip(images, batch.inputs):
        changed = (original != painted).any(dim=-1)
        assert 0 < int(changed.sum()) <= 8 * 8  # at most one 8 x 8 square (clipped at borders)
        rows, cols = changed.nonzero(as_tuple=True)
        assert int(rows.max() - rows.min()) < 8 and int(cols.max() - cols.min()) < 8


def test_the_model_fits_the_classes():
    model, head = trainers().get("small-cnn").build_model(5, TrainOptions(plugin="small-cnn"))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5) and head.out_features == 5
