"""``prep lr-find``: the learning-rate range test, through the training step itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prep.cli import app
from prep.train.options import TrainOptions

runner = CliRunner()


# -- The learning-rate finder --------------------------------------------------------------------

def test_lr_find_draws_the_range_test_and_suggests_a_rate(colours_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    png = tmp_path / "lr.png"
    result = runner.invoke(app, [
        "lr-find", str(colours_dataset), "--weights", "none", "--image-size", "16", "--batch-size", "12", "--workers", "0",
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
        "lr-find", str(colours_dataset), "--weights", "none", "--image-size", "16", "--batch-size", "12", "--workers", "0",
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


def test_the_range_test_leaves_the_model_as_it_was(colours_dataset: Path):
    from prep.train.prepare import prepare_run
    from prep.engine.lr_finder import range_test

    run = prepare_run(colours_dataset, TrainOptions(weights="none", image_size=16, batch_size=12, workers=0), with_valid=False)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    test = range_test(
        run.model, run.train_loader, run.task, run.settings.loss, run.classes, config=run.config, mean=run.normalization.mean,
        std=run.normalization.std, device=torch.device("cpu"), head=run.head, steps=8,
    )
    assert len(test.lrs) == 8 and all(math.isfinite(loss) for loss in test.losses)
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lr_find_refuses_a_range_upside_down(colours_dataset: Path, tmp_path: Path):
    result = runner.invoke(app, ["lr-find", str(colours_dataset), "--weights", "none", "--start-lr", "1", "--end-lr", "0.1", "--workers", "0", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--start-lr must be above 0 and below --end-lr" in result.output


def test_the_suggestion_comes_with_a_runnable_command_and_a_caution_when_steps_are_few(colours_dataset: Path, tmp_path: Path):
    import re
    import shlex

    result = runner.invoke(app, [
        "lr-find", str(colours_dataset), "--weights", "none", "--image-size", "16", "--batch-size", "12", "--workers", "0",
        "--steps", "20", "--start-lr", "1e-5", "--end-lr", "1", "--out", str(tmp_path / "lr.png"),
    ])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Suggested learning rate:" in text
    assert re.search(r"\b(1\d|20) steps are too few for a suggestion to trust", text)  # 20, or fewer when the loss diverged
    command = shlex.split(text.split("Train with it: ", 1)[1])
    assert command[:3] == ["prep", "train", str(colours_dataset)]
    assert command[command.index("--image-size") + 1] == "16" and command[command.index("--batch-size") + 1] == "12"
    assert command[command.index("--weights") + 1] == "none" and "--lr" in command
    trained = runner.invoke(app, [*command[1:], "--epochs", "1", "--workers", "0", "--run-dir", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
