"""``prep train --fold all``: K models, each normalised by its own training part, sharing one
cache; out-of-fold predictions and score; the images whose labels look wrong; and the folds'
ensemble in predict and evaluate. Through the API and the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.crossval.run import cross_validate
from prep.data.index import DatasetIndex
from prep.inference.predict import PredictOptions, predict_images
from prep.split.api import split_dataset
from prep.split.folds import read_folds
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize
from prep.stats.dataset_stats import compute_dataset_stats
from prep.stats.fold_stats import fold_mean_std
from prep.train.options import TrainOptions

from conftest import write_colour_images

runner = CliRunner()
CLASSES = ["amber", "blue", "red"]
# Planted label flips: (class folder it belongs to, file, the class folder it is put in).
FLIPS = [("amber", "amber_0_3.png", "blue"), ("blue", "blue_0_5.png", "red")]


def quick(run_dir: Path, **more) -> TrainOptions:
    settings = dict(
        plugin="resnet-finetune", weights="none", epochs=6, image_size=24, batch_size=8, preset="none", workers=0,
        device="cpu", run_dir=run_dir, lr=0.001,
    )
    return TrainOptions(**{**settings, **more})


@pytest.fixture(scope="module")
def folded(tmp_path_factory) -> Path:
    """Three colour classes of 10 images, two of them given the wrong class, in 3 folds, and
    a test split of clean images."""
    base = tmp_path_factory.mktemp("cv")
    raw = base / "raw"
    write_colour_images(raw, 10, 0, classes=CLASSES)
    for home, name, wrong in FLIPS:
        shutil.move(raw / home / name, raw / wrong / name)
    split_dataset(raw, SplitOptions(folds=3, valid=SplitSize(0, False), out=base / "data", mode="copy"))
    write_colour_images(base / "data" / "test", 2, 9, classes=CLASSES)
    return base / "data"


@pytest.fixture(scope="module")
def cv_run(folded: Path, tmp_path_factory) -> dict:
    """One cross-validation of ``folded``, through the API (normalised by the data: from scratch)."""
    return cross_validate(folded, quick(tmp_path_factory.mktemp("runs") / "cv", normalize="dataset"))


def test_every_fold_is_a_run_and_the_summary_adds_them_up(cv_run: dict):
    run_dir = Path(cv_run["run_dir"])
    assert cv_run["status"] == "completed" and cv_run["folds_total"] == 3
    for fold in range(3):
        folder = run_dir / f"fold-{fold}"
        assert {"best.pt", "last.pt", "metrics.jsonl", "curves.png", "config.yaml"} <= {p.name for p in folder.iterdir()}
    best = [json.loads((run_dir / f"fold-{k}" / "summary.json").read_text())["best_valid_acc"] for k in range(3)]
    assert [f["best"] for f in cv_run["folds"]] == best
    assert cv_run["mean"] == pytest.approx(sum(best) / 3)
    assert cv_run["std"] == pytest.approx(float(np.std(best)))
    assert json.loads((run_dir / "summary.json").read_text())["oof"]["acc"] == cv_run["oof"]["acc"]


def test_out_of_fold_rows_cover_every_training_image_once(cv_run: dict, folded: Path):
    rows = list(csv.DictReader((Path(cv_run["run_dir"]) / "oof.csv").open()))
    folds = read_folds(folded)
    assert sorted(r["path"] for r in rows) == sorted(folds)
    assert all(int(r["fold"]) == folds[r["path"]] for r in rows)
    for row in rows:
        assert sum(float(row[f"prob_{c}"]) for c in CLASSES) == pytest.approx(1, abs=1e-4)
        assert row["label"] == row["path"].split("/")[1]
    accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    log_loss = -sum(math.log(max(float(r[f"prob_{r['label']}"]), 1e-15)) for r in rows) / len(rows)
    assert cv_run["oof"]["acc"] == pytest.approx(accuracy)
    assert cv_run["oof"]["log_loss"] == pytest.approx(log_loss, rel=1e-4)
    assert cv_run["oof"]["images"] == 30


def test_planted_label_flips_rank_first_among_the_suspects(cv_run: dict):
    rows = list(csv.DictReader((Path(cv_run["run_dir"]) / "suspects.csv").open()))
    assert len(rows) == 30 and [int(r["rank"]) for r in rows] == list(range(1, 31))
    planted = {f"train/{wrong}/{name}" for _, name, wrong in FLIPS}
    top = {r["path"] for r in rows[:4]}
    assert planted <= top, rows[:4]
    for row in rows:
        if row["path"] in planted:
            assert row["predicted_label"] == row["path"].split("/")[2].split("_")[0]  # the colour it shows
    suspects = cv_run["suspects"]
    assert suspects["count"] >= 1 and Path(suspects["png"]).is_file()
    assert f"{suspects['count']} of 30 training images" in suspects["about"]


def test_each_fold_is_normalised_with_its_own_training_part_only(cv_run: dict, folded: Path, tmp_path: Path):
    import torch

    folds = read_folds(folded)
    for fold in range(3):
        # The same statistics as prep stats gives a dataset holding only this fold's training part.
        alone = tmp_path / f"alone-{fold}"
        for path, f in folds.items():
            if f != fold:
                (alone / Path(path).parent).mkdir(parents=True, exist_ok=True)
                shutil.copy(folded / path, alone / path)
        expected = compute_dataset_stats(alone, workers=1)
        mean, std = fold_mean_std(DatasetIndex.open(folded).fold_view(fold), workers=1)
        assert mean == pytest.approx(expected["mean"], abs=1e-12) and std == pytest.approx(expected["std"], abs=1e-12)
        state = torch.load(Path(cv_run["run_dir"]) / f"fold-{fold}" / "best.pt", map_location="cpu", weights_only=False)
        assert state["mean"] == pytest.approx(mean) and state["normalization"] == "dataset"
    pool = compute_dataset_stats(folded, workers=1)["mean"]
    assert fold_mean_std(DatasetIndex.open(folded).fold_view(0), workers=1)[0] != pytest.approx(pool, abs=1e-9)


def test_the_folds_share_one_decoded_cache(cv_run: dict, folded: Path):
    stores = sorted(p.name.split("-")[0] for p in (folded / ".prep" / "cache").iterdir())
    # One store of the pool per way of decoding it (training's and validation's sides), none per fold.
    assert set(stores) == {"pool"} and 1 <= len(stores) <= 2, stores


def test_an_ensemble_of_identical_checkpoints_predicts_what_one_does(cv_run: dict, folded: Path, tmp_path: Path):
    best = Path(cv_run["run_dir"]) / "fold-0" / "best.pt"
    images = [folded / "test"]
    one = predict_images(best, images, PredictOptions(out=tmp_path / "one.csv"))
    three = predict_images([best, best, best], images, PredictOptions(out=tmp_path / "three.csv"))
    assert (one["models"], three["models"]) == (1, 3)
    a, b = (list(csv.reader((tmp_path / name).open())) for name in ("one.csv", "three.csv"))
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert np.allclose(np.array([r[2:] for r in a[1:]], float), np.array([r[2:] for r in b[1:]], float), atol=2e-6)


def test_the_folds_ensemble_differs_from_any_one_fold(cv_run: dict, folded: Path, tmp_path: Path):
    run_dir = Path(cv_run["run_dir"])
    predict_images(run_dir, [folded / "test"], PredictOptions(out=tmp_path / "all.csv", tta="flip"))
    probabilities = {}
    for name, model in (("all", None), *((f"fold{k}", run_dir / f"fold-{k}" / "best.pt") for k in range(3))):
        if model is not None:
            predict_images(model, [folded / "test"], PredictOptions(out=tmp_path / f"{name}.csv", tta="flip"))
        probabilities[name] = np.array([r[2:] for r in list(csv.reader((tmp_path / f"{name}.csv").open()))[1:]], float)
    # The mean of the folds' (flip-averaged) probabilities, member by member.
    assert np.allclose(probabilities["all"], np.mean([probabilities[f"fold{k}"] for k in range(3)], axis=0), atol=1e-5)


def test_evaluate_a_cross_validation_on_its_test_split_through_the_cli(cv_run: dict, folded: Path, tmp_path: Path):
    result = runner.invoke(app, ["evaluate", cv_run["run_dir"], str(folded), "--json", "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["models"] == 3 and report["split"] == "test" and report["images"] == 6


def test_fold_all_through_the_cli_prints_each_fold_and_the_out_of_fold_score(folded: Path, tmp_path: Path):
    run_dir = tmp_path / "cv"
    result = runner.invoke(app, [
        "train", str(folded), "--fold", "all", "--weights", "none", "--epochs", "1", "--image-size", "24", "--batch-size", "8",
        "--preset", "none", "--workers", "0", "--device", "cpu", "--run-dir", str(run_dir),
    ])
    assert result.exit_code == 0, result.output
    for fold in range(3):
        assert f"Fold {fold} ({fold + 1} of 3): Training" in result.output
        assert f"fold {fold} ({fold + 1} of 3): completed" in result.output
    assert "Folds' best valid_acc: mean" in result.output and "Out-of-fold score over 30 images: acc" in result.output
    assert "log_loss" in result.output and "Suspect labels:" in result.output
    again = runner.invoke(app, ["train", str(folded), "--fold", "all", "--weights", "none", "--epochs", "1", "--run-dir", str(run_dir)])
    assert again.exit_code == 1 and "already holds a cross-validation; continue it with --resume" in again.output
    submission = runner.invoke(app, ["predict", str(run_dir), str(folded / "test"), "--tta", "flip", "--out", str(tmp_path / "p.csv")])
    assert submission.exit_code == 0 and "the average of 3 models" in submission.output
    single = runner.invoke(app, [
        "train", str(folded), "--fold", "2", "--weights", "none", "--epochs", "1", "--image-size", "24", "--workers", "0",
        "--device", "cpu", "--run-dir", str(tmp_path / "one"), "--json",
    ])
    assert single.exit_code == 0, single.output
    assert json.loads(single.stdout)["setup"]["images"] == {"train": 20, "valid": 10}


def test_bad_fold_requests_get_one_line_and_write_nothing(folded: Path, tmp_path: Path):
    plain = tmp_path / "plain"
    write_colour_images(plain / "train", 3, 0, classes=CLASSES)
    write_colour_images(plain / "valid", 2, 1, classes=CLASSES)
    common = ["--weights", "none", "--epochs", "1", "--image-size", "24", "--workers", "0", "--device", "cpu"]
    cases = [
        (["train", str(folded), "--fold", "7", *common, "--run-dir", str(tmp_path / "r1")], "--fold 7: ", "has 3 folds, numbered 0 to 2"),
        (["train", str(plain), "--fold", "0", *common, "--run-dir", str(tmp_path / "r2")], "was split without folds", "--folds 5"),
        (["train", str(plain), "--fold", "all", *common, "--run-dir", str(tmp_path / "r3")], "was split without folds", "--folds 5"),
        (["train", str(folded), *common, "--run-dir", str(tmp_path / "r4")], "is split into 3 folds", "--fold all"),
    ]
    usage = (["train", str(folded), "--fold", "two", *common, "--run-dir", str(tmp_path / "r5")], "--fold takes all", "'two'")
    for args, first, second in [*cases, usage]:
        result = runner.invoke(app, args)
        assert result.exit_code == (2 if args is usage[0] else 1), (args, result.output)  # 2: a usage error
        assert first in result.output and second in result.output and "Traceback" not in result.output
        assert not Path(args[args.index("--run-dir") + 1]).exists()


def test_predict_refuses_a_cross_validation_with_a_missing_fold_unless_asked(cv_run: dict, folded: Path, tmp_path: Path):
    run_dir = tmp_path / "cv"
    shutil.copytree(cv_run["run_dir"], run_dir)
    for name in ("best.pt", "last.pt"):
        (run_dir / "fold-1" / name).unlink()
    refused = runner.invoke(app, ["predict", str(run_dir), str(folded / "test"), "--out", str(tmp_path / "p.csv")])
    assert refused.exit_code == 1 and "fold 1 has no checkpoint" in refused.output and "--complete-folds" in refused.output
    assert not (tmp_path / "p.csv").exists()
    done = runner.invoke(app, ["predict", str(run_dir), str(folded / "test"), "--out", str(tmp_path / "p.csv"), "--complete-folds"])
    assert done.exit_code == 0 and "the average of 2 models" in done.output


def test_checkpoints_of_other_classes_are_refused_before_predicting(cv_run: dict, colours_checkpoint: Path, folded: Path, tmp_path: Path):
    result = runner.invoke(app, ["predict", str(Path(cv_run["run_dir"]) / "fold-0" / "best.pt"), str(colours_checkpoint), str(folded / "test"), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and "an ensemble averages models of the same classes" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "p.csv").exists()


def binary_masks(root: Path, count: int = 18) -> Path:
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        pixels = rng.integers(0, 70, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(0, 16, 2)
        pixels[y : y + 14, x : x + 14] = (220, 40, 40)
        mask[y : y + 14, x : x + 14] = 1
        Image.fromarray(pixels).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i:02d}.png")
    return root


def test_segmentation_from_folds_to_a_kaggle_submission_through_the_cli(tmp_path: Path):
    raw = binary_masks(tmp_path / "raw")
    assert runner.invoke(app, ["split", str(raw), "--folds", "3", "--out", str(tmp_path / "data"), "--mode", "copy"]).exit_code == 0
    run_dir = tmp_path / "cv"
    result = runner.invoke(app, [
        "train", str(tmp_path / "data"), "--plugin", "unet", "--fold", "all", "--weights", "none", "--epochs", "1",
        "--image-size", "32", "--batch-size", "6", "--workers", "0", "--device", "cpu", "--run-dir", str(run_dir), "--oof-masks",
    ])
    assert result.exit_code == 0, result.output
    masks = sorted((run_dir / "oof-masks").iterdir())  # every training image's mask, at its own size
    assert [m.name for m in masks] == sorted(Path(p).name for p in read_folds(tmp_path / "data"))
    assert all(Image.open(m).size == (32, 32) for m in masks)
    assert "Out-of-fold score over 18 images: dice" in result.output and "iou" in result.output
    rows = list(csv.DictReader((run_dir / "oof.csv").open()))
    assert sorted(r["path"] for r in rows) == sorted(read_folds(tmp_path / "data"))
    assert set(rows[0]) == {"path", "fold", "dice", "iou"}
    ranked = list(csv.DictReader((run_dir / "suspects.csv").open()))
    assert [float(r["dice"]) for r in ranked] == sorted(float(r["dice"]) for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["oof"]["image_dice"] == pytest.approx(sum(float(r["dice"]) for r in rows) / len(rows), abs=1e-5)
    submission = runner.invoke(app, ["predict", str(run_dir), str(raw / "images"), "--kaggle-submission", "--tta", "flip", "--out", str(tmp_path / "sub.csv")])
    assert submission.exit_code == 0, submission.output
    assert "the average of 3 models" in submission.output
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 19
    # Identical members: the same masks as the one model.
    best = run_dir / "fold-0" / "best.pt"
    predict_images(best, [raw / "images"], PredictOptions(out=tmp_path / "one"))
    predict_images([best, best], [raw / "images"], PredictOptions(out=tmp_path / "two"))
    for mask in (tmp_path / "one").iterdir():
        assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "two" / mask.name)))


def _cv_rank(rank: int, port: int, data: str, run_dir: str) -> None:
    """One of two Gloo processes running the whole cross-validation."""
    import os

    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    summary = cross_validate(Path(data), quick(Path(run_dir), epochs=1))
    Path(run_dir, f"rank{rank}.json").write_text(json.dumps({"is_main": summary["is_main"], "status": summary["status"]}))
    torch.distributed.barrier()  # both finish before either tears down the group
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_under_torchrun_every_fold_runs_on_every_process(folded: Path, tmp_path: Path):
    from conftest import run_two_gloo_ranks

    run_dir = tmp_path / "cv"
    run_two_gloo_ranks(_cv_rank, (str(folded), str(run_dir)), seconds=300)
    ranks = [json.loads((run_dir / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks == [{"is_main": True, "status": "completed"}, {"is_main": False, "status": "completed"}]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [f["status"] for f in summary["folds"]] == ["completed"] * 3 and summary["oof"]["images"] == 30
    for fold in range(3):
        records = [json.loads(line) for line in (run_dir / f"fold-{fold}" / "metrics.jsonl").read_text().splitlines()]
        # 20 training images dealt to two processes: 10 each, two batches of 8 (one process alone: three).
        assert [r["step"] for r in records] == [2]


def test_models_of_another_dataset_and_an_export_of_the_folds_are_refused(cv_run: dict, folded: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(folded, copy, ignore=shutil.ignore_patterns(".prep"))
    other = runner.invoke(app, [
        "train", str(copy), "--fold", "0", "--weights", "none", "--epochs", "1", "--image-size", "24", "--workers", "0",
        "--device", "cpu", "--run-dir", str(tmp_path / "other"),
    ])
    assert other.exit_code == 0, other.output
    mixed = runner.invoke(app, ["predict", str(Path(cv_run["run_dir"]) / "fold-0" / "best.pt"), str(tmp_path / "other" / "best.pt"), str(folded / "test"), "--out", str(tmp_path / "p.csv")])
    assert mixed.exit_code == 1 and "an ensemble averages models of one dataset" in mixed.output
    assert not (tmp_path / "p.csv").exists()
    export = runner.invoke(app, ["export", cv_run["run_dir"], "--format", "torchscript"])
    assert export.exit_code == 1 and "is a cross-validation: prep export writes one model" in export.output
    assert "Traceback" not in export.output


@pytest.mark.slow
def test_planted_wrong_masks_rank_first_and_are_overlaid(tmp_path: Path):
    rng = np.random.default_rng(3)
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    wrong = {"c04.png", "c17.png", "c25.png"}
    for i in range(30):
        pixels = rng.integers(0, 70, (48, 48, 3), dtype=np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(0, 26, 2)
        pixels[y : y + 20, x : x + 20] = (220, 40, 40)
        mask[y : y + 20, x : x + 20] = 1
        if f"c{i:02d}.png" in wrong:  # the square drawn elsewhere, overlapping the object or not
            mask[:] = 0
            mask[(y + 24) % 28 : (y + 24) % 28 + 20, (x + 24) % 28 : (x + 24) % 28 + 20] = 1
        Image.fromarray(pixels).save(raw / "images" / f"c{i:02d}.png")
        Image.fromarray(mask).save(raw / "masks" / f"c{i:02d}.png")
    split_dataset(raw, SplitOptions(folds=3, valid=SplitSize(0, False), out=tmp_path / "data", mode="copy"))
    summary = cross_validate(tmp_path / "data", quick(tmp_path / "cv", plugin="unet", epochs=6, image_size=48, batch_size=6))
    ranked = list(csv.DictReader((tmp_path / "cv" / "suspects.csv").open()))
    assert {Path(r["path"]).name for r in ranked[:3]} == wrong
    flagged = {Path(r["path"]).name for r in ranked if r["suspect"] == "1"}
    # The fence follows the clean pairs' spread, so a six-epoch model's weakest clean pair can
    # sit at it (0.834 against 0.824 here, under it on another CPU): allow one of the 27.
    assert wrong <= flagged and len(flagged) <= 4 and summary["suspects"]["count"] == len(flagged)
    assert Path(summary["suspects"]["png"]).is_file()
    assert summary["oof"]["dice"] > 0.7
