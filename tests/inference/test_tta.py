"""``--tta flip`` in evaluate and predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from typer.testing import CliRunner

from prep.cli import app

from conftest import COLOURS as CLASSES, evaluate_cli

runner = CliRunner()


# -- Test-time augmentation ----------------------------------------------------------------------

def test_flip_tta_averages_probabilities_and_mirrors_maps_back():
    from prep.inference.tta import FlipAveraged

    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 6, 5))
    images = torch.randn(2, 3, 4, 6)
    expected = ((classifier(images).softmax(1) + classifier(images.flip(-1)).softmax(1)) / 2).log()
    assert torch.allclose(FlipAveraged(classifier)(images), expected, atol=1e-6)
    segmenter = torch.nn.Conv2d(3, 1, 3, padding=1)
    probability = (torch.sigmoid(segmenter(images)) + torch.sigmoid(segmenter(images.flip(-1))).flip(-1)) / 2
    assert torch.allclose(torch.sigmoid(FlipAveraged(segmenter)(images)), probability, atol=1e-5)


def test_predict_with_flip_tta_is_the_mean_of_the_image_and_its_mirror(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    import csv

    original = colours_dataset / "test" / "green" / "green_2_0.png"
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(original, folder / "a.png")
    ImageOps.mirror(Image.open(original)).save(folder / "b.png")

    def probabilities(*extra: str) -> dict[str, list[float]]:
        out = tmp_path / f"p{len(extra)}.csv"
        result = runner.invoke(app, ["predict", str(colours_checkpoint), str(folder), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return {Path(row["file"]).name: [float(row[c]) for c in CLASSES] for row in csv.DictReader(out.open())}

    plain, averaged = probabilities(), probabilities("--tta", "flip")
    mean = (np.array(plain["a.png"]) + np.array(plain["b.png"])) / 2
    assert np.allclose(averaged["a.png"], mean, atol=1e-5) and np.allclose(averaged["b.png"], mean, atol=1e-5)
    assert not np.allclose(plain["a.png"], plain["b.png"], atol=1e-4)  # the mirror is another picture


def test_evaluate_with_flip_tta(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path):
    result = evaluate_cli(colours_checkpoint, colours_dataset, "--tta", "flip", "--json", out=tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tta"] == "flip"
    wrong = evaluate_cli(colours_checkpoint, colours_dataset, "--tta", "rotate", out=tmp_path)
    assert wrong.exit_code == 2 and "--tta must be one of none, flip, not 'rotate'" in wrong.output
