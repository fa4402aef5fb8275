"""resnet-finetune's defaults: ImageNet weights unless told otherwise (offline: one line),
``--normalize``, the lines that open every run, kept BatchNorm statistics, augmentation
that follows the run's length; and using a model: ``prep evaluate`` on any held-out
folder, ``--tta flip``, ``prep lr-find``."""

from __future__ import annotations

import json
import math
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageOps
from typer.testing import CliRunner

from prep import ModelRequest
from prep.cli import app
from prep.engine.checkpoint import load_checkpoint
from prep.stats.normalization import IMAGENET_MEAN
from prep.train.options import TrainOptions
from prep.train.run import train

runner = CliRunner()
CLASSES = ["amber", "blue", "cyan", "green", "pink", "red"]  # six: top-5 accuracy applies


def write_class_images(folder: Path, per_class: int, seed: int, classes=CLASSES) -> None:
    """Noisy pictures whose colour tells the class, with a brighter left half (so that the
    mirror image is another picture)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = np.array([(k * 53) % 256, (k * 97 + 40) % 256, (k * 151 + 80) % 256])
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 25, (24, 24, 3)), 0, 255)
            pixels[:, :12] = np.clip(pixels[:, :12] + 40, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{name}_{seed}_{i}.png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune") / "colours"
    for split, n, seed in (("train", 6, 0), ("valid", 3, 1), ("test", 3, 2)):
        write_class_images(root / split, n, seed)
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """Stands in for a downloaded ImageNet file: a torchvision ResNet-18's state dict."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(dataset: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    train(dataset, TrainOptions(weights="none", epochs=1, image_size=16, batch_size=12, lr=0.002, workers=0, run_dir=run_dir))
    return run_dir / "best.pt"


def _train_cli(dataset: Path, run_dir: Path, *extra: str):
    return runner.invoke(app, [
        "train", str(dataset), "--epochs", "1", "--image-size", "16", "--batch-size", "12", "--workers", "0",
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


def test_imagenet_weights_are_the_default_and_offline_say_so_in_one_line(dataset: Path, tmp_path: Path, offline_torch_hub: Path):
    result = _train_cli(dataset, tmp_path / "run")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "Cannot download torchvision's ImageNet weights for resnet18" in lines[0]
    assert "--weights PATH" in lines[0] and "--weights none" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cached_imagenet_weights_are_used_without_the_network(offline_torch_hub: Path, weights_file: Path):
    from prep.train.weights import cached_weights_path
    from prep_trainers.resnet_finetune import ResNetFinetune

    cached = cached_weights_path("resnet18")
    assert cached.parent == offline_torch_hub / "checkpoints" and cached.name.startswith("resnet18-")
    cached.parent.mkdir(parents=True)
    shutil.copy(weights_file, cached)
    model, head = ResNetFinetune().build_model(ModelRequest(("a", "b"), "resnet18", "imagenet"))
    assert torch.equal(model.conv1.weight, torch.load(weights_file)["conv1.weight"]) and head.out_features == 2


def test_weights_from_a_file_are_normalised_like_imagenet_and_the_run_says_so(dataset: Path, weights_file: Path, tmp_path: Path):
    result = _train_cli(dataset, tmp_path / "run", "--weights", str(weights_file))
    assert result.exit_code == 0, result.output
    header = result.stderr.splitlines()[:4]
    assert header[0] == f"Training resnet-finetune resnet18 on cpu: {dataset}, 6 classes, 36 training and 18 validation images"
    assert header[1] == f"  weights: {weights_file} (from a file)"
    assert header[2] == "  normalisation: imagenet (ImageNet's constants)"
    assert header[3].startswith("  recipe: modern (adamw lr 0.001, backbone lr x0.1, cosine") and "BatchNorm statistics kept" in header[3]
    assert header[3].endswith("; augmentation: none")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["mean"] == IMAGENET_MEAN and state["normalization"] == "imagenet"
    assert state["options"]["weights"] == str(weights_file) and state["options"]["preset"] == "none"


@pytest.mark.parametrize(("weights", "normalize", "expected"), [
    ("file", "dataset", "dataset"),
    ("none", "auto", "dataset"),
    ("none", "imagenet", "imagenet"),
])
def test_normalize_chooses_the_statistics_and_the_checkpoint_keeps_them(dataset: Path, weights_file: Path, tmp_path: Path, weights, normalize, expected):
    from prep.stats.dataset_stats import read_mean_std

    chosen = str(weights_file) if weights == "file" else weights
    result = _train_cli(dataset, tmp_path / "run", "--weights", chosen, "--normalize", normalize)
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["normalization"] == expected
    assert state["mean"] == (IMAGENET_MEAN if expected == "imagenet" else read_mean_std(dataset)[0])
    assert f"  normalisation: {expected} (" in result.stderr


def test_an_unknown_normalize_is_refused_before_anything_is_written(dataset: Path, tmp_path: Path):
    result = _train_cli(dataset, tmp_path / "run", "--weights", "none", "--normalize", "imagenette")
    assert result.exit_code == 2 and "--normalize must be one of auto, imagenet, dataset, not 'imagenette'" in result.output
    assert not (tmp_path / "run").exists()


# -- The recipe ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("freeze", "kept"), [(None, True), (False, False)])
def test_pretrained_batchnorm_statistics_are_kept_unless_asked(dataset: Path, weights_file: Path, tmp_path: Path, freeze, kept):
    train(dataset, TrainOptions(
        weights=str(weights_file), freeze_norm_stats=freeze, epochs=1, image_size=16, batch_size=12, workers=0, run_dir=tmp_path / "run",
    ))
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    start = torch.load(weights_file)
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


# -- Evaluating on held-out folders --------------------------------------------------------------

def _evaluate(checkpoint: Path, folder: Path, *extra: str, out: Path):
    return runner.invoke(app, ["evaluate", str(checkpoint), str(folder), "--workers", "0", "--out", str(out / "c.png"), *extra])


@pytest.mark.parametrize("shape", ["full split", "valid only", "test only", "bare class folders"])
def test_evaluate_reads_every_shape_of_held_out_folder(checkpoint: Path, dataset: Path, tmp_path: Path, shape):
    folder = tmp_path / "held"
    if shape == "full split":
        folder, split, images = dataset, "valid", 18
    elif shape == "valid only":
        shutil.copytree(dataset / "valid", folder / "val")
        split, images = "valid", 18
    elif shape == "test only":
        shutil.copytree(dataset / "test", folder / "test")
        split, images = "test", 18
    else:  # two classes of six: the ones missing are fine
        for name in ("blue", "red"):
            shutil.copytree(dataset / "test" / name, folder / name)
        split, images = "held", 6
    result = _evaluate(checkpoint, folder, "--json", out=tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert (metrics["split"], metrics["images"], metrics["classes"]) == (split, images, CLASSES)
    counts = {name: scores["images"] for name, scores in metrics["per_class"].items()}
    assert sum(counts.values()) == images
    if shape == "bare class folders":
        assert counts == {"amber": 0, "blue": 3, "cyan": 0, "green": 0, "pink": 0, "red": 3}
        assert metrics["per_class"]["amber"]["recall"] is None


def test_evaluate_json_has_top5_and_per_class_precision_and_recall(checkpoint: Path, dataset: Path, tmp_path: Path):
    result = _evaluate(checkpoint, dataset, "--split", "test", "--json", out=tmp_path)
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
    text = _evaluate(checkpoint, dataset, "--split", "test", out=tmp_path)
    assert "top-5 acc" in text.stdout and "blue: recall" in text.stdout and "precision" in text.stdout


def test_top5_counts_an_image_whose_class_is_among_the_five_highest():
    from prep.builtin_tasks.classification.metrics import ClassificationMetrics

    metrics = ClassificationMetrics(7, train=False)
    logits = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1]] * 3)  # ranks: class 0 first ... class 6 last
    metrics.update(logits, torch.tensor([0, 4, 5]))  # first, fifth, sixth
    computed = metrics.compute()
    assert computed["acc"] == pytest.approx(1 / 3) and computed["top5_acc"] == pytest.approx(2 / 3)
    assert "top5_acc" not in ClassificationMetrics(5, train=False).compute()


def test_a_class_the_model_does_not_know_is_named(checkpoint: Path, dataset: Path, tmp_path: Path):
    shutil.copytree(dataset / "test" / "blue", tmp_path / "held" / "blue")
    shutil.copytree(dataset / "test" / "red", tmp_path / "held" / "purple")
    result = _evaluate(checkpoint, tmp_path / "held", out=tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path / 'held' / 'purple'} is a class the model was not trained on" in result.output
    assert "amber, blue, cyan" in result.output


def test_a_split_that_is_not_there_or_not_a_split_is_refused(checkpoint: Path, dataset: Path, tmp_path: Path):
    shutil.copytree(dataset / "valid", tmp_path / "held" / "valid")
    missing = _evaluate(checkpoint, tmp_path / "held", "--split", "test", out=tmp_path)
    assert missing.exit_code == 1 and "has no test split (it has valid)" in missing.output
    bare = _evaluate(checkpoint, tmp_path / "held" / "valid", "--split", "test", out=tmp_path)
    assert bare.exit_code == 2 and "holds class folders, not splits" in bare.output


def test_unlabeled_images_are_sent_to_predict(checkpoint: Path, dataset: Path, tmp_path: Path):
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for image in (dataset / "test" / "red").iterdir():
        shutil.copy(image, unlabeled / image.name)
    result = _evaluate(checkpoint, unlabeled, out=tmp_path)
    assert result.exit_code == 1 and "holds images but no class folders" in result.output and "prep predict" in result.output


def test_a_segmentation_split_is_not_read_as_classes(checkpoint: Path, tmp_path: Path):
    from prep.testing import make_segmentation_dataset

    data = make_segmentation_dataset(tmp_path / "seg")
    result = _evaluate(checkpoint, data, out=tmp_path)
    assert result.exit_code == 1 and "holds images/ and masks/, a segmentation set; this model classifies images" in result.output


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


def test_predict_with_flip_tta_is_the_mean_of_the_image_and_its_mirror(checkpoint: Path, dataset: Path, tmp_path: Path):
    import csv

    original = dataset / "test" / "green" / "green_2_0.png"
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(original, folder / "a.png")
    ImageOps.mirror(Image.open(original)).save(folder / "b.png")

    def probabilities(*extra: str) -> dict[str, list[float]]:
        out = tmp_path / f"p{len(extra)}.csv"
        result = runner.invoke(app, ["predict", str(checkpoint), str(folder), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return {Path(row["file"]).name: [float(row[c]) for c in CLASSES] for row in csv.DictReader(out.open())}

    plain, averaged = probabilities(), probabilities("--tta", "flip")
    mean = (np.array(plain["a.png"]) + np.array(plain["b.png"])) / 2
    assert np.allclose(averaged["a.png"], mean, atol=1e-5) and np.allclose(averaged["b.png"], mean, atol=1e-5)
    assert not np.allclose(plain["a.png"], plain["b.png"], atol=1e-4)  # the mirror is another picture


def test_evaluate_with_flip_tta(checkpoint: Path, dataset: Path, tmp_path: Path):
    result = _evaluate(checkpoint, dataset, "--tta", "flip", "--json", out=tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tta"] == "flip"
    wrong = _evaluate(checkpoint, dataset, "--tta", "rotate", out=tmp_path)
    assert wrong.exit_code == 2 and "--tta must be one of none, flip, not 'rotate'" in wrong.output


# -- The learning-rate finder --------------------------------------------------------------------

def test_lr_find_draws_the_range_test_and_suggests_a_rate(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    png = tmp_path / "lr.png"
    result = runner.invoke(app, [
        "lr-find", str(dataset), "--weights", "none", "--image-size", "16", "--batch-size", "12", "--workers", "0",
        "--steps", "30", "--start-lr", "1e-5", "--end-lr", "10", "--out", str(png), "--json",
    ])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lrs = found["lrs"]
    assert lrs[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert found["stopped"] in ("completed", "diverged", "not-finite") and len(found["losses"]) == found["steps"]
    assert found["suggestion"] is None or lrs[0] <= found["suggestion"] <= lrs[-1]
    assert not (tmp_path / "runs").exists()  # a range test is not a run
    text = runner.invoke(app, [
        "lr-find", str(dataset), "--weights", "none", "--image-size", "16", "--batch-size", "12", "--workers", "0",
        "--steps", "30", "--start-lr", "1e-5", "--out", str(png),
    ])
    assert text.exit_code == 0 and ("Suggested learning rate:" in text.stdout or "no suggestion" in text.stdout)


def test_the_suggestion_is_where_the_loss_falls_fastest_before_its_minimum():
    from prep.engine.lr_finder import suggest_lr

    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]
    falls = {i: (0.3 if i == 25 else 0.05) for i in range(20, 30)}  # step 25 falls fastest
    losses, loss = [], 2.0
    for i in range(60):
        loss += -falls.get(i, 0.0) if i < 30 else (0.5 if i >= 35 else 0.0)
        losses.append(loss)
    assert suggest_lr(lrs, losses) == lrs[25]
    assert suggest_lr(lrs, [0.5] + losses[1:]) == lrs[25]  # a lucky first batch is not the minimum
    assert suggest_lr(lrs, [1.0 + 0.01 * i for i in range(60)]) is None  # never fell


def test_the_range_test_leaves_the_model_as_it_was(dataset: Path):
    from prep.train.prepare import prepare_run
    from prep.engine.lr_finder import range_test

    run = prepare_run(dataset, TrainOptions(weights="none", image_size=16, batch_size=12, workers=0), with_valid=False)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    test = range_test(
        run.model, run.train_loader, run.task, run.settings.loss, run.classes, config=run.config, mean=run.normalization.mean,
        std=run.normalization.std, device=torch.device("cpu"), head=run.head, steps=8,
    )
    assert len(test.lrs) == 8 and all(math.isfinite(loss) for loss in test.losses)
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lr_find_refuses_a_range_upside_down(dataset: Path, tmp_path: Path):
    result = runner.invoke(app, ["lr-find", str(dataset), "--weights", "none", "--start-lr", "1", "--end-lr", "0.1", "--workers", "0", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--start-lr must be above 0 and below --end-lr" in result.output
