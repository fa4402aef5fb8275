"""Multi-label classification through the CLI, from a Planet-shaped download to a Kaggle
submission, and a third party's trainer on the same task with no change to the engine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import prep
from prep.builtin_tasks.multilabel.predict import read_submission
from prep.cli import app
from prep.testing import installed_plugin, make_multilabel_dataset, train_briefly

runner = CliRunner()


def _ok(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def planet(tmp_path_factory) -> dict[str, Path]:
    """``prep sample --kind multilabel``, split and trained for three epochs at 32 px."""
    base = tmp_path_factory.mktemp("planet")
    _ok(["sample", str(base / "planet"), "--kind", "multilabel", "--n", "60"])
    _ok(["split", str(base / "planet"), "--labels", "train_v2.csv", "--out", str(base / "data"), "--mode", "copy"])
    _ok(["stats", str(base / "data")])
    train = _ok([
        "train", str(base / "data"), "--weights", "none", "--epochs", "3", "--image-size", "32", "--batch-size", "16",
        "--workers", "0", "--device", "cpu", "--run-dir", str(base / "run"), "--json",
    ])
    return {"base": base, "data": base / "data", "run": base / "run", "summary": json.loads(train.stdout), "test": base / "planet" / "test-jpg"}


def test_the_sample_is_a_planet_download(planet):
    raw = planet["base"] / "planet"
    rows = list(csv.reader((raw / "train_v2.csv").read_text().splitlines()))
    assert rows[0] == ["image_name", "tags"] and len(rows) == 61
    weather = {"clear", "haze", "partly_cloudy", "cloudy"}
    for name, tags in rows[1:]:
        assert (raw / "train-jpg" / f"{name}.jpg").is_file() or (planet["data"] / "train" / "images" / f"{name}.jpg").is_file()
        assert len(weather & set(tags.split())) == 1  # one weather tag each, as in Planet
    assert len(list((raw / "test-jpg").glob("test_*.jpg"))) == 15


def test_stats_counts_tags_and_pairs(planet):
    stats = json.loads((planet["data"] / "stats.json").read_text())
    assert stats["tags"] == sorted(stats["tags"]) and "primary" in stats["tags"]
    split = stats["images_per_split"]
    assert split["train"] + split["valid"] == 60 and 11 <= split["valid"] <= 13  # a fifth, as the tags allow
    index = stats["tags"].index("primary")
    assert stats["co_occurrence"][index][index] == stats["splits"]["train"]["primary"]
    assert 1 <= stats["tags_per_image"]["mean"] <= 6
    result = _ok(["stats", str(planet["data"])])
    assert "Images holding each tag, per split" in result.output and "Most frequent pairs" in result.output


def test_training_monitors_map_and_keeps_tuned_thresholds_in_the_checkpoint(planet):
    summary = planet["summary"]
    assert summary["status"] == "completed" and summary["monitor"] == "valid_map"
    records = [json.loads(line) for line in (planet["run"] / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["valid_map"] <= 1 and 0 <= r["valid_f2"] <= 1 and 0 <= r["train_f1"] <= 1 for r in records)
    state = torch.load(planet["run"] / "best.pt", map_location="cpu", weights_only=True)
    assert state["task"] == "multilabel"
    assert len(state["task_state"]["thresholds_f1"]) == len(state["classes"])
    best = max(records, key=lambda r: r["valid_map"])
    assert state["task_state"]["thresholds_f1"] == best["thresholds_f1"]  # those of the epoch best.pt holds
    assert state["config"]["label_smoothing"] == 0.0  # the modern recipe does not smooth tags
    assert (planet["run"] / "tags.png").is_file() and (planet["run"] / "curves.png").is_file()


def test_evaluate_reports_every_tag_and_draws_them(planet, tmp_path: Path):
    result = _ok(["evaluate", str(planet["run"] / "best.pt"), str(planet["data"]), "--json", "--out", str(tmp_path / "tags.png")])
    report = json.loads(result.stdout)
    assert report["split"] == "valid" and report["images"] == json.loads((planet["data"] / "stats.json").read_text())["images_per_split"]["valid"]
    assert set(report["per_tag"]) == set(torch.load(planet["run"] / "best.pt", weights_only=True)["classes"])
    assert report["thresholds"] == "tuned for each tag's F1 on the validation split"
    assert all(0 <= report[k] <= 1 for k in ("f1", "f2", "macro_f1", "map"))
    assert Path(report["tags_png"]).is_file()
    fixed = json.loads(_ok(["evaluate", str(planet["run"] / "best.pt"), str(planet["data"] / "valid"), "--json", "--threshold", "0.5", "--out", str(tmp_path / "t.png")]).stdout)
    assert fixed["thresholds"] == "--threshold 0.5" and {s["threshold"] for s in fixed["per_tag"].values()} == {0.5}
    words = _ok(["evaluate", str(planet["run"] / "best.pt"), str(planet["data"]), "--out", str(tmp_path / "w.png")]).output
    assert "mAP" in words and "primary: F1" in words


def test_predict_writes_a_planet_submission_and_probabilities(planet, tmp_path: Path):
    result = _ok(["predict", str(planet["run"] / "best.pt"), str(planet["test"]), "--kaggle-submission", "--out", str(tmp_path / "submission.csv")])
    assert "thresholds tuned for each tag's F1" in result.output
    submission = read_submission(tmp_path / "submission.csv")
    classes = set(torch.load(planet["run"] / "best.pt", weights_only=True)["classes"])
    assert set(submission) == {p.stem for p in planet["test"].glob("*.jpg")}
    assert all(set(tags) <= classes for tags in submission.values())
    flip = _ok(["predict", str(planet["run"] / "best.pt"), str(planet["test"]), "--tta", "flip", "--out", str(tmp_path / "p.csv")])
    assert "Wrote 15 predictions" in flip.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    for row in rows:
        probabilities = [float(row[c]) for c in sorted(classes)]
        assert all(0 <= p <= 1 for p in probabilities)
        assert abs(sum(probabilities) - 1) > 1e-3 or len(classes) == 1  # sigmoids, not a softmax
    # The ensemble of a model with itself predicts what the model does.
    _ok(["predict", str(planet["run"] / "best.pt"), str(planet["run"] / "best.pt"), str(planet["test"]), "--out", str(tmp_path / "e.csv")])
    _ok(["predict", str(planet["run"] / "best.pt"), str(planet["test"]), "--out", str(tmp_path / "one.csv")])
    ensemble, one = list(csv.DictReader((tmp_path / "e.csv").open())), list(csv.DictReader((tmp_path / "one.csv").open()))
    assert [r["tags"] for r in ensemble] == [r["tags"] for r in one]
    for a, b in zip(ensemble, one):
        assert all(abs(float(a[c]) - float(b[c])) < 1e-5 for c in classes)


def test_export_and_lr_find_take_a_multilabel_model(planet, tmp_path: Path):
    result = _ok(["export", str(planet["run"] / "best.pt"), "--format", "torchscript", "--out", str(tmp_path / "model.pt")])
    assert "torchscript" in result.output
    model = torch.jit.load(str(tmp_path / "model.pt"))
    assert tuple(model(torch.rand(2, 3, 32, 32)).shape) == (2, len(torch.load(planet["run"] / "best.pt", weights_only=True)["classes"]))
    found = json.loads(_ok([
        "lr-find", str(planet["data"]), "--weights", "none", "--image-size", "32", "--batch-size", "16", "--workers", "0",
        "--steps", "20", "--out", str(tmp_path / "lr.png"), "--json",
    ]).stdout)
    assert len(found["losses"]) == found["steps"] and all(loss > 0 for loss in found["losses"][:5])  # BCE of the tags
    assert (tmp_path / "lr.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["predict", "{run}/best.pt", "{test}", "--threshold", "1.5", "--out", "{tmp}/x.csv"], "--threshold must be between 0 and 1 (exclusive), not 1.5"),
    (["predict", "{run}/best.pt", "{test}", "--threshold", "0", "--out", "{tmp}/x.csv"], "--threshold must be between 0 and 1 (exclusive), not 0"),
    (["evaluate", "{run}/best.pt", "{data}", "--threshold", "-0.1", "--out", "{tmp}/x.png"], "--threshold must be between 0 and 1 (exclusive), not -0.1"),
    (["evaluate", "{run}/best.pt", "{cats}", "--out", "{tmp}/x.png"], "The model is a multilabel model, but"),
    (["train", "{data}", "--weights", "none", "--loss", "ce", "--workers", "0", "--run-dir", "{tmp}/r"], "--loss 'ce' is not a multi-label loss"),
    (["train", "{data}", "--weights", "none", "--class-weights", "1,2", "--workers", "0", "--run-dir", "{tmp}/r"], "--class-weights gives 2 weights, but the dataset has"),
])
def test_bad_options_get_one_line_and_write_nothing(planet, tmp_path: Path, args: list[str], message: str):
    from prep.testing import make_classification_dataset

    cats = make_classification_dataset(tmp_path / "cats")
    filled = [a.format(run=planet["run"], test=planet["test"], data=planet["data"], tmp=tmp_path, cats=cats) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.png").exists() and not (tmp_path / "r").exists()


def test_a_third_party_trainer_trains_tags_with_no_change_to_the_engine(tmp_path: Path):
    class TagTrainer(prep.Trainer):
        """A tiny network that answers yes or no for each tag."""

        task = "multilabel"

        def build_model(self, request):
            assert request.task == "multilabel"
            return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, request.num_classes))

    class Registers:
        @prep.hookimpl
        def register_trainers(self, register):
            register("tags", TagTrainer())

    data = make_multilabel_dataset(tmp_path / "data", per_split={"train": 24, "valid": 12})
    with installed_plugin(Registers(), "tag-plugin"):
        summary = train_briefly("tags", data, tmp_path / "run", epochs=8, lr=0.02, optimizer="adam")
        assert summary["status"] == "completed" and summary["monitor"] == "valid_map"
        records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["valid_map"] > records[0]["valid_map"] and records[-1]["valid_map"] > 0.7  # three colours, learnt
        evaluated = json.loads(_ok(["evaluate", str(tmp_path / "run" / "best.pt"), str(data), "--json", "--out", str(tmp_path / "t.png")]).stdout)
        assert set(evaluated["per_tag"]) == {"red", "blue", "green"}
        classification = runner.invoke(app, ["train", str(prep.testing.make_classification_dataset(tmp_path / "cats")), "--plugin", "tags", "--workers", "0", "--run-dir", str(tmp_path / "r2")])
        assert classification.exit_code == 1 and "trains multilabel, but" in classification.output


def test_a_resumed_run_keeps_the_tuned_thresholds_of_an_uninterrupted_one(tmp_path: Path):
    data = make_multilabel_dataset(tmp_path / "data", per_split={"train": 24, "valid": 12})
    options = dict(epochs=3, batch_size=8, lr=0.01, optimizer="adam", scheduler="none")
    whole = train_briefly("resnet-finetune", data, tmp_path / "whole", **options)
    stopped = train_briefly("resnet-finetune", data, tmp_path / "resumed", **options, max_steps=3)
    assert stopped["status"] == "max-steps" and stopped["epochs"] == 1
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["task_state"]["thresholds_f1"]
    resumed = train_briefly("resnet-finetune", data, tmp_path / "resumed", **options, resume=True)
    assert resumed["status"] == whole["status"] == "completed"
    a = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "best.pt", weights_only=True)
    assert a["task_state"] == b["task_state"] and a["best_epoch"] == b["best_epoch"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_evaluate_reads_a_folder_of_images_with_the_competitions_csv(planet, tmp_path: Path):
    import shutil

    held = tmp_path / "held"
    held.mkdir()
    rows = list(csv.reader((planet["data"] / "valid" / "labels.csv").read_text().splitlines()))[1:]
    for name, _ in rows:
        shutil.copy(planet["data"] / "valid" / "images" / name, held / name)
    with (held / "truth.csv").open("w", newline="") as file:
        csv.writer(file).writerows([("image_name", "tags"), *((Path(name).stem, tags) for name, tags in rows)])
    on_folder = json.loads(_ok(["evaluate", str(planet["run"] / "best.pt"), str(held), "--json", "--out", str(tmp_path / "a.png")]).stdout)
    on_split = json.loads(_ok(["evaluate", str(planet["run"] / "best.pt"), str(planet["data"]), "--json", "--out", str(tmp_path / "b.png")]).stdout)
    assert on_folder["split"] == "held-out" and on_folder["images"] == on_split["images"]
    for key in ("f1", "f2", "macro_f1", "map", "loss"):
        assert on_folder[key] == pytest.approx(on_split[key]), key
    (held / "stray.png").write_bytes((held / rows[0][0]).read_bytes())
    stray = runner.invoke(app, ["evaluate", str(planet["run"] / "best.pt"), str(held), "--out", str(tmp_path / "c.png")])
    assert stray.exit_code != 0 and "stray.png has no row in" in stray.output and len(stray.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.png").exists()


@pytest.mark.slow
def test_torchrun_trains_tags_over_two_processes_and_keeps_one_set_of_thresholds(tmp_path: Path):
    import os
    import subprocess
    import sys

    data = make_multilabel_dataset(tmp_path / "data", per_split={"train": 16, "valid": 10})
    _ok(["stats", str(data), "--workers", "1"])  # under torchrun prep does not write stats.json itself
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "prep", "train",
         "--weights", "none", str(data), "--epochs", "2", "--image-size", "32", "--batch-size", "4", "--workers", "0",
         "--run-dir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["monitor"] == "valid_map"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    labels = list(csv.reader((data / "valid" / "labels.csv").read_text().splitlines()))[1:]
    held = {tag: sum(tag in tags.split() for _, tags in labels) for tag in ("red", "blue", "green")}
    assert all(r["per_tag_images"] == [held[t] for t in sorted(held)] for r in records)  # every validation image once
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    best = max(records, key=lambda r: r["valid_map"])
    assert state["task_state"]["thresholds_f1"] == best["thresholds_f1"]
