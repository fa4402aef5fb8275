"""A new user's first hour: every mistake gets one line naming the cause and the fix, exit 2
for a bad option value and 1 for other errors, nothing left behind by a command that
failed, machine-readable output that parses, and help for every option."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from conftest import jpeg_bytes, snapshot, write
from prep.cli import app
from prep.testing import make_classification_dataset

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A split dataset of two classes, 6 training and 2 validation images each, no stats.json."""
    return make_classification_dataset(tmp_path / "tiny", per_class=6, valid_per_class=2, size=24)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A checkpoint of a model whose classes are a and b (no dog)."""
    root = tmp_path_factory.mktemp("ab") / "data"
    for split, n in (("train", 6), ("valid", 2)):
        for c, name in enumerate(("a", "b")):
            for i in range(n):
                write(root / split / name / f"{i}.jpg", jpeg_bytes(len(split) * 100 + c * 10 + i, size=(24, 24)))
    run_dir = root.parent / "run"
    result = runner.invoke(app, [
        "train", str(root), "--weights", "none", "--epochs", "1", "--image-size", "16", "--batch-size", "6",
        "--workers", "0", "--run-dir", str(run_dir),
    ])
    assert result.exit_code == 0, result.output
    return run_dir / "best.pt"


def _train(data: Path, run_dir: Path, *extra: str):
    return runner.invoke(app, [
        "train", str(data), "--weights", "none", "--epochs", "1", "--image-size", "16", "--batch-size", "6",
        "--workers", "0", "--run-dir", str(run_dir), *extra,
    ])


# -- Before the split ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["stats", "train"])
def test_an_unsplit_download_is_named_with_the_command_that_sorts_it(tmp_path: Path, command: str):
    raw = tmp_path / "raw"
    for i in range(3):
        write(raw / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(raw / "train" / f"dog.{i}.jpg", jpeg_bytes(10 + i))
    before = snapshot(raw)
    extra = ["--weights", "none"] if command == "train" else []
    result = runner.invoke(app, [command, str(raw), *extra])
    assert result.exit_code == 1
    assert f"{raw / 'train'} holds unsorted images (such as" in result.output
    assert f"run prep split {raw} first" in result.output and len(result.output.strip().splitlines()) == 1
    assert snapshot(raw) == before  # no stats.json, no run folder


def test_a_folder_without_images_says_so(tmp_path: Path):
    write(tmp_path / "notes" / "a" / "readme.txt", b"hello")
    write(tmp_path / "notes" / "b" / "table.csv", b"1,2")
    result = runner.invoke(app, ["split", str(tmp_path / "notes")])
    assert result.exit_code == 1 and "No images found in" in result.output and "image extension" in result.output


def test_held_out_fractions_must_leave_something_for_train(flat_dataset: Path):
    before = snapshot(flat_dataset)
    result = runner.invoke(app, ["split", str(flat_dataset), "--valid", "0.5", "--test", "0.6"])
    assert result.exit_code == 2
    assert "--valid 0.5 and --test 0.6 leave nothing for train: their fractions add up to 1.1" in result.output
    assert snapshot(flat_dataset) == before


def test_a_preview_of_a_split_that_is_not_there_is_one_line(tiny: Path, tmp_path: Path):
    result = runner.invoke(app, ["augment", str(tiny), "--split", "test", "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "has no test split (it has train, valid); choose one with --split" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "p.png").exists()


def test_global_flags_work_after_the_command(flat_dataset: Path):
    result = runner.invoke(app, ["split", str(flat_dataset), "-q", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # quiet: no report, no bar


def test_a_bare_command_names_the_dataset_it_picked_and_split_names_the_one_it_replaces(tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    for root, offset in ((first, 0), (second, 500)):
        for i in range(6):
            write(root / "train" / f"cat.{i}.jpg", jpeg_bytes(offset + i, size=(24, 24)))
            write(root / "train" / f"dog.{i}.jpg", jpeg_bytes(offset + 100 + i, size=(24, 24)))
    assert runner.invoke(app, ["split", str(first), "--valid", "2"]).exit_code == 0

    result = runner.invoke(app, ["split", str(second), "--valid", "2"])
    assert result.exit_code == 0, result.output
    assert f"with no path, they use {second.resolve()}, instead of {first.resolve()}." in result.stderr

    result = runner.invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    assert f"Dataset: {second.resolve()}, the last one split from this folder" in result.stderr
    assert sum(json.loads(result.stdout)["splits"]["train"].values()) == 10
    assert (second / "stats.json").is_file() and not (first / "stats.json").exists()

    named = runner.invoke(app, ["stats", str(first)])  # a path given needs no such line
    assert named.exit_code == 0 and "Dataset:" not in named.stderr


# -- Bad option values: exit 2, nothing written --------------------------------------------------

@pytest.mark.parametrize(("extra", "message"), [
    (["--plugin", "resnet-finetuen"], "Did you mean 'resnet-finetune'"),
    (["--preset", "lite"], "Did you mean 'light'"),
    (["--collate", "uint8"], "uint8-channels-last"),
    (["--optimizer", "adamx"], "--optimizer must be one of sgd, adam, adamw, rmsprop, not 'adamx'"),
    (["--scheduler", "cosin"], "--scheduler must be one of"),
    (["--amp", "fp16"], "--amp fp16 needs a CUDA GPU"),
    (["--recipe", "fast"], "--recipe must be one of this trainer's modern, book"),
    (["--cache", "of"], "--cache must be one of auto, ram, disk, verify, off, not 'of'"),
])
def test_a_bad_option_value_exits_2_and_writes_nothing(tiny: Path, tmp_path: Path, extra: list[str], message: str):
    result = _train(tiny, tmp_path / "run", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists() and not (tiny / "stats.json").exists() and not (tiny / ".prep").exists()


def test_bf16_on_a_cpu_without_bfloat16_instructions_is_one_line(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import prep.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    result = _train(tiny, tmp_path / "run", "--amp", "bf16")
    assert result.exit_code == 2 and "--amp bf16 needs a CUDA GPU or a CPU with bfloat16 instructions" in result.output
    assert not (tmp_path / "run").exists()


def test_a_gpu_that_is_not_there_is_one_line(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = _train(tiny, tmp_path / "run", "--device", "cuda")
    assert result.exit_code == 2 and "this machine has no CUDA GPU" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


# -- The run folder ------------------------------------------------------------------------------

def test_a_run_folder_with_other_files_is_refused(tiny: Path, tmp_path: Path):
    write(tmp_path / "mine" / "thesis.tex", b"\\documentclass{article}")
    result = _train(tiny, tmp_path / "mine")
    assert result.exit_code == 1 and "holds files that are not a prep run's (such as thesis.tex)" in result.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_the_last_line_gives_the_time_and_the_next_step_and_a_finished_run_resumes_to_its_figures(tiny: Path, tmp_path: Path):
    first = _train(tiny, tmp_path / "run")
    assert first.exit_code == 0, first.output
    last = first.stdout.strip().splitlines()
    assert last[0].startswith("completed: 1 epoch in ") and " s, best valid_acc " in last[0]
    assert last[1] == f"Next: prep evaluate {tmp_path / 'run' / 'best.pt'} HELD_OUT_FOLDER, or prep predict {tmp_path / 'run' / 'best.pt'} IMAGES"
    again = runner.invoke(app, ["train", "--resume", "--run-dir", str(tmp_path / "run"), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["final_valid_acc"] is not None and summary["final_valid_acc"] == summary["best_valid_acc"]


def test_skipped_images_are_named_once_and_kept_in_the_summary(tiny: Path, tmp_path: Path):
    broken = write(tiny / "train" / "cat" / "broken.jpg", b"this is not a picture")
    result = _train(tiny, tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    reason = summary["skipped_images"][str(broken)]
    assert reason.startswith(str(broken)) and "BytesIO" not in reason
    warnings = [line for line in result.stderr.splitlines() if "Skipped an unreadable image" in line]
    assert len(warnings) == 1 and warnings[0].count(str(broken)) == 1


# -- Predictions -------------------------------------------------------------------------------

def test_predict_never_replaces_a_file_and_checks_before_the_work(trained: Path, tmp_path: Path):
    images = tmp_path / "images"
    write(images / "1.jpg", jpeg_bytes(1, size=(24, 24)))
    out = write(tmp_path / "submission.csv", b"earlier work\n")
    result = runner.invoke(app, ["predict", str(trained), str(images), "--out", str(out)])
    assert result.exit_code == 1 and "already exists; choose another --out" in result.output
    assert out.read_bytes() == b"earlier work\n"


def test_a_kaggle_submission_names_its_positive_class_and_can_clip(trained: Path, tmp_path: Path):
    images = tmp_path / "images"
    for i in range(4):
        write(images / f"{i}.jpg", jpeg_bytes(i, size=(24, 24)))
    no_dog = runner.invoke(app, ["predict", str(trained), str(images), "--kaggle-submission", "--out", str(tmp_path / "s.csv")])
    assert no_dog.exit_code == 2 and "no dog among the model's classes a, b" in no_dog.output and "--positive" in no_dog.output
    assert not (tmp_path / "s.csv").exists()
    too_much = runner.invoke(app, ["predict", str(trained), str(images), "--clip", "0.7", "--out", str(tmp_path / "s.csv")])
    assert too_much.exit_code == 2 and "--clip must be at least 0 and below 0.5, not 0.7" in too_much.output
    result = runner.invoke(app, [
        "predict", str(trained), str(images), "--kaggle-submission", "--positive", "b", "--clip", "0.2", "--out", str(tmp_path / "s.csv"),
    ])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 4 and all(0.2 <= float(row["label"]) <= 0.8 for row in rows)


# -- Output that machines read, and help for people ----------------------------------------------

def test_export_json_is_the_only_thing_on_stdout(trained: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", str(trained), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(tmp_path / "m.onnx")


def test_every_option_of_every_command_has_help():
    group = typer.main.get_command(app)
    context = typer.Context(group)
    missing = [
        f"prep {name} {param.opts[0]}"
        for name in group.list_commands(context)
        for param in group.get_command(context, name).params
        if param.param_type_name == "option" and not (param.help or "").strip()
    ]
    assert missing == []
    export_help = runner.invoke(app, ["export", "--help"], terminal_width=200)
    assert "pip install 'prep[export]'" in export_help.output


def test_best_pt_is_the_model_to_ship_and_last_pt_what_a_resume_needs(trained: Path):
    from prep.engine.checkpoint import load_checkpoint

    best, last = load_checkpoint(trained), load_checkpoint(trained.parent / "last.pt")
    assert "optimizer" in last and "rng" in last
    assert not {"optimizer", "schedule", "scaler", "rng"} & set(best)
    assert {"model", "classes", "mean", "std", "options", "config"} <= set(best)
    assert trained.stat().st_size * 2 < (trained.parent / "last.pt").stat().st_size


def test_the_trainers_default_weights_are_listed_where_users_look():
    listed = runner.invoke(app, ["plugins"])  # at 80 columns
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if "resnet-finetune" in line and "classification" in line)
    assert "imagenet" in row
    assert "…" not in listed.stdout  # long names fold, never cut
    described = json.loads(runner.invoke(app, ["plugins", "--json"]).stdout)
    weights = {t["name"]: t["default_weights"] for t in described["trainers"]}
    assert weights["resnet-finetune"] == "imagenet" and weights["unet"] == "none"
    helped = " ".join(runner.invoke(app, ["train", "--help"]).stdout.split())  # wrapped at 80 columns
    assert "book. --weights default: imagenet." in helped
