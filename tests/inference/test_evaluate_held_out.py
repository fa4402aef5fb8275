"""``prep evaluate`` on any held-out folder a classifier may be given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner


from conftest import COLOURS as CLASSES, evaluate_cli

runner = CliRunner()


# -- Evaluating on held-out folders --------------------------------------------------------------

@pytest.mark.parametrize("shape", ["full split", "valid only", "test only", "bare class folders"])
def test_evaluate_reads_every_shape_of_held_out_folder(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path, shape):
    folder = tmp_path / "held"
    if shape == "full split":
        folder, split, images = colours_dataset, "valid", 18
    elif shape == "valid only":
        shutil.copytree(colours_dataset / "valid", folder / "val")
        split, images = "valid", 18
    elif shape == "test only":
        shutil.copytree(colours_dataset / "test", folder / "test")
        split, images = "test", 18
    else:  # two classes of six: the ones missing are fine
        for name in ("blue", "red"):
            shutil.copytree(colours_dataset / "test" / name, folder / name)
        split, images = "held", 6
    result = evaluate_cli(colours_checkpoint, folder, "--json", out=tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert (metrics["split"], metrics["images"], metrics["classes"]) == (split, images, CLASSES)
    counts = {name: scores["images"] for name, scores in metrics["per_class"].items()}
    assert sum(counts.values()) == images
    if shape == "bare class folders":
        assert counts == {"amber": 0, "blue": 3, "cyan": 0, "green": 0, "pink": 0, "red": 3}
        assert metrics["per_class"]["amber"]["recall"] is None


def test_evaluate_json_has_top5_and_per_class_precision_and_recall(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    result = evaluate_cli(colours_checkpoint, colours_dataset, "--split", "test", "--json", out=tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    matrix = np.array(metrics["confusion"])
    assert metrics["acc"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert metrics["acc"] <= metrics["top5_acc"] <= 1.0
    for i, name in enumerate(CLASSES):
        scores = metrics["per_class"][name]
        assert scores["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum())
        called = matrix[:, i].sum()
        assert scores["precision"] == (pytest.approx(matrix[i, i] / called) if called else None)
    text = evaluate_cli(colours_checkpoint, colours_dataset, "--split", "test", out=tmp_path)
    assert "top-5 acc" in text.stdout and "blue: recall" in text.stdout and "precision" in text.stdout


def test_top5_counts_an_image_whose_class_is_among_the_five_highest():
    from prep.builtin_tasks.classification.metrics import ClassificationMetrics

    metrics = ClassificationMetrics(7, train=False)
    logits = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1]] * 3)  # ranks: class 0 first ... class 6 last
    metrics.update(logits, torch.tensor([0, 4, 5]))  # first, fifth, sixth
    computed = metrics.compute()
    assert computed["acc"] == pytest.approx(1 / 3) and computed["top5_acc"] == pytest.approx(2 / 3)
    assert "top5_acc" not in ClassificationMetrics(5, train=False).compute()


def test_a_class_the_model_does_not_know_is_named(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    shutil.copytree(colours_dataset / "test" / "blue", tmp_path / "held" / "blue")
    shutil.copytree(colours_dataset / "test" / "red", tmp_path / "held" / "purple")
    result = evaluate_cli(colours_checkpoint, tmp_path / "held", out=tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path / 'held' / 'purple'} is a class the model was not trained on" in result.output
    assert "amber, blue, cyan" in result.output


def test_a_split_that_is_not_there_or_not_a_split_is_refused(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    shutil.copytree(colours_dataset / "valid", tmp_path / "held" / "valid")
    missing = evaluate_cli(colours_checkpoint, tmp_path / "held", "--split", "test", out=tmp_path)
    assert missing.exit_code == 1 and "has no test split (it has valid)" in missing.output
    bare = evaluate_cli(colours_checkpoint, tmp_path / "held" / "valid", "--split", "test", out=tmp_path)
    assert bare.exit_code == 2 and "holds class folders, not splits" in bare.output


def test_unlabeled_images_are_sent_to_predict(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for image in (colours_dataset / "test" / "red").iterdir():
        shutil.copy(image, unlabeled / image.name)
    result = evaluate_cli(colours_checkpoint, unlabeled, out=tmp_path)
    assert result.exit_code == 1 and "holds images but no class folders" in result.output and "prep predict" in result.output


def test_a_segmentation_split_is_not_read_as_classes(colours_checkpoint: Path, tmp_path: Path):
    from prep.testing import make_segmentation_dataset

    data = make_segmentation_dataset(tmp_path / "seg")
    result = evaluate_cli(colours_checkpoint, data, out=tmp_path)
    assert result.exit_code == 1 and "holds images/ and masks/, a segmentation set; this model classifies images" in result.output
