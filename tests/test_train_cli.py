"""prep train with the built-in resnet-finetune trainer, on CPU, through the CLI and the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from prep.cli import app
from prep.training import TrainOptions, train

runner = CliRunner()


@pytest.fixture(scope="module")
def split_sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train") / "dogsandcats"
    assert runner.invoke(app, ["sample", str(root), "--n", "100", "--seed", "2"]).exit_code == 0
    assert runner.invoke(app, ["split", str(root)]).exit_code == 0
    return root


def test_split_stats_train_in_one_directory_needs_no_dataset_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert runner.invoke(app, ["sample", "dogsandcats", "--n", "100", "--seed", "2"]).exit_code == 0
    assert runner.invoke(app, ["split", "dogsandcats"]).exit_code == 0
    assert runner.invoke(app, ["stats", "--workers", "1"]).exit_code == 0
    result = runner.invoke(app, [
        "train", "--plugin", "resnet-finetune", "--epochs", "2", "--image-size", "48", "--batch-size", "16",
        "--workers", "0", "--lr", "0.002", "--optimizer", "adam", "--scheduler", "none", "--run-dir", "runs/first", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["normalization"] == "stats.json"
    assert summary["final_valid_acc"] > 0.7  # chance is 0.5
    written = json.loads((work / "runs" / "first" / "summary.json").read_text())
    assert written["best"].endswith("best.pt") and Path(written["last"]).exists()


def test_local_weights_load_into_the_body_and_the_head_is_new(split_sample: Path, tmp_path: Path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=1000)
    weights = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), weights)
    from prep_trainers.resnet_finetune import ResNetFinetune

    model, head = ResNetFinetune().build_model(2, TrainOptions(arch="resnet18", weights=str(weights)))
    assert head.out_features == 2 and model.fc is head
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)


def test_weights_of_another_architecture_are_a_clear_error(tmp_path: Path):
    from prep_trainers.resnet_finetune import ResNetFinetune, WeightsError

    weights = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), weights)
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        ResNetFinetune().build_model(2, TrainOptions(arch="resnet18", weights=str(weights)))


def test_resume_continues_a_run(split_sample: Path, tmp_path: Path):
    options = dict(epochs=2, image_size=32, batch_size=32, workers=0, lr=0.002, optimizer="adam", scheduler="none", run_dir=tmp_path / "run")
    first = train(split_sample, TrainOptions(**options, max_steps=5))
    assert first["status"] == "max-steps" and first["epochs"] == 1
    second = train(split_sample, TrainOptions(**options, resume=True))
    assert second["status"] == "completed" and second["epochs"] == 2 and second["steps"] == 10


def test_train_errors_are_messages(split_sample: Path):
    result = runner.invoke(app, ["train", str(split_sample), "--resume"])
    assert result.exit_code == 2 and "--run-dir" in result.output
    result = runner.invoke(app, ["train", str(split_sample), "--plugin", "resnet-finetuen", "--epochs", "1"])
    assert result.exit_code == 1 and "Did you mean 'resnet-finetune'" in result.output
    result = runner.invoke(app, ["train", str(split_sample), "--arch", "resnet9000", "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 1 and "resnet9000" in result.output and "Traceback" not in result.output


def test_every_package_is_listed_in_pyproject():
    import tomllib

    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "prep").rglob("__init__.py")}
    assert found | {"prep_trainers"} == listed


@pytest.fixture(scope="module")
def trained_run(split_sample: Path, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    summary = train(split_sample, TrainOptions(epochs=2, image_size=48, batch_size=16, workers=0, lr=0.002, optimizer="adam", scheduler="none", run_dir=run_dir))
    return run_dir, summary


def test_evaluate_reports_acc_and_draws_the_confusion_matrix(split_sample: Path, trained_run, tmp_path: Path):
    run_dir, summary = trained_run
    png = tmp_path / "confusion.png"
    result = runner.invoke(app, ["evaluate", str(run_dir / "last.pt"), str(split_sample), "--split", "val", "--workers", "0", "--out", str(png), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["acc"] == pytest.approx(summary["final_valid_acc"])  # the same model, the same data
    assert metrics["images"] == 40 and set(metrics["per_class_acc"]) == {"cat", "dog"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_writes_csv_and_a_kaggle_submission(split_sample: Path, trained_run, tmp_path: Path):
    import csv

    run_dir, _ = trained_run
    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(run_dir / "best.pt"), str(split_sample / "test1"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 25 and {r["label"] for r in rows} <= {"cat", "dog"}
    assert all(abs(float(r["cat"]) + float(r["dog"]) - 1) < 1e-4 for r in rows)
    submission = tmp_path / "submission.csv"
    result = runner.invoke(app, ["predict", str(run_dir / "best.pt"), str(split_sample / "test1"), "--out", str(submission), "--kaggle-submission"])
    assert result.exit_code == 0, result.output
    lines = submission.read_text().splitlines()
    assert lines[0] == "id,label" and len(lines) == 26
    ids = sorted(int(line.split(",")[0]) for line in lines[1:])
    assert ids == list(range(1, 26))
    by_id = {line.split(",")[0]: float(line.split(",")[1]) for line in lines[1:]}
    by_file = {Path(r["file"]).stem: float(r["dog"]) for r in rows}
    assert all(abs(by_id[k] - by_file[k]) < 1e-5 for k in by_id)  # label = P(dog)


def test_predict_and_evaluate_errors(tmp_path: Path, trained_run):
    run_dir, _ = trained_run
    missing = runner.invoke(app, ["predict", str(run_dir / "best.pt"), str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "neither an image nor a folder" in missing.output
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    foreign = runner.invoke(app, ["evaluate", str(tmp_path / "foreign.pt"), str(tmp_path)])
    assert foreign.exit_code == 1 and "not a prep checkpoint" in foreign.output
