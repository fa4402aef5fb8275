"""The plugin's own tests: run them with `pytest` after `pip install -e ".[test]"`."""

from __future__ import annotations

import torch

import prep
from prep import CorruptSample, ModelRequest
from prep.testing import make_classification_dataset, train_briefly
from prep_smallcnn.cutout import cutout_collate


def test_prep_finds_the_trainer_and_the_collate_function():
    # Through the installed entry point, as `prep train --plugin small-cnn` will.
    assert prep.trainers().get("small-cnn").collate == "cutout"
    assert prep.collate_fns().get("cutout") is cutout_collate


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
    request = ModelRequest(("a", "b", "c", "d", "e"), arch="wide")
    model, head = prep.trainers().get("small-cnn").build_model(request)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5) and head.out_features == 5


def test_one_short_run_through_prep(tmp_path):
    # prep's test kit: a tiny split dataset, and one epoch with the installed trainer.
    data = make_classification_dataset(tmp_path / "data", classes=("round", "square"), per_class=8)
    summary = train_briefly("small-cnn", data, tmp_path / "run")
    assert summary["status"] == "completed" and summary["epochs"] == 1
    assert (tmp_path / "run" / "best.pt").exists() and summary["classes"] == ["round", "square"]
