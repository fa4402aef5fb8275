"""prep train with the built-in resnet-finetune trainer, on CPU, through the CLI and the API."""

from __future__ import annotations

import json
from dataclasses import replace
import math
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from prep.cli import app
from prep.engine.checkpoint import load_checkpoint
from prep import ModelRequest
from prep.train.options import TrainOptions
from prep.train.run import train

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
        "train", "--weights", "none", "--plugin", "resnet-finetune", "--epochs", "2", "--image-size", "48", "--batch-size", "16",
        "--workers", "0", "--lr", "0.002", "--optimizer", "adam", "--scheduler", "none", "--run-dir", "runs/first", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # Trained from scratch: normalised with the dataset's own statistics, and the run says so first.
    assert summary["normalization"] == "dataset" and summary["setup"]["normalization_about"] == "stats.json, exact"
    assert "weights: none (random: trained from scratch)" in result.stderr
    assert "normalisation: dataset (stats.json, exact)" in result.stderr and "recipe: modern (adam lr 0.002" in result.stderr
    assert summary["final_valid_acc"] > 0.7  # chance is 0.5
    written = json.loads((work / "runs" / "first" / "summary.json").read_text())
    assert written["best"].endswith("best.pt") and Path(written["last"]).exists()


def test_local_weights_load_into_the_body_and_the_head_is_new(split_sample: Path, tmp_path: Path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=1000)
    weights = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), weights)
    from prep_trainers.resnet_finetune import ResNetFinetune

    model, head = ResNetFinetune().build_model(ModelRequest(("a", "b"), "resnet18", str(weights)))
    assert head.out_features == 2 and model.fc is head
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)


def test_weights_of_another_architecture_are_a_clear_error(tmp_path: Path):
    from prep.train.weights import WeightsError
    from prep_trainers.resnet_finetune import ResNetFinetune

    weights = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), weights)
    with pytest.raises(WeightsError, match="does not fit this architecture"):
        ResNetFinetune().build_model(ModelRequest(("a", "b"), "resnet18", str(weights)))


def test_resume_continues_a_run(split_sample: Path, tmp_path: Path):
    options = dict(epochs=2, image_size=32, batch_size=32, workers=0, lr=0.002, optimizer="adam", scheduler="none", weights="none", run_dir=tmp_path / "run")
    first = train(split_sample, TrainOptions(**options, max_steps=5))
    assert first["status"] == "max-steps" and first["epochs"] == 1
    second = train(split_sample, TrainOptions(**options, resume=True))
    assert second["status"] == "completed" and second["epochs"] == 2 and second["steps"] == 10


def test_ctrl_c_then_resume_with_only_the_run_folder(split_sample: Path, tmp_path: Path):
    import os
    import signal

    from prep.hookspecs import hookimpl
    from prep.plugins import temporary_plugin

    class CtrlCAfterFirstEpoch:
        @hookimpl
        def on_epoch_end(self, run, metrics):
            if metrics["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C; stops after the next step

    run_dir = tmp_path / "run"
    with temporary_plugin(CtrlCAfterFirstEpoch(), "test-ctrl-c"):
        first = runner.invoke(app, [
            "train", "--weights", "none", str(split_sample), "--epochs", "2", "--image-size", "32", "--batch-size", "16", "--workers", "0",
            "--lr", "0.003", "--optimizer", "adam", "--scheduler", "none", "--run-dir", str(run_dir),
        ])
    assert first.exit_code == 130, first.output  # so that `prep train && prep export` stops
    assert "interrupted: 1 epoch in " in first.output
    assert f"Continue it with: prep train --resume --run-dir {run_dir}" in " ".join(first.output.split())
    assert load_checkpoint(run_dir / "last.pt")["partial_epoch"]["batches"] == 1

    # What prep writes into the run folder meanwhile keeps it resumable: an export, an evaluation's picture.
    assert runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "torchscript"]).exit_code == 0
    assert (run_dir / "best.torchscript.pt").is_file()
    assert runner.invoke(app, ["evaluate", str(run_dir / "best.pt"), str(split_sample), "--out", str(run_dir / "confusion-valid.png")]).exit_code == 0
    # No dataset and no options: the run folder's config.yaml supplies them.
    second = runner.invoke(app, ["train", "--resume", "--run-dir", str(run_dir), "--json"])
    assert second.exit_code == 0, second.output
    assert "resuming: from last.pt, after epoch 1 of 2" in " ".join(second.stderr.split())
    summary = json.loads(second.stdout)
    assert summary["status"] == "completed" and summary["epochs"] == 2
    state = load_checkpoint(run_dir / "last.pt")
    assert (state["config"]["lr"], state["config"]["optimizer"], state["options"]["image_size"]) == (0.003, "adam", 32)


def test_the_summary_line_of_a_run_stopped_before_any_validation():
    from prep.cli.train import _describe

    line = _describe({"status": "interrupted", "epochs": 0, "best_valid_acc": None, "final_valid_acc": None,
                      "normalization": "dataset", "run_dir": "runs/x", "monitor": "valid_acc"})
    assert line == ("interrupted: 0 epochs, best valid_acc n/a, final n/a; run in runs/x\n"
                    "Continue it with: prep train --resume --run-dir runs/x")


def test_train_errors_are_messages(split_sample: Path):
    result = runner.invoke(app, ["train", str(split_sample), "--resume"])
    assert result.exit_code == 2 and "--run-dir" in result.output
    result = runner.invoke(app, ["train", str(split_sample), "--plugin", "resnet-finetuen", "--epochs", "1"])
    assert result.exit_code == 2 and "Did you mean 'resnet-finetune'" in result.output
    result = runner.invoke(app, ["train", "--weights", "none", str(split_sample), "--collate", "uint8-channel-last", "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 2 and "Did you mean 'uint8-channels-last'" in result.output
    result = runner.invoke(app, ["train", "--weights", "none", str(split_sample), "--amp", "fp8", "--epochs", "1", "--workers", "0", "--run-dir", str(split_sample.parent / "amp")])
    assert result.exit_code == 2 and "--amp must be one of auto, bf16, fp16, off" in result.output
    result = runner.invoke(app, ["train", "--weights", "none", str(split_sample), "--arch", "resnet9000", "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 2 and "--arch must be resnet18, resnet34, resnet50, another torchvision classifier or timm:NAME, not 'resnet9000'" in result.output
    assert not (Path("runs")).exists()  # refused before anything was written


def test_every_package_is_listed_in_pyproject():
    import tomllib

    root = Path(__file__).parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "prep").rglob("__init__.py")}
    assert found | {"prep_trainers"} == listed


@pytest.fixture(scope="module")
def trained_run(split_sample: Path, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    summary = train(split_sample, TrainOptions(epochs=2, image_size=48, batch_size=16, workers=0, lr=0.002, optimizer="adam", scheduler="none", weights="none", run_dir=run_dir))
    return run_dir, summary


def test_evaluate_reports_acc_and_draws_the_confusion_matrix(split_sample: Path, trained_run, tmp_path: Path):
    run_dir, summary = trained_run
    png = tmp_path / "confusion.png"
    result = runner.invoke(app, ["evaluate", str(run_dir / "last.pt"), str(split_sample), "--split", "val", "--workers", "0", "--out", str(png), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["acc"] == pytest.approx(summary["final_valid_acc"])  # the same model, the same data
    assert metrics["images"] == 40 and set(metrics["per_class"]) == {"cat", "dog"} and "top5_acc" not in metrics
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without DATA: the dataset the checkpoint was trained on.
    recorded = runner.invoke(app, ["evaluate", str(run_dir / "last.pt"), "--workers", "0", "--out", str(png), "--json"])
    assert recorded.exit_code == 0, recorded.output
    assert json.loads(recorded.stdout)["acc"] == metrics["acc"]


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


def test_config_yaml_repeats_a_run_and_options_given_win(split_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, [
        "train", "--weights", "none", str(split_sample), "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--workers", "0",
        "--optimizer", "sgd", "--lr", "0.01", "--scheduler", "none", "--seed", "7", "--run-dir", "first",
    ])
    assert first.exit_code == 0, first.output
    config = tmp_path / "first" / "config.yaml"
    assert config.read_text().startswith("# The resolved settings of this run. Repeat it with: prep train --config")
    again = runner.invoke(app, ["train", "--config", str(config), "--json"])
    assert again.exit_code == 0, again.output
    repeated = Path(json.loads(again.stdout)["run_dir"])
    assert repeated.parent == Path("runs")  # a new run beside, never over the first
    original = load_checkpoint(tmp_path / "first" / "last.pt")
    copy = load_checkpoint(repeated / "last.pt")
    assert all(torch.equal(original["model"][k], v) for k, v in copy["model"].items())  # CPU runs repeat exactly
    assert copy["config"] == original["config"] and copy["data"] == str(split_sample.resolve())
    longer = runner.invoke(app, ["train", "--config", str(config), "--epochs", "2", "--lr", "0.02", "--run-dir", "longer", "--json"])
    assert longer.exit_code == 0, longer.output
    changed = load_checkpoint(tmp_path / "longer" / "last.pt")["config"]
    assert (changed["epochs"], changed["lr"]) == (2, 0.02)
    assert {k: v for k, v in changed.items() if k not in ("epochs", "lr")} == {k: v for k, v in original["config"].items() if k not in ("epochs", "lr")}


def test_config_errors_are_messages(tmp_path: Path):
    missing = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "Cannot read" in missing.output and "nope.yaml" in missing.output
    (tmp_path / "other.yaml").write_text("epochs: 3\n")
    other = runner.invoke(app, ["train", "--config", str(tmp_path / "other.yaml")])
    assert other.exit_code == 1 and "not a run config written by prep train" in other.output
    (tmp_path / "edited.yaml").write_text("data: /d\noptions: {}\ntrain: {lr: fast, epochs: 3}\n")
    edited = runner.invoke(app, ["train", "--config", str(tmp_path / "edited.yaml")])
    assert edited.exit_code == 1 and "train setting lr must be like 0.001, not 'fast'" in edited.output


def test_every_engine_option_reaches_the_config():
    from prep.train.options import resolve_config
    from prep_trainers.resnet_finetune import ResNetFinetune

    given = dict(
        epochs=4, max_steps=9, lr=0.5, optimizer="rmsprop", scheduler="onecycle", weight_decay=0.2, warmup_epochs=1.5,
        label_smoothing=0.3, freeze_backbone=2, accumulate=3, clip_grad_norm=0.7, patience=5, min_delta=0.01,
        amp="bf16", compile=True, seed=11, device="cpu", monitor="valid_loss", monitor_mode="min",
    )
    request = ModelRequest(("a", "b"), "resnet18")
    config = resolve_config(ResNetFinetune(), TrainOptions(**given), request)
    assert (config.epochs, config.max_steps, config.lr, config.optimizer, config.scheduler) == (4, 9, 0.5, "rmsprop", "onecycle")
    assert (config.weight_decay, config.warmup_epochs, config.label_smoothing, config.freeze_backbone_epochs) == (0.2, 1.5, 0.3, 2)
    assert (config.accumulate, config.clip_grad_norm, config.early_stop_patience, config.early_stop_min_delta) == (3, 0.7, 5, 0.01)
    assert (config.amp, config.compile, config.seed, config.device) == ("bf16", True, 11, "cpu")
    assert (config.monitor, config.monitor_mode) == ("valid_loss", "min")
    untouched = resolve_config(ResNetFinetune(), TrainOptions(), request)
    # The recipe's `auto` augmentation is resolved for its 3 epochs.
    assert untouched == replace(ResNetFinetune().recipe("modern", request), preset="none")


def test_named_recipes():
    from prep.errors import UsageError
    from prep_trainers.resnet_finetune import ResNetFinetune

    trainer = ResNetFinetune()
    book = trainer.recipe(trainer.choose_recipe("book"), ModelRequest(("a", "b")))
    assert (book.optimizer, book.lr, book.momentum, book.scheduler, book.step_size, book.gamma, book.epochs) == ("sgd", 0.001, 0.9, "step", 7, 0.1, 25)
    modern = trainer.recipe(trainer.choose_recipe(None), ModelRequest(("a", "b"), weights="imagenet"))
    assert (modern.optimizer, modern.scheduler, modern.epochs, modern.backbone_lr_scale) == ("adamw", "cosine", 3, 0.1)
    with pytest.raises(UsageError, match="modern, book"):
        trainer.choose_recipe("fast")


def test_the_book_recipe_and_freezing_from_the_cli(split_sample: Path, tmp_path: Path):
    result = runner.invoke(app, [
        "train", "--weights", "none", str(split_sample), "--recipe", "book", "--epochs", "2", "--freeze-backbone", "1", "--image-size", "32",
        "--batch-size", "32", "--workers", "0", "--run-dir", str(tmp_path / "run"),
    ])
    assert result.exit_code == 0, result.output
    assert "epoch 1/2:" in result.output and "backbone frozen" in result.output and "epoch 2/2:" in result.output
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["config"]["optimizer"], state["config"]["scheduler"], state["config"]["freeze_backbone_epochs"]) == ("sgd", "step", 1)
    again = runner.invoke(app, ["train", "--weights", "none", str(split_sample), "--epochs", "1", "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert again.exit_code == 1 and "already holds a run" in again.output


@pytest.mark.slow  # two real torchrun processes
def test_torchrun_trains_one_model_over_two_processes(split_sample: Path, tmp_path: Path):
    """DDP on CPU (Gloo): both processes train, rank 0 alone writes, metrics cover every image once."""
    import os
    import subprocess
    import sys

    # Under torchrun prep will not compute stats.json itself: every rank would write it.
    assert runner.invoke(app, ["stats", str(split_sample), "--workers", "1"]).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "prep", "train",
         "--weights", "none", str(split_sample), "--epochs", "2", "--image-size", "32", "--batch-size", "8", "--workers", "0",
         "--run-dir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # one summary: rank 0 speaks for the job
    assert summary["status"] == "completed" and summary["epochs"] == 2
    train_images = sum(1 for _ in (split_sample / "train").rglob("*.jpg"))
    per_rank = math.ceil(train_images / 2)  # the order is padded so both ranks take as many steps
    assert summary["steps"] == 2 * math.ceil(per_rank / 8)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid_images = sum(1 for _ in (split_sample / "valid").rglob("*.jpg"))
    assert [sum(map(sum, r["confusion"])) for r in records] == [valid_images, valid_images]
    assert {p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")} == set()  # no stray temp files


def _reference_logits(run_dir: Path, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    from prep.inference.checkpoints import load_model

    model, state = load_model(run_dir / "best.pt", "cpu")
    mean, std = torch.tensor(state["mean"]).view(1, 3, 1, 1), torch.tensor(state["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((images - mean) / std), state["classes"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_torchscript_runs_without_prep_and_carries_its_classes(trained_run, tmp_path: Path):
    run_dir, _ = trained_run
    out = tmp_path / "model.pt"
    result = runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "torchscript", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    extra = {"classes.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    images = torch.rand(3, 3, 64, 64)  # another size and batch than the example: both stay dynamic
    expected, classes = _reference_logits(run_dir, images)
    assert torch.allclose(scripted(images), expected, atol=1e-5)
    assert json.loads(extra["classes.json"]) == classes == json.loads((tmp_path / "model.pt.classes.json").read_text())
    again = runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "torchscript", "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_export_onnx_matches_the_model(trained_run, tmp_path: Path):
    import numpy as np
    import onnx
    import onnxruntime

    run_dir, _ = trained_run
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    images = torch.rand(3, 3, 64, 64)
    expected, classes = _reference_logits(run_dir, images)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    assert np.allclose(logits, expected.numpy(), atol=1e-4)
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["classes"]) == classes


def test_export_errors_are_messages(trained_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    run_dir, _ = trained_run
    unknown = runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "tflite"])
    assert unknown.exit_code == 1 and "torchscript, onnx" in unknown.output
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    missing = runner.invoke(app, ["export", str(run_dir / "best.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert missing.exit_code == 1 and "pip install 'prep[export]'" in missing.output
    assert not (tmp_path / "m.onnx").exists()


def test_a_slow_rate_is_not_shown_as_zero():
    from prep.cli.train import rate

    assert (rate(0.42), rate(3.14159), rate(12.4), rate(12_345.6)) == ("0.42", "3.1", "12", "12,346")
