"""The parts of the recipes for imbalanced data and longer runs, one by one: class weights,
focal loss, the balanced sampler, mixup and cutmix, the moving average of the weights, the
honest metrics; and an exact resume with all of them on."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prep.augment.presets import build_pipeline
from prep.builtin_tasks.classification.losses import ClassificationLoss
from prep.builtin_tasks.classification.metrics import ClassificationMetrics, ConfusionMatrix
from prep.builtin_tasks.classification.mixing import BatchMixer
from prep.builtin_tasks.classification.task import ClassificationTask
from prep.data.datasets import ClassificationDataset
from prep.data.loader import create_loader
from prep.data.sampling import SeededSampler, balanced_weights
from prep.engine.checkpoint import load_checkpoint
from prep.engine.config import TrainConfig
from prep.engine.ema import WeightAverage
from prep.engine.fit import fit
from prep.stats.balance import ClassBalance, auto_class_weights
from prep.testing import make_classification_dataset
from test_fit import MEAN, STD, InterruptAt, TinyNet, _seeded

TASK = ClassificationTask()


# -- Class weights and focal loss ---------------------------------------------------------


def test_auto_class_weights_are_the_inverse_square_root_with_a_mean_of_one_per_image():
    counts = [900, 100]
    weights = auto_class_weights(counts)
    assert weights[1] / weights[0] == pytest.approx(3.0, rel=1e-5)  # sqrt(900 / 100)
    assert sum(n * w for n, w in zip(counts, weights)) / sum(counts) == pytest.approx(1.0, rel=1e-5)
    assert auto_class_weights([10, 0, 40])[1] == max(auto_class_weights([10, 0, 40]))  # an absent class: the largest


def test_class_weights_weigh_each_image_by_its_class_as_torch_does():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 3), torch.randint(0, 3, (12,))
    weights = [1.0, 2.0, 0.5]
    ours = ClassificationLoss("ce", 0.0, weights)(logits, labels)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, weight=torch.tensor(weights)).item(), rel=1e-6)
    # A weight of 2 counts an image twice.
    doubled = ClassificationLoss("ce", 0.0, [1.0, 2.0])(logits[:2, :2], torch.tensor([0, 1]))
    repeated = F.cross_entropy(logits[[0, 1, 1], :2], torch.tensor([0, 1, 1]))
    assert doubled.item() == pytest.approx(repeated.item(), rel=1e-6)
    # Unweighted, with label smoothing and probabilities, it is torch's own loss.
    soft = torch.softmax(torch.randn(12, 3), dim=1)
    assert ClassificationLoss("ce", 0.1)(logits, soft).item() == pytest.approx(F.cross_entropy(logits, soft, label_smoothing=0.1).item())


def test_focal_loss_scales_each_class_term_by_one_minus_p_squared():
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.tensor([0, 0])
    p = torch.softmax(logits, dim=1)[:, 0]
    by_hand = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert ClassificationLoss("focal")(logits, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)
    # The easy image (p 0.88) counts far less than under cross-entropy; the hard one nearly as much.
    ce = F.cross_entropy(logits, labels, reduction="none")
    focal = -(1 - p) ** 2 * torch.log(p)
    assert focal[0] / ce[0] < 0.02 and focal[1] / ce[1] > 0.9


def test_class_balance_says_when_a_split_is_imbalanced():
    balance = ClassBalance(("cat", "dog", "eel"), (400, 100, 0))
    assert balance.imbalanced and balance.ratio == 4.0 and balance.absent() == ["eel"]
    assert balance.describe() == "imbalanced: the largest class (cat, 400 images) has 4.0x the smallest (dog, 100)"
    assert ClassBalance(("a", "b"), (70, 30)).imbalanced and not ClassBalance(("a", "b"), (60, 40)).imbalanced  # the threshold is 2x


# -- Honest metrics ---------------------------------------------------------------------------


def test_a_majority_class_model_scores_half_balanced_accuracy_and_a_low_macro_f1():
    metrics = ClassificationMetrics(2, train=False)
    targets = torch.tensor([0] * 90 + [1] * 10)
    always_zero = torch.tensor([[1.0, 0.0]]).repeat(100, 1)
    metrics.update(always_zero, targets)
    scores = metrics.compute()
    assert scores["acc"] == 0.9 and scores["balanced_acc"] == 0.5
    assert scores["macro_f1"] == pytest.approx((2 * 90 / (90 + 100) + 0) / 2)
    assert scores["per_class_acc"] == [1.0, 0.0]


def test_balanced_accuracy_leaves_out_classes_without_samples():
    matrix = ConfusionMatrix.of(torch.tensor([[3, 1, 0], [0, 0, 0], [1, 0, 1]]))
    assert matrix.balanced_accuracy() == pytest.approx((3 / 4 + 1 / 2) / 2)
    # Class 1 was predicted once but has no samples: its F1 is 0 and it counts.
    assert matrix.macro_f1() == pytest.approx((2 * 3 / (4 + 4) + 0 + 2 * 1 / (2 + 1)) / 3)


# -- The balanced sampler ------------------------------------------------------------------------


def test_the_balanced_sampler_draws_classes_equally_and_repeats_with_the_seed():
    labels = [0] * 900 + [1] * 90 + [2] * 10
    weights = balanced_weights([(c,) for c in labels], 3)
    sampler = SeededSampler(len(labels), seed=5, weights=weights)
    sampler.set_epoch(0)
    first = list(sampler)
    drawn = Counter(labels[i] for i, _ in first)
    assert len(first) == len(labels) and all(abs(drawn[c] / len(labels) - 1 / 3) < 0.05 for c in range(3))
    assert list(sampler) == first  # the same seed and epoch: the same draws
    sampler.set_epoch(1)
    assert list(sampler) != first
    # Under torchrun the two ranks share the one epoch's draws between them.
    ranks = [SeededSampler(len(labels), seed=5, weights=weights, rank=r, world_size=2) for r in (0, 1)]
    shares = [list(r) for r in ranks]
    assert sorted(shares[0] + shares[1]) == sorted(first)
    # A resume skips what was drawn already and goes on with the same draws.
    sampler.set_epoch(0, start=100)
    assert list(sampler) == first[100:]


def test_masks_holding_a_rare_class_are_drawn_as_often_as_it_needs():
    held = [(0,)] * 90 + [(0, 1)] * 10  # every mask holds background; ten hold the rare class
    weights = balanced_weights(held, 2)
    assert weights[0] == pytest.approx(1 / 100) and weights[-1] == pytest.approx(1 / 10)


# -- Mixup and cutmix ----------------------------------------------------------------------------


def test_mixed_targets_are_probabilities_that_sum_to_one():
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    for mixer in (BatchMixer(4, mixup=0.2), BatchMixer(4, cutmix=1.0), BatchMixer(4, mixup=0.2, cutmix=1.0)):
        for seed in range(5):
            mixed, targets = mixer(images, labels, np.random.default_rng(seed))
            assert mixed.shape == images.shape and targets.shape == (8, 4)
            assert torch.allclose(targets.sum(dim=1), torch.ones(8)) and (targets >= 0).all()


def test_cutmix_takes_the_share_of_the_pasted_box_exactly():
    images = torch.stack([torch.zeros(1, 20, 20), torch.ones(1, 20, 20)])
    mixed, targets = BatchMixer(2, cutmix=1.0)(images, torch.tensor([0, 1]), np.random.default_rng(3))
    pasted = mixed[0].mean().item()  # the share of the first image that came from the second
    assert targets[0].tolist() == pytest.approx([1 - pasted, pasted])


def test_mixing_repeats_with_its_seed_and_stops_at_its_epoch():
    images, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    mixer = BatchMixer(3, mixup=0.4, off_epoch=2)
    a = mixer(images, labels, np.random.default_rng([0, 1, 7, 0]))
    b = mixer(images, labels, np.random.default_rng([0, 1, 7, 0]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert mixer.active(1) and not mixer.active(2)


# -- The moving average of the weights -------------------------------------------------------------


def test_the_weight_average_is_the_hand_computed_one():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.constant_(model.weight, 1.0)
    average = WeightAverage(model, decay=0.5)
    expected = 1.0
    for value in (3.0, 5.0, -1.0):
        with torch.no_grad():
            model.weight.fill_(value)
        decay = min(0.5, (1 + average.updates) / (10 + average.updates))
        average.update(model)
        expected = decay * expected + (1 - decay) * value
        assert average.module.weight[0, 0].item() == pytest.approx(expected)
    assert [min(0.5, (1 + n) / (10 + n)) for n in range(3)] == [0.1, 2 / 11, 0.25]  # the warmup


# -- All of it in the loop, and an exact resume ------------------------------------------------------


@pytest.fixture(scope="module")
def imbalanced_root(tmp_path_factory) -> Path:
    return make_classification_dataset(
        tmp_path_factory.mktemp("imbalanced"), ("cool", "warm"), per_class={"cool": 64, "warm": 16}, valid_per_class=8, size=20,
    )


def _loaders(root: Path, seed: int):
    train = ClassificationDataset(root, "train", transform=build_pipeline("light", 16, train=True, seed=seed))
    valid = ClassificationDataset(root, "valid", transform=build_pipeline("light", 16, train=False))
    weights = balanced_weights([(label,) for _, label in train.samples], 2)
    return create_loader(train, 8, train=True, workers=0, seed=seed, weights=weights), create_loader(valid, 16, train=False, workers=0)


def _run(root: Path, run_dir: Path, config: TrainConfig, model, resume: bool = False):
    train, valid = _loaders(root, config.seed)
    summary = fit(model, train, valid, config, run_dir, task=TASK, classes=["cool", "warm"], mean=MEAN, std=STD, head=model.head, resume=resume)
    return model, summary


def test_resume_with_ema_sampler_mixing_and_weights_gives_the_weights_of_an_uninterrupted_run(imbalanced_root: Path, tmp_path: Path):
    config = TrainConfig(
        epochs=3, lr=0.05, scheduler="step", step_size=1, gamma=0.5, seed=4, ema=0.9, mixup=0.4, cutmix=1.0,
        class_weights=[1.0, 2.0], loss="focal", label_smoothing=0.1,
    )
    straight, summary = _run(imbalanced_root, tmp_path / "straight", config, _seeded(TinyNet))
    _, stopped = _run(imbalanced_root, tmp_path / "run", config, _seeded(InterruptAt, 14))
    assert stopped["status"] == "interrupted" and load_checkpoint(tmp_path / "run" / "last.pt")["ema"]["updates"] == 14
    resumed, again = _run(imbalanced_root, tmp_path / "run", config, _seeded(TinyNet), resume=True)
    assert again["status"] == "completed" and again["steps"] == summary["steps"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    averages = [load_checkpoint(run / "last.pt")["ema"]["model"] for run in (tmp_path / "straight", tmp_path / "run")]
    assert all(torch.equal(averages[0][k], averages[1][k]) for k in averages[0])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"valid_balanced_acc", "valid_macro_f1", "ema_valid_acc", "ema_valid_loss"} <= set(r) for r in records)


def test_best_pt_holds_the_weights_that_scored_better_and_says_which(imbalanced_root: Path, tmp_path: Path):
    config = TrainConfig(epochs=1, lr=0.05, seed=1, ema=0.5, monitor="valid_loss")
    _, summary = _run(imbalanced_root, tmp_path / "run", config, _seeded(TinyNet))
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record["ema_valid_loss"] != record["valid_loss"]
    chosen = "ema" if record["ema_valid_loss"] < record["valid_loss"] else "trained"
    best, last = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["best_weights"] == summary["best_weights"] == chosen and "ema" not in best
    assert summary["best_valid_loss"] == pytest.approx(min(record["ema_valid_loss"], record["valid_loss"]))
    source = last["ema"]["model"] if chosen == "ema" else last["model"]
    assert all(torch.equal(best["model"][k], source[k]) for k in source)


def test_best_checkpoint_takes_the_average_when_it_was_better():
    from prep.engine.state import best_checkpoint

    state = {"model": {"w": torch.zeros(1)}, "ema": {"model": {"w": torch.ones(1)}, "updates": 3}, "best_weights": "ema", "optimizer": {}}
    best = best_checkpoint(state)
    assert torch.equal(best["model"]["w"], torch.ones(1)) and "ema" not in best and "optimizer" not in best
    assert torch.equal(best_checkpoint({**state, "best_weights": "trained"})["model"]["w"], torch.zeros(1))


# -- bfloat16 on CPUs -------------------------------------------------------------------------------


def test_bf16_on_a_cpu_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights(imbalanced_root: Path, tmp_path: Path, monkeypatch):
    import prep.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)  # torch emulates it where the CPU lacks it
    chosen = precision.Precision.choose("bf16", torch.device("cpu"))
    assert chosen.dtype == torch.bfloat16 and chosen.wants_channels_last and not chosen.scaler.is_enabled()
    with chosen.autocast():
        assert torch.nn.Conv2d(3, 4, 3)(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
    assert precision.Precision.choose("auto", torch.device("cpu")).dtype is None  # auto stays float32 on CPUs
    model, summary = _run(imbalanced_root, tmp_path / "run", TrainConfig(epochs=1, lr=0.05, amp="bf16"), _seeded(TinyNet))
    assert summary["status"] == "completed" and math.isfinite(json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["train_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)


# -- Under torchrun -------------------------------------------------------------------------------


def _ddp_recipe_rank(rank: int, port: int, root: str, out: str) -> None:
    """One of two Gloo processes training with the balanced sampler, mixing and EMA."""
    import os

    from prep.engine.distributed import World

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    world = World(rank, rank, 2)
    train_set = ClassificationDataset(Path(root), "train", transform=build_pipeline("light", 16, train=True, seed=0))
    valid_set = ClassificationDataset(Path(root), "valid", transform=build_pipeline("light", 16, train=False))
    weights = balanced_weights([(label,) for _, label in train_set.samples], 2)
    place = {"rank": world.rank, "world_size": world.size}
    model = _seeded(TinyNet)
    config = TrainConfig(epochs=2, lr=0.05, seed=2, ema=0.9, mixup=0.4, cutmix=1.0)
    summary = fit(
        model, create_loader(train_set, 8, train=True, workers=0, weights=weights, **place),
        create_loader(valid_set, 16, train=False, workers=0, **place), config, Path(out) / "run", task=TASK,
        classes=train_set.classes, mean=MEAN, std=STD, head=model.head, world=world,
    )
    ema = load_checkpoint(Path(out) / "run" / "last.pt")["ema"] if rank == 0 else None
    torch.save({"model": model.state_dict(), "steps": summary["steps"], "ema": ema}, Path(out) / f"rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_under_torchrun_the_sampler_mixing_and_ema_keep_the_ranks_in_step(imbalanced_root: Path, tmp_path: Path):
    from conftest import run_two_gloo_ranks

    run_two_gloo_ranks(_ddp_recipe_rank, (str(imbalanced_root), str(tmp_path)), seconds=240)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # 80 draws an epoch shared by two ranks at batches of 8: 5 steps an epoch.
    assert ranks[0]["steps"] == ranks[1]["steps"] == 10 and ranks[0]["ema"]["updates"] == 10
    # The weights agree; BatchNorm's running statistics are each rank's own (DDP sends rank 0's
    # at every forward pass, and the last one is kept where it was measured).
    weights = [name for name, _ in TinyNet().named_parameters()]
    for name in weights:
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), name
    assert any(not torch.equal(ranks[0]["ema"]["model"][name], ranks[0]["model"][name]) for name in weights)
