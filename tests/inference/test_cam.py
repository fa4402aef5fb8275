"""Grad-CAM: the map on a model whose evidence is known, the layer it finds in real
architectures, and ``prep evaluate --cam`` through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.inference.cam import CamError, find_cam_layer, grad_cam
from prep.testing import make_classification_dataset, make_segmentation_dataset

runner = CliRunner()


class RedDetector(torch.nn.Module):
    """Class 0's score is the mean over positions of a feature map that copies the red
    channel; class 1's, of the green one: the evidence for class 0 is exactly where the
    image is red."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.weight[1, 1] = 1.0
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def test_the_map_lies_where_the_evidence_is():
    model = RedDetector().eval()
    image = torch.zeros(1, 3, 16, 16)
    image[0, 0, 2:6, 10:14] = 1.0  # a red square, top right
    image[0, 1, 10:14, 2:6] = 1.0  # a green one, bottom left
    layer = find_cam_layer(model, image)
    assert layer.name == "features"
    red = grad_cam(model, layer, image, torch.tensor([0]))[0]
    assert red.shape == (16, 16)
    assert red[2:6, 10:14].min() > 0.9 and red[10:14, 2:6].max() < 0.05 and red[0, 0] < 0.05
    green = grad_cam(model, layer, image, torch.tensor([1]))[0]
    assert green[10:14, 2:6].min() > 0.9 and green[2:6, 10:14].max() < 0.05
    assert all(p.grad is None for p in model.parameters())  # the model is left as it was


def test_the_layer_found_in_torchvision_and_timm_models_and_a_transformer_refused():
    import timm
    import torchvision

    image = torch.zeros(1, 3, 64, 64)
    assert find_cam_layer(torchvision.models.resnet18(num_classes=2).eval(), image).name == "layer4"
    # After the last convolution: its normalisation and activation (timm's bn2).
    assert find_cam_layer(timm.create_model("efficientnet_b0", num_classes=2).eval(), image).name == "bn2"
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=2, img_size=64).eval()
    with pytest.raises(CamError, match=r"patch_embed\.proj\) comes before 9\d% of its parameters"):
        find_cam_layer(vit, image, about="vit")
    with pytest.raises(CamError, match="has no convolutional feature map"):
        find_cam_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 2)), image)
    # At 32 px a ResNet's last map is 1 x 1: nothing to show.
    with pytest.raises(CamError, match=r"last convolutional map \(layer4\) is 1 x 1"):
        find_cam_layer(torchvision.models.resnet18(num_classes=2).eval(), torch.zeros(1, 3, 32, 32), about="resnet18")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cam")
    data = make_classification_dataset(root / "data", ("cat", "dog", "eel"), per_class=6, valid_per_class=3)
    run = root / "run"
    result = runner.invoke(app, [
        "train", str(data), "--arch", "resnet18", "--weights", "none", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
        "--preset", "none", "--workers", "0", "--device", "cpu", "--run-dir", str(run),
    ])
    assert result.exit_code == 0, result.output
    return data, run


def test_evaluate_cam_writes_a_titled_picture_of_each_class(trained, tmp_path: Path):
    data, run = trained
    out = tmp_path / "pictures" / "confusion.png"
    out.parent.mkdir()
    result = runner.invoke(app, ["evaluate", str(run / "best.pt"), str(data), "--cam", "--device", "cpu", "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    cam = tmp_path / "pictures" / "cam.png"
    assert f"Grad-CAM: {cam} (at layer4)" in " ".join(result.output.split())
    with Image.open(cam) as picture:
        width, height = picture.size
    # Four columns, a row for each of the three classes.
    assert width == 1000 and height > 3 * 250


def test_evaluate_cam_json_names_the_picture_and_layer(trained, tmp_path: Path):
    import json

    data, run = trained
    result = runner.invoke(app, ["evaluate", str(run / "best.pt"), str(data), "--cam", "--json", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["cam_layer"] == "layer4" and Path(report["cam_png"]).is_file()


def test_cam_rows_are_the_classes_with_the_most_mistakes_when_there_are_many():
    from prep.builtin_tasks.classification.cam import MOST_CLASSES, Scored, choose_rows

    scored = []
    for c in range(12):
        # Class c has c mistakes among its 12 images.
        scored += [Scored(100 * c + k, c, (c + 1) % 12 if k < c else c, 0.5 + k / 100) for k in range(12)]
    rows = choose_rows(scored, 12)
    assert [c for c, _, _ in rows] == list(range(12 - MOST_CLASSES, 12))
    c, right, wrong = rows[-1]
    assert [s.confidence for s in right] == [0.61] and [s.confidence for s in wrong] == [0.5 + 10 / 100, 0.5 + 9 / 100]


def test_cam_is_refused_in_one_line_for_a_segmentation_model_and_an_ensemble(trained, tmp_path: Path):
    data, run = trained
    ensemble = runner.invoke(app, ["evaluate", str(run / "best.pt"), str(run / "last.pt"), str(data), "--cam", "--device", "cpu", "--workers", "0"])
    assert ensemble.exit_code == 2 and "--cam explains one model, not an ensemble of 2" in ensemble.output
    masks = make_segmentation_dataset(tmp_path / "masks", per_split={"train": 4, "valid": 2})
    seg_run = tmp_path / "seg"
    trained_seg = runner.invoke(app, [
        "train", str(masks), "--plugin", "unet", "--weights", "none", "--epochs", "1", "--image-size", "32", "--workers", "0",
        "--device", "cpu", "--run-dir", str(seg_run),
    ])
    assert trained_seg.exit_code == 0, trained_seg.output
    refused = runner.invoke(app, ["evaluate", str(seg_run / "best.pt"), str(masks), "--cam", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "e.png")])
    assert refused.exit_code == 2 and "--cam: the segmentation task draws no Grad-CAM picture" in refused.output
    assert not (tmp_path / "e.png").exists() and not (tmp_path / "cam.png").exists()
