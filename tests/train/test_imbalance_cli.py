"""Imbalanced data through prep train and prep stats: what a user who types nothing gets,
what the options do, and the options refused before anything is written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prep.cli import app
from prep.testing import make_classification_dataset, make_segmentation_dataset

runner = CliRunner()
QUICK = ["--weights", "none", "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--preset", "none", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> Path:
    return make_classification_dataset(
        tmp_path_factory.mktemp("imbalanced"), ("cat", "dog"), per_class={"cat": 40, "dog": 8}, valid_per_class={"cat": 10, "dog": 4},
    )


@pytest.fixture(scope="module")
def balanced(tmp_path_factory) -> Path:
    return make_classification_dataset(tmp_path_factory.mktemp("balanced"), ("cat", "dog"), per_class=12, valid_per_class=4)


def _train(data: Path, run_dir: Path, *extra: str):
    return runner.invoke(app, ["train", str(data), *QUICK, "--run-dir", str(run_dir), *extra])


def test_an_imbalanced_split_is_named_and_the_defaults_adapt(imbalanced: Path, tmp_path: Path):
    result = _train(imbalanced, tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    header = " ".join(result.output.split())
    assert "classes: imbalanced: the largest class (cat, 40 images) has 5.0x the smallest (dog, 8); monitoring valid_balanced_acc, class weights auto (cat 0.829, dog 1.85)" in header
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["monitor"] == "valid_balanced_acc" and "best_valid_balanced_acc" in summary
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    scale = 48 / (40 ** 0.5 + 8 ** 0.5)  # the documented formula: mean weight 1 over the 48 images
    assert config["class_weights"] == pytest.approx([scale / 40 ** 0.5, scale / 8 ** 0.5], rel=1e-5)
    assert config["monitor"] == "valid_balanced_acc"
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert {"valid_balanced_acc", "valid_macro_f1", "train_balanced_acc", "per_class_acc[cat]", "per_class_acc[dog]"} <= set(rows[0])


def test_a_balanced_split_keeps_accuracy_and_no_weights(balanced: Path, tmp_path: Path):
    result = _train(balanced, tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    assert "classes: balanced enough" in result.output and "monitoring" not in result.output
    assert json.loads(result.output[result.output.index("{"):])["monitor"] == "valid_acc"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["class_weights"] is None


def test_what_the_user_chose_wins_over_the_imbalance_defaults(imbalanced: Path, tmp_path: Path):
    result = _train(imbalanced, tmp_path / "run", "--monitor", "valid_acc", "--sampler", "balanced", "--loss", "focal")
    assert result.exit_code == 0, result.output
    assert "sampling classes evenly" in result.output and "class weights" not in result.output and "monitoring" not in result.output
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert (config["monitor"], config["class_weights"], config["sampler"], config["loss"]) == ("valid_acc", None, "balanced", "focal")
    result = _train(imbalanced, tmp_path / "listed", "--class-weights", "1,3")
    assert result.exit_code == 0 and "class weights (cat 1, dog 3)" in result.output


def test_prep_stats_says_the_split_is_imbalanced_and_what_training_will_do(imbalanced: Path):
    result = runner.invoke(app, ["stats", str(imbalanced)])
    assert result.exit_code == 0
    assert "Imbalanced: the largest class (cat, 40 images) has 5.0x the smallest (dog, 8)." in result.output
    assert "prep train monitors valid_balanced_acc" in " ".join(result.output.split())
    written = json.loads((imbalanced / "stats.json").read_text())
    assert written["class_balance"]["imbalanced"] is True and written["absent"] == {"train": [], "valid": []}


@pytest.mark.parametrize(("options", "message"), [
    (["--loss", "nonsense+++"], "--loss 'nonsense+++' is not a classification loss; use ce (cross-entropy, the default) or focal"),
    (["--class-weights", "1,2,3,4,5"], "--class-weights gives 5 weights, but the dataset has 2 classes (cat, dog)"),
    (["--class-weights", "1,-2"], "--class-weights must not be negative, and not all zero: '1,-2'"),
    (["--class-weights", "one,two"], "--class-weights takes auto or numbers separated by commas (1,5,5), not 'one,two'"),
    (["--class-weights", "nan,1"], "--class-weights must be numbers, none negative and not all zero"),
    (["--mixup", "-0.5"], "--mixup takes alpha >= 0"),
    (["--cutmix", "1", "--mix-prob", "2"], "--mix-prob is a probability, between 0 and 1, not 2"),
    (["--mix-off-epoch", "3"], "--mix-off-epoch tune --mixup and --cutmix"),
    (["--ema", "1"], "--ema takes a decay between 0 and 1 (0.999 is usual), not 1"),
    (["--ema", "0"], "--ema takes a decay between 0 and 1"),
    (["--sampler", "uniform"], "--sampler must be one of shuffle, balanced, not 'uniform'"),
])
def test_options_classification_cannot_use_are_refused_before_anything_is_written(imbalanced: Path, tmp_path: Path, options, message):
    result = _train(imbalanced, tmp_path / "run", *options)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_balanced_sampler_refuses_a_class_without_images(tmp_path: Path):
    data = make_classification_dataset(tmp_path / "data", ("cat", "dog"), per_class=6, valid_per_class=2)
    (data / "train" / "eel").mkdir()
    result = _train(data, tmp_path / "run", "--sampler", "balanced")
    assert result.exit_code == 2 and "--sampler balanced cannot draw eel: no training image holds it" in result.output
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def three_class_masks(tmp_path_factory) -> Path:
    return make_segmentation_dataset(tmp_path_factory.mktemp("masks"), classes=3, per_split={"train": 6, "valid": 3})


@pytest.mark.parametrize(("options", "message"), [
    (["--mixup", "0.2"], "--mixup and --cutmix mix the batches of classification; the segmentation task does not mix its batches"),
    (["--label-smoothing", "0.1"], "--label-smoothing 0.1 is for classification; the segmentation losses do not smooth labels"),
    (["--loss", "dice+nonsense"], "'nonsense' is not a loss term"),
    (["--class-weights", "1,2"], "--class-weights gives 2 weights, but the dataset has 3 classes"),
])
def test_options_segmentation_cannot_use_are_refused(three_class_masks: Path, tmp_path: Path, options, message):
    result = runner.invoke(app, ["train", str(three_class_masks), "--plugin", "unet", "--arch", "unet-resnet18", *QUICK, "--run-dir", str(tmp_path / "run"), *options])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_segmentation_weighs_rare_pixels_and_samples_rare_images(three_class_masks: Path, tmp_path: Path):
    result = runner.invoke(app, [
        "train", str(three_class_masks), "--plugin", "unet", "--arch", "unet-resnet18", *QUICK, "--batch-size", "3",
        "--run-dir", str(tmp_path / "run"), "--sampler", "balanced", "--ema", "0.9",
    ])
    assert result.exit_code == 0, result.output
    assert "classes: imbalanced: the largest class (class_0," in result.output and "sampling classes evenly" in result.output
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert config["class_weights"] is None  # the sampler evens the classes already
    auto = runner.invoke(app, ["train", str(three_class_masks), "--plugin", "unet", "--arch", "unet-resnet18", *QUICK, "--run-dir", str(tmp_path / "auto")])
    assert auto.exit_code == 0 and "class weights auto (class_0" in auto.output


def test_a_class_missing_from_validation_is_said_in_one_line(tmp_path: Path):
    data = make_classification_dataset(tmp_path / "data", ("cat", "dog", "eel"), per_class=6, valid_per_class={"cat": 2, "dog": 2, "eel": 0})
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "note: the validation split holds no eel: its scores are n/a and left out of the means" in result.output
    stats = runner.invoke(app, ["stats", str(data)])
    assert "valid has no images of eel, so it cannot be scored there" in " ".join(stats.output.split())
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "run" / "best.pt"), str(data), "--device", "cpu", "--workers", "0"])
    assert evaluated.exit_code == 0 and "eel: not in valid (no images)" in evaluated.output, evaluated.output


def test_recipe_list_says_what_each_recipe_sets():
    result = runner.invoke(app, ["train", "--recipe", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("modern (default): epochs 3; min_steps 100") and "label_smoothing 0.1" in lines[0]
    assert "with --weights none, from 30 epochs: mixup 0.2, cutmix 1.0" in lines[0]
    assert lines[1].startswith("book: epochs 25; optimizer sgd")


def test_a_long_run_from_scratch_mixes_its_batches_unless_an_option_says_otherwise(balanced: Path, tmp_path: Path):
    quick = ["--weights", "none", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--max-steps", "2"]

    def train_settings(name: str, *extra: str) -> dict:
        result = runner.invoke(app, ["train", str(balanced), *quick, "--run-dir", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        return yaml.safe_load((tmp_path / name / "config.yaml").read_text())["train"]

    long = train_settings("long", "--epochs", "30")
    assert (long["mixup"], long["cutmix"]) == (0.2, 1.0)
    short = train_settings("short", "--epochs", "29")
    assert (short["mixup"], short["cutmix"]) == (0.0, 0.0)
    told = train_settings("told", "--epochs", "30", "--mixup", "0")
    assert (told["mixup"], told["cutmix"]) == (0.0, 1.0)
    # Fine-tuning pretrained weights for as long does not mix (it cost accuracy).
    from prep.train.options import TrainOptions, resolve_config
    from prep.train.trainer import ModelRequest
    from prep_trainers.resnet_finetune import ResNetFinetune

    tuned = resolve_config(ResNetFinetune(), TrainOptions(epochs=30), ModelRequest(("a", "b"), "resnet18", "imagenet"))
    assert (tuned.mixup, tuned.cutmix) == (0.0, 0.0)
    # A repeat takes the settings as they were, long-run ones included.
    repeated = runner.invoke(app, ["train", "--config", str(tmp_path / "long" / "config.yaml"), "--run-dir", str(tmp_path / "again")])
    assert repeated.exit_code == 0, repeated.output
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["train"]
    assert (again["mixup"], again["cutmix"], again["epochs"]) == (0.2, 1.0, 30)


def test_a_recipes_long_run_naming_an_unknown_setting_names_the_trainer():
    from prep.engine.config import TrainConfig
    from prep.errors import PluginError
    from prep.train.options import TrainOptions, resolve_config
    from prep.train.trainer import ModelRequest, Trainer

    class Careless(Trainer):
        task = "classification"

        def recipe(self, name, request):
            return TrainConfig(epochs=40, long_run_from=30, long_run={"mixpu": 0.2})

    with pytest.raises(PluginError, match="trainer Careless: its recipe's long_run names settings TrainConfig lacks: mixpu"):
        resolve_config(Careless(), TrainOptions(), ModelRequest(("a", "b"), "x", "none"))


def test_a_small_split_trains_for_the_recipes_minimum_of_steps_unless_epochs_are_given(balanced: Path, tmp_path: Path):
    quick = ["--weights", "none", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--max-steps", "3"]
    result = runner.invoke(app, ["train", str(balanced), *quick, "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    # 24 images at batch 8 are 3 steps an epoch: 100 steps would take 34 epochs; with the
    # auto preset, at most 19 (a short run stays short); with a preset of its own, 34.
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["epochs"] == 19
    fixed = runner.invoke(app, ["train", str(balanced), *quick, "--preset", "flip", "--run-dir", str(tmp_path / "fixed")])
    assert fixed.exit_code == 0 and yaml.safe_load((tmp_path / "fixed" / "config.yaml").read_text())["train"]["epochs"] == 34
    given = _train(balanced, tmp_path / "given")
    assert given.exit_code == 0 and yaml.safe_load((tmp_path / "given" / "config.yaml").read_text())["train"]["epochs"] == 1


def test_each_trainer_has_its_default_batch_size(three_class_masks: Path, balanced: Path, tmp_path: Path):
    quick = ["--weights", "none", "--epochs", "1", "--image-size", "32", "--preset", "none", "--workers", "0", "--device", "cpu"]
    runner.invoke(app, ["train", str(balanced), *quick, "--run-dir", str(tmp_path / "cls")])
    runner.invoke(app, ["train", str(three_class_masks), "--plugin", "unet", "--arch", "unet-resnet18", *quick, "--run-dir", str(tmp_path / "seg")])
    sizes = [yaml.safe_load((tmp_path / run / "config.yaml").read_text())["options"]["batch_size"] for run in ("cls", "seg")]
    assert sizes == [64, 16]
