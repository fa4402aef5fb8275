"""Segmentation through the CLI, from a raw folder to masks and a Kaggle submission: binary
and multiclass, every mask format, sizes that are not multiples of 32, empty masks, bad
values, the class table, and the split that keeps the views of one car together."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.masks.rle import rle_decode

runner = CliRunner()
COLOURS = {0: (0, 0, 0), 1: (220, 40, 40), 2: (40, 40, 220)}
TABLE = "id,name,r,g,b\n0,background,0,0,0\n1,apple,220,40,40\n2,plum,40,40,220\n"


def _scene(rng: np.random.Generator, height: int, width: int, classes: int, empty: bool):
    """Noisy image with a rectangle per foreground class in that class's colour, and its ids."""
    pixels = rng.integers(0, 70, (height, width, 3), dtype=np.uint8)
    ids = np.zeros((height, width), dtype=np.uint8)
    if not empty:
        for class_id in range(1, classes):
            h, w = rng.integers(height // 4, height // 2), rng.integers(width // 4, width // 2)
            y, x = rng.integers(0, height - h), rng.integers(0, width - w)
            pixels[y : y + h, x : x + w] = COLOURS[class_id]
            ids[y : y + h, x : x + w] = class_id
    return pixels, ids


def _save_mask(path: Path, ids: np.ndarray, style: str) -> None:
    if style == "0-255":
        Image.fromarray(ids * 255, "L").save(path.with_suffix(".png"))
    elif style in ("gif", "palette"):
        image = Image.fromarray(ids, "P")
        image.putpalette([c for i in range(256) for c in COLOURS.get(i, (0, 0, 0))])
        image.save(path.with_suffix(".gif" if style == "gif" else ".png"))
    elif style == "rgb":
        Image.fromarray(np.array([COLOURS[i] for i in range(3)], dtype=np.uint8)[ids], "RGB").save(path.with_suffix(".png"))
    else:  # class ids
        Image.fromarray(ids, "L").save(path.with_suffix(".png"))


def raw_dataset(root: Path, *, classes: int, styles: list[str], count: int = 12, size: tuple[int, int] = (45, 61), empty: int = 1) -> Path:
    """A raw images/ + masks/ folder (as a download might be) with ``count`` pairs; the
    first ``empty`` masks are empty."""
    rng = np.random.default_rng(classes)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        pixels, ids = _scene(rng, *size, classes, empty=i < empty)
        Image.fromarray(pixels).save(root / "images" / f"img{i:02d}.png")
        _save_mask(root / "masks" / f"img{i:02d}", ids, styles[i % len(styles)])
    return root


def _ok(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def _train(data: Path, run: Path, *extra: str) -> dict:
    result = _ok([
        "train", str(data), "--plugin", "unet", "--arch", "unet-resnet18", "--epochs", "2", "--image-size", "40",
        "--batch-size", "4", "--workers", "0", "--preset", "none", "--lr", "0.01", "--run-dir", str(run), "--json", *extra,
    ])
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("binary")
    raw = raw_dataset(base / "raw", classes=2, styles=["0-255", "gif", "ids"], count=13)
    _ok(["split", str(raw), "--out", str(base / "data"), "--valid", "4"])
    summary = _train(base / "data", base / "run")
    return base / "data", base / "run", summary


def test_binary_masks_of_mixed_formats_and_odd_sizes_train_and_monitor_dice(binary_run):
    data, run, summary = binary_run
    assert summary["monitor"] == "valid_dice" and summary["status"] == "completed"
    assert summary["classes"] == ["background", "foreground"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"valid_dice", "valid_iou", "valid_pixel_acc", "valid_image_dice", "train_dice", "per_class_iou"} <= set(record)
    assert summary["best_valid_dice"] == max(json.loads(line)["valid_dice"] for line in (run / "metrics.jsonl").read_text().splitlines())
    for picture in ("curves.png", "per_class.png", "examples.png"):
        assert Image.open(run / picture).size[0] > 300, picture


def test_evaluate_prints_dice_iou_and_per_class_scores(binary_run, tmp_path: Path):
    data, run, _ = binary_run
    result = _ok(["evaluate", str(run / "best.pt"), str(data), "--json", "--out", str(tmp_path / "overlay.png"), "--workers", "0"])
    metrics = json.loads(result.stdout)
    assert {"dice", "iou", "image_dice", "pixel_acc"} <= set(metrics) and metrics["images"] == 4
    assert set(metrics["per_class"]) == {"background", "foreground"} and set(metrics["per_class"]["foreground"]) == {"dice", "iou"}
    assert metrics["dice"] == pytest.approx(metrics["per_class"]["foreground"]["dice"])
    assert Image.open(tmp_path / "overlay.png").format == "PNG"


def test_predict_writes_masks_at_each_images_own_size_and_a_matching_submission(binary_run, tmp_path: Path):
    data, run, _ = binary_run
    images = tmp_path / "test"
    images.mkdir()
    sizes = {"wide.png": (70, 33), "tall.jpg": (29, 90)}  # width x height
    for name, size in sizes.items():
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(images / name)
    _ok(["predict", str(run / "best.pt"), str(images), "--out", str(tmp_path / "masks")])
    for name, size in sizes.items():
        mask = Image.open(tmp_path / "masks" / Path(name).with_suffix(".png"))
        assert mask.size == size and mask.mode == "L" and set(np.unique(mask)) <= {0, 255}
    for order in ("row", "column"):
        out = tmp_path / f"sub-{order}.csv"
        _ok(["predict", str(run / "best.pt"), str(images), "--kaggle-submission", "--out", str(out), "--rle-order", order])
        rows = list(csv.reader(out.open()))
        assert rows[0] == ["img", "rle_mask"] and sorted(r[0] for r in rows[1:]) == sorted(sizes)
        for name, rle in rows[1:]:
            mask = np.asarray(Image.open(tmp_path / "masks" / Path(name).with_suffix(".png"))) // 255
            assert rle_decode(rle, mask.shape, order).tolist() == mask.tolist()
    # Predicting into a folder that holds those masks replaces nothing.
    before = (tmp_path / "masks" / "wide.png").read_bytes()
    result = runner.invoke(app, ["predict", str(run / "best.pt"), str(images), "--out", str(tmp_path / "masks")])
    assert result.exit_code != 0 and "already exists" in result.output
    assert (tmp_path / "masks" / "wide.png").read_bytes() == before


def test_flip_tta_and_tiles_give_masks_of_the_same_size(binary_run, tmp_path: Path):
    data, run, _ = binary_run
    image = next((data / "valid" / "images").iterdir())
    for extra, out in ((["--tta", "flip"], "tta"), (["--tile", "32", "--overlap", "8"], "tiles")):
        _ok(["predict", str(run / "best.pt"), str(image), "--out", str(tmp_path / out), *extra])
        assert Image.open(tmp_path / out / image.name).size == Image.open(image).size
    result = runner.invoke(app, ["predict", str(run / "best.pt"), str(image), "--tile", "32", "--overlap", "32", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--overlap must be" in result.output


def test_export_reproduces_the_segmentation_logits(binary_run, tmp_path: Path):
    _, run, _ = binary_run
    result = _ok(["export", str(run / "best.pt"), "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--json"])
    written = json.loads(result.stdout[result.stdout.index("{"):])
    assert written["checked"].startswith("outputs match")
    import torch

    model = torch.jit.load(str(tmp_path / "m.pt"))
    assert tuple(model(torch.rand(1, 3, 45, 61)).shape) == (1, 1, 45, 61)  # any size, one logit


@pytest.mark.parametrize("style", ["palette", "rgb"])
def test_multiclass_with_a_class_table_trains_reports_names_and_predicts_palette_masks(tmp_path: Path, style: str):
    raw = raw_dataset(tmp_path / "raw", classes=3, styles=[style], count=10)
    table = tmp_path / "fruit.csv"
    table.write_text(TABLE)
    split = _ok(["split", str(raw), "--out", str(tmp_path / "data"), "--valid", "3", "--classes", str(table)])
    assert "Class table" in split.output and (tmp_path / "data" / "classes.csv").read_text() == TABLE
    stats = _ok(["stats", str(tmp_path / "data"), "--workers", "1"])
    assert "apple" in stats.output and "plum" in stats.output
    summary = _train(tmp_path / "data", tmp_path / "run", "--loss", "dice+focal", "--class-weights", "1,2,2")
    assert summary["monitor"] == "valid_iou" and summary["classes"] == ["background", "apple", "plum"]
    metrics = json.loads(_ok(["evaluate", str(tmp_path / "run" / "best.pt"), "--json", "--workers", "0", "--out", str(tmp_path / "e.png")]).stdout)
    assert list(metrics["per_class"]) == ["background", "apple", "plum"]
    image = next((tmp_path / "data" / "valid" / "images").iterdir())
    _ok(["predict", str(tmp_path / "run" / "best.pt"), str(image), "--out", str(tmp_path / "pred")])
    mask = Image.open(tmp_path / "pred" / image.name)
    assert mask.mode == "P" and mask.getpalette()[:9] == [0, 0, 0, 220, 40, 40, 40, 40, 220]
    result = runner.invoke(app, ["predict", str(tmp_path / "run" / "best.pt"), str(image), "--kaggle-submission", "--out", str(tmp_path / "s.csv")])
    assert result.exit_code != 0 and "needs a binary" in result.output and not (tmp_path / "s.csv").exists()


def test_values_outside_the_class_table_stop_training_before_it_starts(tmp_path: Path):
    raw = raw_dataset(tmp_path / "raw", classes=3, styles=["ids"], count=8)
    bad = np.zeros((45, 61), dtype=np.uint8)
    bad[3, 3] = 9
    Image.fromarray(bad, "L").save(raw / "masks" / "img05.png")
    (raw / "classes.csv").write_text(TABLE)  # found in SRC without --classes
    _ok(["split", str(raw), "--out", str(tmp_path / "data"), "--valid", "2"])
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "--plugin", "unet", "--epochs", "1", "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "9 in" in result.output and "img05.png" in result.output and "ids 0 to 2" in result.output
    assert not (tmp_path / "run").exists()
    stats = _ok(["stats", str(tmp_path / "data"), "--workers", "1"])
    assert "Training would stop here" in stats.output


def test_a_bad_loss_or_class_weights_are_refused_before_anything_is_written(tmp_path: Path):
    raw = raw_dataset(tmp_path / "raw", classes=2, styles=["ids"], count=6)
    _ok(["split", str(raw), "--out", str(tmp_path / "data"), "--valid", "2"])
    for extra, message in ((["--loss", "dice+lovasz"], "'lovasz' is not a loss term"), (["--class-weights", "1,2,3"], "3 weights, but the dataset has 2 classes")):
        result = runner.invoke(app, ["train", str(tmp_path / "data"), "--plugin", "unet", "--workers", "0", "--run-dir", str(tmp_path / "run"), *extra])
        assert result.exit_code != 0 and message in result.output, result.output
        assert not (tmp_path / "run").exists()


def test_split_keeps_all_views_of_a_car_in_one_split_and_says_so(tmp_path: Path):
    _ok(["sample", str(tmp_path / "carvana"), "--kind", "segmentation", "--n", "25"])
    report = json.loads(_ok(["split", str(tmp_path / "carvana"), "--out", str(tmp_path / "data"), "--mode", "copy", "--json"]).stdout)
    assert "views of 25 objects" in report["grouping"]

    def cars(split: str) -> set[str]:
        return {name.rsplit("_", 1)[0] for name in (p.name for p in (tmp_path / "data" / split / "images").iterdir())}

    assert cars("train") and cars("valid") and not cars("train") & cars("valid")
    report = json.loads(_ok(["split", str(tmp_path / "carvana"), "--out", str(tmp_path / "free"), "--group-pattern", "none", "--json", "--dry-run"]).stdout)
    assert report["grouping"] is None


@pytest.mark.parametrize("arch", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50", "deeplabv3_resnet50", "unet-mobilenet_v2", "unet-resnet50"])
def test_every_architecture_trains_a_batch_of_one_at_an_odd_size(arch: str):
    import torch

    from prep import ModelRequest
    from prep.builtin_tasks.segmentation.losses import SegmentationLoss
    from prep_trainers.unet import UNetTrainer

    model, head = UNetTrainer().build_model(ModelRequest(("background", "a", "b"), arch, "none", 40))
    model.train()
    outputs = model(torch.randn(1, 3, 45, 61))
    logits = outputs["out"] if isinstance(outputs, dict) else outputs
    assert tuple(logits.shape) == (1, 3, 45, 61)
    SegmentationLoss()(outputs, torch.randint(0, 3, (1, 45, 61))).backward()
    assert any(p.grad is not None for p in head.parameters())


def test_unet_loads_encoder_weights_from_a_classifier_file(tmp_path: Path):
    import torch
    import torchvision

    from prep import ModelRequest
    from prep_trainers.unet import UNetTrainer

    classifier = torchvision.models.resnet18(num_classes=5)
    torch.save(classifier.state_dict(), tmp_path / "resnet18.pt")
    model, _ = UNetTrainer().build_model(ModelRequest(("bg", "fg"), "unet-resnet18", str(tmp_path / "resnet18.pt"), 40))
    assert torch.equal(model.encoder.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)
    torch.save(model.state_dict(), tmp_path / "unet.pt")  # a whole U-Net loads back too
    again, _ = UNetTrainer().build_model(ModelRequest(("bg", "fg"), "unet-resnet18", str(tmp_path / "unet.pt"), 40))
    assert torch.equal(again.decoder.logits.weight, model.decoder.logits.weight)
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pt")
    from prep.train.weights import WeightsError

    with pytest.raises(WeightsError, match="fits neither this model nor its encoder"):
        UNetTrainer().build_model(ModelRequest(("bg", "fg"), "unet-resnet18", str(tmp_path / "other.pt"), 40))


def test_training_draws_the_mask_reading_as_a_progress_task(tmp_path: Path):
    from contextlib import contextmanager

    from prep.testing import make_segmentation_dataset, train_briefly
    from prep.train.options import TrainOptions
    from prep.train.run import train

    class Recording:
        def __init__(self) -> None:
            self.tasks: list[tuple[str, int, int]] = []

        @contextmanager
        def task(self, description: str, total: int):
            done = [0]
            yield lambda n, status=None: done.__setitem__(0, done[0] + n)
            self.tasks.append((description, total, done[0]))

    data = make_segmentation_dataset(tmp_path / "data", per_split={"train": 6, "valid": 3})
    progress = Recording()
    options = TrainOptions(plugin="unet", arch="unet-resnet18", epochs=1, image_size=32, batch_size=4, preset="none", workers=0, device="cpu", run_dir=tmp_path / "run")
    train(data, options, progress=progress)
    assert ("Reading masks", 9, 9) in progress.tasks
    assert train_briefly("unet", data, tmp_path / "again", arch="unet-resnet18")["status"] == "completed"


def test_evaluate_on_held_out_masks_that_lack_the_last_class(tmp_path: Path):
    from prep.testing import make_segmentation_dataset, train_briefly

    data = make_segmentation_dataset(tmp_path / "data", classes=3)
    summary = train_briefly("unet", data, tmp_path / "run", arch="unet-resnet18")
    held_out = make_segmentation_dataset(tmp_path / "held", classes=2, per_split={"train": 2, "valid": 2})
    metrics = json.loads(_ok(["evaluate", summary["best"], str(held_out), "--json", "--workers", "0", "--out", str(tmp_path / "e.png")]).stdout)
    assert list(metrics["per_class"]) == ["class_0", "class_1", "class_2"] and metrics["images"] == 2
