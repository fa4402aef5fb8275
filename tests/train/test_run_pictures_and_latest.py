"""What a run leaves for a person to look at: ``runs/latest``, the epoch line, the learning
rate and ``best.pt``'s epoch in metrics.jsonl, and pictures that say what they show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app

runner = CliRunner()
TINY = ["--weights", "none", "--image-size", "16", "--batch-size", "8", "--workers", "0"]


def _train(dataset: Path, *extra: str):
    return runner.invoke(app, ["train", str(dataset), *TINY, *extra])


@pytest.fixture
def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib figure saved while the test runs (then written as usual)."""
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _texts(figure) -> list[str]:
    """Every title, suptitle and legend entry of ``figure``."""
    texts = [figure._suptitle.get_text()] if figure._suptitle is not None else []
    for axis in figure.axes:
        texts.append(axis.get_title())
        if axis.get_legend() is not None:
            texts += [t.get_text() for t in axis.get_legend().get_texts()]
    for legend in figure.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    return texts


# -- runs/latest -----------------------------------------------------------------------------

def test_runs_latest_follows_the_newest_started_run_and_a_refused_one_leaves_it(colours_dataset: Path):
    first = _train(colours_dataset, "--epochs", "1")
    assert first.exit_code == 0, first.output
    second = _train(colours_dataset, "--epochs", "1")
    assert second.exit_code == 0, second.output
    runs = sorted(p.name for p in Path("runs").iterdir() if not p.is_symlink())
    assert len(runs) == 2
    latest = Path("runs/latest")
    assert latest.is_symlink() and latest.resolve() == Path("runs", runs[1]).resolve()
    assert f"(now {latest})" in second.stdout

    refused = _train(colours_dataset, "--epochs", "1", "--monitor", "valid_nonsense")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert latest.resolve() == Path("runs", runs[1]).resolve()

    # What the README's tour does next works on the link.
    evaluated = runner.invoke(app, ["evaluate", "runs/latest/best.pt", str(colours_dataset), "--workers", "0", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["images"] == 18


def test_a_folder_of_the_users_named_latest_is_left_alone(colours_dataset: Path):
    mine = Path("runs/latest")
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    result = _train(colours_dataset, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    assert not mine.is_symlink() and os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"
    assert "latest" not in json.loads(result.stdout)


def test_a_run_outside_runs_moves_no_link(colours_dataset: Path, tmp_path: Path):
    result = _train(colours_dataset, "--epochs", "1", "--run-dir", str(tmp_path / "elsewhere"))
    assert result.exit_code == 0, result.output
    assert not Path("runs/latest").exists() and "(now " not in result.stdout


def test_point_latest_at_replaces_the_link_and_ignores_other_folders(tmp_path: Path):
    from prep.train.run import point_latest_at

    for name in ("a", "b"):
        Path("runs", name).mkdir(parents=True)
    assert point_latest_at(Path("runs/a")) == Path("runs/latest")
    assert point_latest_at(Path("runs/b")) == Path("runs/latest")
    assert os.readlink("runs/latest") == "b"  # relative: the runs folder can move
    assert sorted(os.listdir("runs")) == ["a", "b", "latest"]  # no temporary link left
    assert point_latest_at(tmp_path / "b") is None and os.readlink("runs/latest") == "b"


# -- The epoch line and metrics.jsonl --------------------------------------------------------

def test_epoch_lines_fit_100_columns_and_mark_the_epochs_best_pt_holds(colours_dataset: Path, tmp_path: Path):
    run = tmp_path / "run"
    result = _train(colours_dataset, "--epochs", "3", "--lr", "0.01", "--scheduler", "cosine", "--warmup-epochs", "0", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3 and all(len(line) <= 100 for line in lines), lines
    assert lines[0].startswith("epoch 1/3: train_loss ") and " valid_loss " in lines[0] and " valid_acc " in lines[0]
    assert lines[0].split(",")[0].endswith(" best")  # the first epoch is always the best so far

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    # Each epoch logs the rate it trained with: the first the base rate, the last above 0.
    assert records[0]["lr"] == pytest.approx(0.01) and 0 < records[-1]["lr"] < records[0]["lr"]
    improved = [r["epoch"] for r in records if r["improved"]]
    assert improved[0] == 1 and improved[-1] == summary["best_epoch"]
    assert [(" best" in line.split(",")[0]) for line in lines] == [r["improved"] for r in records]


# -- Pictures --------------------------------------------------------------------------------

RECORDS = [
    {"epoch": 1, "train_loss": 1.2, "valid_loss": 1.0, "train_acc": 0.4, "valid_acc": 0.5, "lr": 0.01, "improved": True, "confusion": [[1, 1], [0, 2]]},
    {"epoch": 2, "train_loss": 0.9, "valid_loss": 0.7, "train_acc": 0.6, "valid_acc": 0.9, "lr": 0.005, "improved": True, "confusion": [[2, 0], [0, 2]]},
    {"epoch": 3, "train_loss": 0.8, "valid_loss": 0.8, "train_acc": 0.7, "valid_acc": 0.6, "lr": 0.001, "improved": False, "confusion": [[0, 2], [0, 2]]},
]


def test_curves_mark_best_pt_and_say_how_the_training_loss_differs(captured_figures: list, tmp_path: Path):
    from prep.engine.plots import plot_curves

    plot_curves(RECORDS, tmp_path / "curves.png", suptitle="run", train_loss_note="label smoothing 0.1")
    texts = _texts(captured_figures[-1])
    assert "train (label smoothing 0.1)" in texts and "best.pt (epoch 2)" in texts
    assert "learning rate (at each epoch's start)" in texts
    lr_line = captured_figures[-1].axes[2].get_lines()[0]
    assert list(lr_line.get_ydata()) == [0.01, 0.005, 0.001]


def test_the_training_loss_note_comes_from_the_runs_config(tmp_path: Path):
    from prep.engine.plots import training_loss_note

    assert training_loss_note(tmp_path) is None  # no config.yaml
    (tmp_path / "config.yaml").write_text("train:\n  label_smoothing: 0.1\n  mixup: 0.2\n")
    assert training_loss_note(tmp_path) == "label smoothing 0.1, mixup"
    (tmp_path / "config.yaml").write_text("train:\n  label_smoothing: 0.0\n")
    assert training_loss_note(tmp_path) is None


def test_the_pictures_show_the_epoch_best_pt_holds_and_say_so():
    from prep.engine.plots import best_record

    shown, which = best_record(RECORDS)
    assert shown["epoch"] == 2 and which == "validation of best.pt (epoch 2 of 3)"
    old = [{k: v for k, v in r.items() if k != "improved"} for r in RECORDS]  # logged before `improved`
    assert best_record(old) == (old[-1], "validation, epoch 3")


def test_the_confusion_picture_has_counts_and_shares_and_nothing_clipped(captured_figures: list, tmp_path: Path):
    from prep.builtin_tasks.classification.plots import plot_confusion

    title = "resnet-finetune-resnet18-20261205-051200\nvalidation of best.pt (epoch 2 of 3)"
    path = plot_confusion([[8, 2], [1, 9]], ["a_long_class_name", "b"], tmp_path / "confusion.png", title=title)
    figure = captured_figures[-1]
    assert [axis.get_title() for axis in figure.axes] == ["counts", "share of each true class (diagonal: recall)"]
    assert figure._suptitle.get_text() == f"{title}\naccuracy 0.850, balanced accuracy 0.850 over 20 images"
    assert sorted(t.get_text() for t in figure.axes[1].texts) == ["0.10", "0.20", "0.80", "0.90"]
    pixels = np.asarray(Image.open(path).convert("L"))
    # A white margin all round: the title and the labels are inside the picture.
    for edge in (pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]):
        assert edge.min() == 255


def test_the_classification_run_pictures_name_the_run_and_best_pt(colours_dataset: Path, tmp_path: Path, captured_figures: list):
    run = tmp_path / "my-run"
    result = _train(colours_dataset, "--epochs", "2", "--label-smoothing", "0.1", "--run-dir", str(run))
    assert result.exit_code == 0, result.output
    texts = [text for figure in captured_figures for text in _texts(figure)]
    best = json.loads((run / "summary.json").read_text())["best_epoch"]
    assert "train (label smoothing 0.1)" in texts and f"best.pt (epoch {best})" in texts
    assert any(t.startswith(f"my-run\nvalidation of best.pt (epoch {best} of 2)\naccuracy ") for t in texts)


def test_errors_colour_false_positives_false_negatives_and_wrong_classes_apart():
    from prep.masks.overlay import FALSE_NEGATIVE, FALSE_POSITIVE, WRONG_CLASS, errors

    image = np.full((1, 5, 3), 200, dtype=np.uint8)
    truth = np.array([[0, 1, 1, 2, -1]])
    predicted = np.array([[1, 0, 1, 1, 2]])
    out = errors(image, truth, predicted)
    assert tuple(out[0, 0]) == FALSE_POSITIVE and tuple(out[0, 1]) == FALSE_NEGATIVE and tuple(out[0, 3]) == WRONG_CLASS
    assert tuple(out[0, 2]) == (90, 90, 90) and tuple(out[0, 4]) == (90, 90, 90)  # right, and ignored: darkened only


def test_the_segmentation_examples_show_errors_under_the_runs_name(tmp_path: Path, captured_figures: list):
    from prep.testing import make_segmentation_dataset

    data = make_segmentation_dataset(tmp_path / "data", per_split={"train": 6, "valid": 3})
    run = tmp_path / "seg-run"
    result = runner.invoke(app, [
        "train", str(data), "--plugin", "unet", "--arch", "unet-resnet18", "--epochs", "1", "--image-size", "32",
        "--batch-size", "4", "--workers", "0", "--preset", "none", "--run-dir", str(run),
    ])
    assert result.exit_code == 0, result.output
    examples = next(f for f in captured_figures if f._suptitle is not None and "truth, prediction and errors" in f._suptitle.get_text())
    assert examples._suptitle.get_text() == "seg-run: best.pt on validation samples\ntruth, prediction and errors on 3 of 3 images"
    titles = [axis.get_title() for axis in examples.axes]
    assert len(titles) == 12 and titles[:2] == ["image", "truth"]
    assert titles[2].startswith("prediction: Dice ") and titles[3].startswith("errors: ") and titles[3].endswith("% of pixels")
    legend = [t.get_text() for t in examples.legends[0].get_texts()]
    assert legend == ["foreground", "false positive", "false negative"]  # two classes: no class can be swapped
    assert (run / "examples.png").exists()
