"""The engine's task seam and the public plugin API: tasks, trainers, losses, LR lambdas,
callbacks and the listing of what plugins registered, through the API and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import prep
from prep.cli import app
from prep.plugins import reset_plugin_host
from prep.testing import make_classification_dataset, make_segmentation_dataset, train_briefly

from conftest import install_fake_plugin, plugins_json

runner = CliRunner()

TINY_TRAINERS = '''
import torch
import prep


class Tiny(prep.Trainer):
    """A pooled linear model: the smallest classifier."""

    def build_model(self, request):
        head = torch.nn.Linear(3, request.num_classes)
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head), head

    def recipe(self, name, request):
        return prep.TrainConfig(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0, scheduler="none")


class SegmentationTrainer(Tiny):
    task = "segmentation"


class DetectionTrainer(Tiny):
    task = "detection"


@prep.hookimpl
def register_trainers(register):
    register("tiny", Tiny())
    register("seg-trainer", SegmentationTrainer())
    register("det-trainer", DetectionTrainer())


@prep.hookimpl
def register_lr_lambdas(register):
    register("halve-each-epoch", lambda epochs: (lambda epoch: 0.5 ** epoch))
'''


def _cli(args: list[str]):
    return runner.invoke(app, args)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- A toy segmentation task, trained through fit ------------------------------------------


class PixelMetrics:
    """Per-pixel confusion counts: pixel accuracy, the object's IoU, per-class IoU."""

    def __init__(self, num_classes: int) -> None:
        self.counts = {"confusion": torch.zeros((num_classes, num_classes), dtype=torch.int64)}

    def update(self, outputs, targets) -> None:
        matrix = prep.ConfusionMatrix.of(self.counts["confusion"])
        matrix.update(outputs.argmax(1).flatten(), targets.flatten())
        self.counts["confusion"] = matrix.matrix

    def compute(self) -> dict:
        m = self.counts["confusion"].double()
        tp, fp, fn = m.diag(), m.sum(0) - m.diag(), m.sum(1) - m.diag()
        iou = (tp / (tp + fp + fn)).tolist()
        return {"pixel_acc": float(tp.sum() / m.sum()), "iou": iou[1], "per_class_iou": iou}


class ToySegmentation:
    name = "toy-segmentation"
    layout = "segmentation"
    collate = "segmentation"
    metric_names = ("pixel_acc", "iou")
    monitor = "valid_iou"
    mode = "max"

    def classes(self, root):
        return ["background", "object"]

    def dataset(self, root, split, *, classes, transform, decode_side):
        from prep.data.datasets import SegmentationDataset

        return SegmentationDataset(root, split, transform=transform, decode_side=decode_side)

    def targets(self, batch, classes, origin):
        return batch.targets

    def loss(self, config, classes, *, train):
        return lambda outputs, targets: torch.nn.functional.cross_entropy(outputs.float(), targets)

    def metrics(self, classes, *, train):
        return PixelMetrics(len(classes))

    def pictures(self, records, classes, run_dir):
        from prep.engine.plots import plot_curves

        return [plot_curves(records, run_dir / "curves.png", metric="iou", title="IoU of the object")]


def test_fit_trains_a_toy_segmentation_task_on_cpu(tmp_path: Path):
    from prep.augment.presets import build_pipeline
    from prep.data.collate import segmentation_collate
    from prep.data.loader import create_loader
    from prep.engine.fit import fit

    data = make_segmentation_dataset(tmp_path / "data", per_split={"train": 16, "valid": 8})
    task = ToySegmentation()
    loaders = [
        create_loader(
            task.dataset(data, split, classes=[], transform=build_pipeline("none", 32, train=train, task="segmentation"), decode_side=None),
            8, train=train, collate_fn=segmentation_collate, workers=0,
        )
        for split, train in (("train", True), ("valid", False))
    ]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    heard = []

    class Listener:  # a plain callback object: no plugin host involved
        def on_epoch_end(self, run, metrics):
            heard.append((run.task, run.monitor, run.mode, metrics["epoch"]))

    config = prep.TrainConfig(epochs=4, lr=0.05, optimizer="adam", weight_decay=0.0, scheduler="none")
    summary = fit(
        model, *loaders, config, tmp_path / "run", task=task, classes=task.classes(data),
        mean=[0.2, 0.2, 0.2], std=[0.25, 0.25, 0.25], callbacks=[Listener()],
    )
    records = _records(tmp_path / "run")
    assert summary["status"] == "completed" and summary["best_valid_iou"] == max(r["valid_iou"] for r in records)
    assert "best_valid_acc" not in summary and records[-1]["valid_iou"] > 0.7  # the rectangles are learnt
    # Numbers are prefixed by their phase; the per-class list keeps its name.
    assert {"train_loss", "train_pixel_acc", "train_iou", "valid_loss", "valid_pixel_acc", "valid_iou", "per_class_iou"} <= set(records[-1])
    assert "valid_acc" not in records[-1] and "confusion" not in records[-1]
    assert heard == [("toy-segmentation", "valid_iou", "max", e) for e in (1, 2, 3, 4)]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0 and not (tmp_path / "run" / "confusion.png").exists()


def test_the_monitored_metric_and_its_direction_are_settings(tmp_path: Path):
    data = make_classification_dataset(tmp_path / "data")
    summary = train_briefly("resnet-finetune", data, tmp_path / "run", epochs=2, monitor="valid_loss")
    losses = [r["valid_loss"] for r in _records(tmp_path / "run")]
    assert summary["monitor"] == "valid_loss" and summary["best_valid_loss"] == min(losses)
    assert summary["best_epoch"] == 1 + losses.index(min(losses)) and "best_valid_acc" not in summary
    result = _cli(["train", "--weights", "none", str(data), "--monitor", "valid_f1", "--workers", "0", "--run-dir", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "--monitor must be one of valid_loss, valid_acc, valid_balanced_acc, valid_macro_f1, train_loss, train_acc" in result.output
    assert not (tmp_path / "bad").exists()


# -- Plugins through the CLI ------------------------------------------------------------------


def test_scheduler_lambda_uses_a_plugins_lr_lambda_through_the_cli(site: Path, tmp_path: Path):
    install_fake_plugin(site, "seamplugin_tiny", TINY_TRAINERS)
    reset_plugin_host()
    data = make_classification_dataset(tmp_path / "data")
    result = _cli([
        "train", str(data), "--plugin", "tiny", "--scheduler", "lambda:halve-each-epoch", "--lr", "0.1", "--epochs", "3",
        "--image-size", "16", "--workers", "0", "--run-dir", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    # Each record's lr is the one its epoch trained with: 0.1 x 0.5 ** (epoch - 1).
    assert [round(r["lr"], 6) for r in _records(tmp_path / "run")] == [0.1, 0.05, 0.025]
    typo = _cli(["train", str(data), "--plugin", "tiny", "--scheduler", "lambda:halve-each-epoc", "--workers", "0", "--run-dir", str(tmp_path / "typo")])
    assert typo.exit_code == 2 and "Did you mean 'halve-each-epoch'" in typo.output and not (tmp_path / "typo").exists()


MIXUP = '''
import torch
import prep

LOSS_CALLS = []


def mixup_collate(samples):
    """Every image mixed 70/30 with its neighbour in the batch, and so are the labels."""
    batch = prep.uint8_channels_last_collate(samples)
    n = len(batch.inputs)
    if n == 0:
        return batch
    one_hot = torch.nn.functional.one_hot(batch.targets, 2).float()
    order = torch.roll(torch.arange(n), 1)
    images = (0.7 * batch.inputs.float() + 0.3 * batch.inputs[order].float()).round().to(torch.uint8)
    return prep.Batch(images, 0.7 * one_hot + 0.3 * one_hot[order], batch.skipped)


class SoftTargetCrossEntropy:
    def __call__(self, outputs, targets):
        LOSS_CALLS.append((tuple(targets.shape), targets.dtype))
        return torch.sum(-targets * torch.log_softmax(outputs.float(), dim=1), dim=1).mean()


class MixupTrainer(prep.Trainer):
    """A small CNN trained on mixed-up images."""

    collate = "mixup"

    def build_model(self, request):
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(8, request.num_classes),
        )

    def recipe(self, name, request):
        return prep.TrainConfig(epochs=2, lr=0.01, optimizer="adam", scheduler="none")

    def loss(self, config, classes):
        return SoftTargetCrossEntropy()


@prep.hookimpl
def register_collate_fns(register):
    register("mixup", mixup_collate)


@prep.hookimpl
def register_trainers(register):
    register("mixup-cnn", MixupTrainer())
'''


def test_a_trainers_own_loss_trains_with_a_soft_label_mixup_collate_through_the_cli(site: Path, tmp_path: Path):
    install_fake_plugin(site, "seamplugin_mixup", MIXUP)
    reset_plugin_host()
    data = make_classification_dataset(tmp_path / "data", per_class=12)
    result = _cli([
        "train", str(data), "--plugin", "mixup-cnn", "--image-size", "16", "--batch-size", "8", "--workers", "0",
        "--run-dir", str(tmp_path / "run"), "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["epochs"] == 2
    calls = sys.modules["seamplugin_mixup"].LOSS_CALLS
    # The trainer's loss made every training step, on soft targets; validation used the task's.
    assert len(calls) == 2 * 3 and set(calls) == {((8, 2), torch.float32)}
    for record in _records(tmp_path / "run"):
        assert 0 <= record["train_acc"] <= 1 and 0 <= record["valid_acc"] <= 1


def test_a_classification_trainer_on_a_segmentation_split_stops_with_one_line(tmp_path: Path):
    data = make_segmentation_dataset(tmp_path / "data")
    result = _cli(["train", "--weights", "none", str(data), "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: The trainer 'resnet-finetune' trains classification and multilabel, but {data} is a segmentation dataset "
        f"(its train split has images/ and masks/ folders); use a segmentation trainer: --plugin unet."
    ]
    assert not (tmp_path / "run").exists() and not (data / "stats.json").exists()


def test_a_segmentation_trainer_on_a_classification_split_stops_with_one_line(site: Path, tmp_path: Path):
    install_fake_plugin(site, "seamplugin_tiny", TINY_TRAINERS)
    reset_plugin_host()
    data = make_classification_dataset(tmp_path / "data")
    result = _cli(["train", str(data), "--plugin", "seg-trainer", "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "The trainer 'seg-trainer' trains segmentation, but" in result.output
    assert "is a classification dataset (its train split has class folders); use a classification trainer: --plugin resnet-finetune or tiny." in result.output
    unknown = _cli(["train", str(data), "--plugin", "det-trainer", "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert unknown.exit_code == 2 and "Unknown task 'detection'. Registered: classification, multilabel, segmentation." in unknown.output
    assert not (tmp_path / "run").exists()


# -- Trainers ---------------------------------------------------------------------------------


def test_a_trainer_that_only_builds_a_model_trains_with_the_defaults(tmp_path: Path):
    class Minimal(prep.Trainer):
        def build_model(self, request):
            return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, request.num_classes))

    class Registers:
        @prep.hookimpl
        def register_trainers(self, register):
            register("minimal", Minimal())

    from prep.testing import installed_plugin

    data = make_classification_dataset(tmp_path / "data")
    with installed_plugin(Registers(), "minimal-plugin"):
        summary = train_briefly("minimal", data, tmp_path / "run")
        result = _cli(["train", str(data), "--plugin", "minimal", "--arch", "resnet50", "--workers", "0", "--run-dir", str(tmp_path / "other")])
    assert summary["status"] == "completed" and summary["classes"] == ["cat", "dog"]
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "arch: null" in config and "optimizer: adamw" in config  # TrainConfig's defaults
    assert result.exit_code == 2 and "This trainer has no choice of architecture; leave out --arch" in result.output
    assert "minimal" not in prep.trainers()  # gone with the block


def test_run_folders_are_named_after_the_architecture_actually_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = make_classification_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert _cli(["train", "--weights", "none", str(data), "--epochs", "1", "--image-size", "16", "--workers", "0"]).exit_code == 0
    (run,) = (p for p in (tmp_path / "runs").iterdir() if not p.is_symlink())  # beside runs/latest
    assert run.name.startswith("resnet-finetune-resnet18-") and (tmp_path / "runs" / "latest").resolve() == run
    assert "arch: resnet18" in (run / "config.yaml").read_text()


def test_a_registered_trainer_that_is_not_a_trainer_is_named(site: Path, tmp_path: Path):
    install_fake_plugin(site, "seamplugin_old", '''
import prep

class OldStyle:
    task = "classification"

@prep.hookimpl
def register_trainers(register):
    register("old-style", OldStyle())
''')
    reset_plugin_host()
    data = make_classification_dataset(tmp_path / "data")
    result = _cli(["train", str(data), "--plugin", "old-style", "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "The trainer 'old-style' (plugin 'seamplugin_old') is a OldStyle, not a prep.Trainer" in result.output


def test_train_help_lists_the_trainers_with_their_options(site: Path):
    install_fake_plugin(site, "seamplugin_tiny", TINY_TRAINERS)
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "prep", "train", "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "resnet-finetune (classification): torchvision classifiers" in text
    assert "--arch resnet18 (default), resnet34, resnet50. --recipe modern (default), book." in text
    assert "tiny (classification): A pooled linear model: the smallest classifier. --recipe default (default)." in text


# -- Listing and loading ----------------------------------------------------------------------

REGISTER_FAILS = '''
import prep

@prep.hookimpl
def register_tasks(register):
    raise RuntimeError("task table missing")
'''


def test_prep_plugins_shows_what_each_plugin_registered_and_register_time_failures(site: Path):
    install_fake_plugin(site, "seamplugin_tiny", TINY_TRAINERS, "2.0")
    install_fake_plugin(site, "seamplugin_fails", REGISTER_FAILS, "0.1")
    listed = plugins_json(site)
    plugins = {p["name"]: p for p in listed["plugins"]}
    assert plugins["seamplugin_tiny"]["registered"] == {"trainer": ["tiny", "seg-trainer", "det-trainer"], "LR lambda": ["halve-each-epoch"]}
    assert plugins["prep.builtin_tasks.classification.task"]["registered"] == {"task": ["classification"]}
    assert plugins["resnet-finetune"]["registered"] == {"trainer": ["resnet-finetune"]}
    trainers = {t["name"]: t for t in listed["trainers"]}
    assert trainers["resnet-finetune"]["architectures"] == ["resnet18", "resnet34", "resnet50"]
    assert trainers["resnet-finetune"]["default_arch"] == "resnet18" and trainers["resnet-finetune"]["recipes"] == ["modern", "book"]
    assert trainers["seg-trainer"]["task"] == "segmentation" and trainers["tiny"]["plugin"] == "seamplugin_tiny"
    # A failure while registering shows here, before anything tries to use the registry.
    assert {"name": "seamplugin_fails", "version": "seamplugin_fails 0.1", "stage": "register_tasks",
            "error": "RuntimeError: task table missing"} in listed["failures"]
    table = subprocess.run([sys.executable, "-m", "prep", "plugins"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(site), COLUMNS="200"))
    assert "trainer: tiny, seg-trainer, det-trainer" in table.stdout and "resnet18*, resnet34, resnet50" in table.stdout


def test_prep_verbose_shows_plugin_loading(site: Path):
    install_fake_plugin(site, "seamplugin_tiny", TINY_TRAINERS, "2.0")
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "prep", "-v", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "Loaded plugin 'seamplugin_tiny' (seamplugin_tiny 2.0) from entry point seamplugin_tiny in" in done.stderr
    assert "Loaded built-in plugin 'prep.builtin_tasks.classification.task'" in done.stderr
    quiet = subprocess.run([sys.executable, "-m", "prep", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert "Loaded" not in quiet.stderr


# -- The public API ---------------------------------------------------------------------------


def test_import_prep_offers_the_plugin_api_without_importing_torch():
    code = (
        "import sys, prep\n"
        "assert 'torch' not in sys.modules, 'import prep imported torch'\n"
        "names = [prep.Trainer, prep.ModelRequest, prep.TrainConfig, prep.hookimpl, prep.PrepError, prep.UsageError,\n"
        "         prep.PluginError, prep.trainers, prep.tasks, prep.collate_fns, prep.lr_lambdas, prep.splitters,\n"
        "         prep.label_parsers, prep.augmentation_presets, prep.Unit, prep.SplitRequest]\n"
        "assert 'torch' not in sys.modules, 'a registry look-up imported torch'\n"
        "for name in prep.__all__:\n"
        "    getattr(prep, name)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        prep.fit  # noqa: B018 - the engine's internals stay internal


def test_register_tasks(site: Path, tmp_path: Path):
    install_fake_plugin(site, "seamplugin_task", '''
import prep
from prep.builtin_tasks.classification.task import ClassificationTask


class Top1Loss(ClassificationTask):
    """Classification that keeps the best checkpoint by validation loss."""

    name = "classification-by-loss"
    monitor = "valid_loss"
    mode = "min"


class Tiny(prep.Trainer):
    task = "classification-by-loss"

    def build_model(self, request):
        import torch
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, request.num_classes))


@prep.hookimpl
def register_tasks(register):
    register("classification-by-loss", Top1Loss())


@prep.hookimpl
def register_trainers(register):
    register("tiny-by-loss", Tiny())
''')
    reset_plugin_host()
    assert prep.tasks().names() == ["classification", "classification-by-loss", "multilabel", "segmentation"]
    data = make_classification_dataset(tmp_path / "data")
    summary = train_briefly("tiny-by-loss", data, tmp_path / "run", epochs=2)
    assert summary["monitor"] == "valid_loss" and summary["best_valid_loss"] == min(r["valid_loss"] for r in _records(tmp_path / "run"))
