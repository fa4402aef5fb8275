"""Metrics, the metrics log and the PNG plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from PIL import Image

from prep.engine.logbook import MetricsLog
from prep.builtin_tasks.classification.metrics import ConfusionMatrix
from prep.builtin_tasks.classification.plots import plot_confusion
from prep.engine.plots import plot_curves


def test_confusion_matrix_accuracy_and_per_class():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    matrix.update(logits, torch.tensor([1, 2]))
    assert matrix.as_lists() == [[1, 0, 0], [1, 1, 0], [0, 1, 2]]
    assert matrix.accuracy() == 4 / 6 and matrix.total == 6
    assert matrix.per_class_accuracy() == [1.0, 0.5, 2 / 3]
    assert ConfusionMatrix(2).per_class_accuracy() == [None, None] and ConfusionMatrix(2).accuracy() == 0.0


def test_metrics_log_writes_jsonl_and_csv_and_continues_after_resume(tmp_path: Path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.append({"epoch": 1, "train_loss": 0.9, "valid_acc": 0.6})
    log.append({"epoch": 2, "train_loss": 0.5, "valid_acc": 0.8, "lr": 0.01, "per_class": [0.7, 0.9]})
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[1]["per_class"] == [0.7, 0.9]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows[0]["lr"] == "" and rows[1]["lr"] == "0.01" and "per_class" not in rows[0]
    resumed = MetricsLog(tmp_path, tensorboard=False)
    resumed.append({"epoch": 3, "train_loss": 0.4, "valid_acc": 0.85})
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3]
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 3


def test_tensorboard_gets_every_number_and_each_class(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, classes=["cat", "dog"])
    for epoch, acc in ((1, 0.75), (2, 0.875)):
        log.append({"epoch": epoch, "valid_acc": acc, "backbone_frozen": epoch == 1, "per_class_acc": [acc, None],
                    "confusion": [[3, 1], [0, 0]], "status": "text is not a scalar"})
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["backbone_frozen", "per_class_acc/cat", "valid_acc"]
    assert [(e.step, e.value) for e in events.Scalars("valid_acc")] == [(1, 0.75), (2, 0.875)]
    assert [e.value for e in events.Scalars("per_class_acc/cat")] == [0.75, 0.875]


def test_plots_are_pngs(tmp_path: Path):
    records = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "train_acc": 0.5 + e / 10, "valid_acc": 0.45 + e / 10} for e in (1, 2, 3)]
    curves = plot_curves(records, tmp_path / "curves.png")
    confusion = plot_confusion([[40, 2], [5, 33]], ["cat", "dog"], tmp_path / "confusion.png")
    for path in (curves, confusion):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 300
