"""resnet-finetune's defaults: ImageNet weights unless told otherwise (offline: one line),
``--normalize``, the lines that open every run, kept BatchNorm statistics, and augmentation
that follows the run's length."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prep import ModelRequest
from prep.cli import app
from prep.engine.checkpoint import load_checkpoint
from prep.stats.normalization import IMAGENET_MEAN
from prep.train.options import TrainOptions
from prep.train.run import train

runner = CliRunner()


def _train_cli(colours_dataset: Path, run_dir: Path, *extra: str):
    return runner.invoke(app, [
        "train", str(colours_dataset), "--epochs", "1", "--image-size", "16", "--batch-size", "12", "--workers", "0",
        "--run-dir", str(run_dir), *extra,
    ])


# -- Weights, normalisation and the opening lines ---------------------------------------------

@pytest.fixture
def offline_torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache, and a network that is not there."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def test_imagenet_weights_are_the_default_and_offline_say_so_in_one_line(colours_dataset: Path, tmp_path: Path, offline_torch_hub: Path):
    result = _train_cli(colours_dataset, tmp_path / "run")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "Cannot download torchvision's ImageNet weights for resnet18" in lines[0]
    assert "--weights PATH" in lines[0] and "--weights none" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cached_imagenet_weights_are_used_without_the_network(offline_torch_hub: Path, resnet18_weights_file: Path):
    from prep.train.weights import cached_weights_path
    from prep_trainers.resnet_finetune import ResNetFinetune

    cached = cached_weights_path("resnet18")
    assert cached.parent == offline_torch_hub / "checkpoints" and cached.name.startswith("resnet18-")
    cached.parent.mkdir(parents=True)
    shutil.copy(resnet18_weights_file, cached)
    model, head = ResNetFinetune().build_model(ModelRequest(("a", "b"), "resnet18", "imagenet"))
    assert torch.equal(model.conv1.weight, torch.load(resnet18_weights_file)["conv1.weight"]) and head.out_features == 2


def test_weights_from_a_file_are_normalised_like_imagenet_and_the_run_says_so(colours_dataset: Path, resnet18_weights_file: Path, tmp_path: Path):
    result = _train_cli(colours_dataset, tmp_path / "run", "--weights", str(resnet18_weights_file))
    assert result.exit_code == 0, result.output
    header = result.stderr.splitlines()[:4]
    assert header[0] == f"Training resnet-finetune resnet18 on cpu: {colours_dataset}, 6 classes, 36 training and 18 validation images"
    assert header[1] == f"  weights: {resnet18_weights_file} (from a file)"
    assert header[2] == "  normalisation: imagenet (ImageNet's constants)"
    assert header[3].startswith("  recipe: modern (adamw lr 0.001, backbone lr x0.1, cosine") and "BatchNorm statistics kept" in header[3]
    assert header[3].endswith("; augmentation: none")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["mean"] == IMAGENET_MEAN and state["normalization"] == "imagenet"
    assert state["options"]["weights"] == str(resnet18_weights_file) and state["options"]["preset"] == "none"


@pytest.mark.parametrize(("weights", "normalize", "expected"), [
    ("file", "dataset", "dataset"),
    ("none", "auto", "dataset"),
    ("none", "imagenet", "imagenet"),
])
def test_normalize_chooses_the_statistics_and_the_checkpoint_keeps_them(colours_dataset: Path, resnet18_weights_file: Path, tmp_path: Path, weights, normalize, expected):
    from prep.stats.dataset_stats import read_mean_std

    chosen = str(resnet18_weights_file) if weights == "file" else weights
    result = _train_cli(colours_dataset, tmp_path / "run", "--weights", chosen, "--normalize", normalize)
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["normalization"] == expected
    assert state["mean"] == (IMAGENET_MEAN if expected == "imagenet" else read_mean_std(colours_dataset)[0])
    assert f"  normalisation: {expected} (" in result.stderr


def test_an_unknown_normalize_is_refused_before_anything_is_written(colours_dataset: Path, tmp_path: Path):
    result = _train_cli(colours_dataset, tmp_path / "run", "--weights", "none", "--normalize", "imagenette")
    assert result.exit_code == 2 and "--normalize must be one of auto, imagenet, dataset, not 'imagenette'" in result.output
    assert not (tmp_path / "run").exists()


# -- The recipe ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("freeze", "kept"), [(None, True), (False, False)])
def test_pretrained_batchnorm_statistics_are_kept_unless_asked(colours_dataset: Path, resnet18_weights_file: Path, tmp_path: Path, freeze, kept):
    train(colours_dataset, TrainOptions(
        weights=str(resnet18_weights_file), freeze_norm_stats=freeze, epochs=1, image_size=16, batch_size=12, workers=0, run_dir=tmp_path / "run",
    ))
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    start = torch.load(resnet18_weights_file)
    for name in ("bn1.running_mean", "layer2.0.bn1.running_var", "layer4.1.bn2.running_mean"):
        assert torch.equal(trained[name], start[name]) == kept, name
    # Only the statistics are kept: the layers' scale still learns.
    assert not torch.equal(trained["layer4.1.bn2.weight"], start["layer4.1.bn2.weight"])


def test_keep_norm_statistics_spares_the_head():
    from prep.engine.freezing import keep_norm_statistics

    head = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
    model.train()
    assert keep_norm_statistics(model, head) == 1
    assert not model[1].training and head[0].training and model[0].training


def test_augmentation_follows_the_length_of_the_run_and_the_recipe():
    from prep.augment.presets import resolve_preset
    from prep.train.options import resolve_config
    from prep_trainers.resnet_finetune import ResNetFinetune

    assert [resolve_preset("auto", n) for n in (1, 19, 20, 60)] == ["none", "none", "light", "light"]
    assert resolve_preset("medium", 3) == "medium"
    trainer, request = ResNetFinetune(), ModelRequest(("a", "b"), "resnet18", "imagenet")
    assert resolve_config(trainer, TrainOptions(), request).preset == "none"
    assert resolve_config(trainer, TrainOptions(epochs=30), request).preset == "light"
    assert resolve_config(trainer, TrainOptions(epochs=30, preset="none"), request).preset == "none"
    book = resolve_config(trainer, TrainOptions(recipe="book"), request)
    assert (book.preset, book.freeze_norm_stats) == ("light", False)
    scratch = resolve_config(trainer, TrainOptions(), ModelRequest(("a", "b"), "resnet18", "none"))
    assert (scratch.freeze_norm_stats, scratch.backbone_lr_scale) == (False, 1.0)
    assert trainer.pretrained(ModelRequest(("a", "b"), "resnet18", "/some/file.pth"))
