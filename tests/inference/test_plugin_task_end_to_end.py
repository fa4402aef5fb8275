"""A task and trainers that exist only in a third party's plugin, through every command, with
no change to prep: train (and resume among the files the plugin wrote), evaluate, predict,
lr-find with targets that are a dict, and a collate function that asks for the classes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prep.cli import app
from prep.testing import make_classification_dataset

from conftest import install_fake_plugin

runner = CliRunner()

THIRD_PARTY = '''
import json
from pathlib import Path

import prep


class MacroF1:
    """Counts per class, summed; compute gives the macro F1 and, for validation, per class."""

    def __init__(self, classes, train):
        import torch

        self.train = train
        self.counts = {"confusion": torch.zeros((len(classes), len(classes)), dtype=torch.int64)}

    def update(self, outputs, targets):
        if targets.ndim == 2:
            targets = targets.argmax(dim=1)
        matrix = prep.ConfusionMatrix.of(self.counts["confusion"])
        matrix.update(outputs, targets)
        self.counts["confusion"] = matrix.matrix

    def compute(self):
        m = self.counts["confusion"].double()
        tp, called, truth = m.diag(), m.sum(0), m.sum(1)
        f1 = [float(2 * t / (c + r)) if c + r else None for t, c, r in zip(tp, called, truth)]
        known = [v for v in f1 if v is not None]
        macro = sum(known) / len(known) if known else None
        return {"f1": macro} if self.train else {"f1": macro, "per_class_f1": f1}


class F1Task:
    """Class folders, scored by macro F1; everything else as prep's classification."""

    name = "colour-f1"
    layout = "classification"
    collate = "uint8-channels-last"
    metric_names = ("f1",)
    monitor = "valid_f1"
    mode = "max"

    def __init__(self):
        self.base = prep.ClassificationTask()

    def classes(self, root):
        return self.base.classes(root)

    def dataset(self, root, split, *, classes, transform, decode_side):
        assert split in ("train", "valid", "test"), split  # always a split's name
        return self.base.dataset(root, split, classes=classes, transform=transform, decode_side=decode_side)

    def targets(self, batch, classes, origin):
        return self.base.targets(batch, classes, origin)

    def loss(self, config, classes, *, train):
        return self.base.loss(config, classes, train=train)

    def metrics(self, classes, *, train):
        return MacroF1(classes, train)

    def pictures(self, records, classes, run_dir):
        from prep.util.figures import pyplot

        plt = pyplot()
        figure, axis = plt.subplots()
        axis.plot([r["epoch"] for r in records], [r["valid_f1"] or 0 for r in records])
        axis.set_title("macro F1")
        figure.savefig(run_dir / "f1.png")
        plt.close(figure)
        return [run_dir / "f1.png"]


class DictTargetsTask(F1Task):
    """The same data, its targets handed on as a dict (as a multi-head task would)."""

    name = "dict-targets"

    def targets(self, batch, classes, origin):
        return {"label": self.base.targets(batch, classes, origin)}

    def loss(self, config, classes, *, train):
        import torch

        return lambda outputs, targets: torch.nn.functional.cross_entropy(outputs.float(), targets["label"])

    def metrics(self, classes, *, train):
        inner = MacroF1(classes, train)

        class Unwrapped:
            counts = inner.counts

            def update(self, outputs, targets):
                inner.update(outputs, targets["label"])
                self.counts.update(inner.counts)

            def compute(self):
                return inner.compute()

        return Unwrapped()


class Embeddings(F1Task):
    """A model whose outputs are embeddings, not class scores, and no predict method."""

    name = "embeddings"


def tiny_model(request, outputs=None):
    import torch

    head = torch.nn.Linear(8, outputs or request.num_classes)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return torch.nn.Sequential(body, head), head


class F1Trainer(prep.Trainer):
    task = "colour-f1"
    collate = "one-hot"

    def build_model(self, request):
        return tiny_model(request)

    def recipe(self, name, request):
        return prep.TrainConfig(epochs=2, lr=0.01, optimizer="adam", scheduler="none", preset="none")


class DictTrainer(F1Trainer):
    task = "dict-targets"
    collate = None

    def recipe(self, name, request):
        return prep.TrainConfig(epochs=2, lr=0.01, optimizer="adam", scheduler="none", preset="none", clip_grad_norm=1.0)


class EmbeddingTrainer(F1Trainer):
    task = "embeddings"
    collate = None

    def build_model(self, request):
        return tiny_model(request, outputs=5)

    def loss(self, config, classes):
        return lambda outputs, targets: outputs.float().pow(2).mean()


class OneHot:
    """Targets as class probabilities: it must know how many classes there are."""

    def __init__(self, classes=None):
        self.classes = classes

    def with_classes(self, classes):
        return OneHot(classes)

    def __call__(self, samples):
        import torch

        batch = prep.uint8_channels_last_collate(samples)
        return prep.Batch(batch.inputs, torch.nn.functional.one_hot(batch.targets, len(self.classes)).float(), batch.skipped)


@prep.hookimpl
def register_tasks(register):
    register("colour-f1", F1Task())
    register("dict-targets", DictTargetsTask())
    register("embeddings", Embeddings())


@prep.hookimpl
def register_trainers(register):
    register("f1-cnn", F1Trainer())
    register("dict-cnn", DictTrainer())
    register("embedding-cnn", EmbeddingTrainer())


@prep.hookimpl
def register_collate_fns(register):
    register("one-hot", OneHot())


@prep.hookimpl
def on_epoch_end(run, metrics):
    if run.is_main:
        with open(Path(run.run_dir) / "hidden-events.jsonl", "a") as log:
            log.write(json.dumps({"epoch": metrics["epoch"], "valid_f1": metrics["valid_f1"]}) + "\\n")
'''


@pytest.fixture
def data(site: Path, tmp_path: Path) -> Path:
    from prep.plugins import reset_plugin_host

    install_fake_plugin(site, "thirdparty_tasks", THIRD_PARTY)
    reset_plugin_host()  # found now, through its entry point
    return make_classification_dataset(tmp_path / "data", ("amber", "blue", "cyan"), per_class=8, valid_per_class=4, size=24)


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_plugin_task_trains_resumes_among_its_own_files_evaluates_and_predicts(data: Path, tmp_path: Path):
    run = tmp_path / "run"
    summary = json.loads(_ok("train", str(data), "--plugin", "f1-cnn", "--workers", "0", "--image-size", "24", "--batch-size", "8",
                             "--run-dir", str(run), "--json"))
    assert summary["status"] == "completed" and summary["monitor"] == "valid_f1" and summary["best_valid_f1"] is not None
    assert (run / "f1.png").exists() and len((run / "hidden-events.jsonl").read_text().splitlines()) == 2
    # The task's picture and the plugin's log stay; the run resumes to more epochs among them.
    resumed = json.loads(_ok("train", "--resume", "--run-dir", str(run), "--epochs", "3", "--json"))
    assert resumed["epochs"] == 3 and len((run / "hidden-events.jsonl").read_text().splitlines()) == 3

    report = json.loads(_ok("evaluate", str(run / "best.pt"), str(data), "--workers", "0", "--json"))
    assert report["split"] == "valid" and report["images"] == 12 and report["f1"] == pytest.approx(resumed["best_valid_f1"])
    assert len(report["per_class_f1"]) == 3
    text = _ok("evaluate", str(run / "best.pt"), str(data), "--workers", "0", "--split", "train")
    assert text.splitlines()[0].startswith("train: f1 ") and "over 24 images" in text.splitlines()[0]

    images = data / "valid" / "cyan"
    out = tmp_path / "predictions.csv"
    _ok("predict", str(run / "best.pt"), str(images), "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and set(rows[0]) == {"file", "label", "amber", "blue", "cyan"}
    assert all(abs(sum(float(row[c]) for c in ("amber", "blue", "cyan")) - 1) < 1e-4 for row in rows)


def test_a_collate_function_learns_the_classes_of_the_run(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    from prep.engine.epoch import TrainStep

    seen = []
    forward = TrainStep.forward
    monkeypatch.setattr(TrainStep, "forward", lambda self, batch: seen.append(tuple(batch.targets.shape)) or forward(self, batch))
    _ok("train", str(data), "--plugin", "f1-cnn", "--workers", "0", "--image-size", "24", "--batch-size", "8",
        "--epochs", "1", "--run-dir", str(tmp_path / "run"))
    assert set(seen) == {(8, 3)}  # one-hot over the three classes: the collate function was told them
    assert "thirdparty_tasks" in sys.modules


def test_lr_find_on_a_task_whose_targets_are_a_dict(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torch

    clipped = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *args, **kwargs: clipped.append(1) or clip(*args, **kwargs))
    png = tmp_path / "lr.png"
    result = json.loads(_ok("lr-find", str(data), "--plugin", "dict-cnn", "--workers", "0", "--image-size", "24", "--batch-size", "8",
                            "--steps", "12", "--out", str(png), "--json"))
    assert result["steps"] >= 5 and png.read_bytes()[:4] == b"\x89PNG"
    assert all(loss == loss for loss in result["losses"])  # no NaN: the dict reached the device and the loss
    # The range test runs the training step itself, with the recipe's gradient clipping.
    assert len(clipped) == result["steps"]


def test_predict_refuses_in_one_line_a_model_whose_outputs_are_not_class_scores(data: Path, tmp_path: Path):
    _ok("train", str(data), "--plugin", "embedding-cnn", "--workers", "0", "--image-size", "24", "--epochs", "1",
        "--monitor", "valid_loss", "--run-dir", str(tmp_path / "run"))
    result = runner.invoke(app, ["predict", str(tmp_path / "run" / "best.pt"), str(data / "valid"), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "not class scores" in result.output and "predict method" in result.output
    assert not (tmp_path / "p.csv").exists()
