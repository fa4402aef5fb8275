"""The shared training loop on CPU, with a tiny CNN on a tiny learnable dataset."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from conftest import run_two_gloo_ranks
from prep.augment.presets import build_pipeline
from prep.data.datasets import ClassificationDataset
from prep.data.loader import create_loader
from prep.engine.checkpoint import load_checkpoint
from prep.engine.distributed import World
from prep.engine.config import TrainConfig
from prep.engine.epoch import NonFiniteLossError
from prep.engine.fit import fit
from prep.testing import make_classification_dataset
from prep.builtin_tasks.classification.task import ClassificationTask

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    """Two classes of noisy squares, each its own colour: learnable in an epoch or two."""
    return make_classification_dataset(tmp_path_factory.mktemp("learnable"), ("cool", "warm"), per_class=40, valid_per_class=12, size=20)


TASK = ClassificationTask()


class TinyNet(torch.nn.Module):
    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.1),
        )
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.features(x))


def loaders(root: Path, seed: int = 0):
    train = ClassificationDataset(root, "train", transform=build_pipeline("light", 16, train=True, seed=seed))
    valid = ClassificationDataset(root, "valid", transform=build_pipeline("light", 16, train=False))
    return (create_loader(train, 8, train=True, workers=0, seed=seed),
            create_loader(valid, 16, train=False, workers=0), train.classes)


def run(root: Path, run_dir: Path, config: TrainConfig, model=None, resume=False):
    torch.manual_seed(config.seed)
    model = model or TinyNet()
    train, valid, classes = loaders(root, config.seed)
    summary = fit(model, train, valid, config, run_dir, task=TASK, classes=classes, mean=MEAN, std=STD, head=model.head, resume=resume)
    return model, summary


def test_two_epochs_learn_and_write_the_run_folder(dataset_root: Path, tmp_path: Path):
    _, summary = run(dataset_root, tmp_path / "run", TrainConfig(epochs=2, lr=0.05, scheduler="cosine", warmup_epochs=0.5))
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert summary["final_valid_acc"] > 0.8  # chance is 0.5
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "summary.json", "config.yaml", "curves.png", "confusion.png"} <= names
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["best_valid_acc"] >= written["final_valid_acc"] and written["best"].endswith("best.pt")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["classes"] == ["cool", "warm"] and state["epoch"] == 2 and state["mean"] == MEAN


def test_resume_gives_exactly_the_weights_of_an_uninterrupted_run(dataset_root: Path, tmp_path: Path):
    config = TrainConfig(epochs=2, lr=0.05, scheduler="step", step_size=1, gamma=0.5, seed=3)
    straight, _ = run(dataset_root, tmp_path / "straight", config)
    steps_per_epoch = len(loaders(dataset_root)[0])
    first, summary = run(dataset_root, tmp_path / "split", TrainConfig(**{**config.__dict__, "max_steps": steps_per_epoch}))
    assert summary["status"] == "max-steps" and summary["epochs"] == 1
    resumed, summary = run(dataset_root, tmp_path / "split", config, resume=True)
    assert summary["epochs"] == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


class NanAfter(TinyNet):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls, self.left = calls, calls

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.left -= 1
            if self.left < 0:
                return out * float("nan")
        return out


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(dataset_root: Path, tmp_path: Path):
    steps_per_epoch = len(loaders(dataset_root)[0])
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        run(dataset_root, tmp_path / "run", TrainConfig(epochs=3, lr=0.01), model=NanAfter(steps_per_epoch + 2))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_early_stopping_stops(dataset_root: Path, tmp_path: Path):
    _, summary = run(dataset_root, tmp_path / "run", TrainConfig(epochs=6, lr=0.0, scheduler="none", early_stop_patience=1))
    assert summary["status"] == "early-stopped" and summary["epochs"] == 3


class InterruptAt(TinyNet):
    def __init__(self, call: int) -> None:
        super().__init__()
        self.left = call

    def forward(self, x):
        if self.training:
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C
        return super().forward(x)


def _seeded(model_class, *args):
    torch.manual_seed(11)
    return model_class(*args)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_first_ctrl_c_saves_and_resume_finishes_as_if_never_stopped(dataset_root: Path, tmp_path: Path, accumulate: int):
    # Stopped in the middle of epoch 2 (10 batches an epoch); the step-per-epoch scheduler and
    # dropout show whether the resume really goes on from the next batch with the same state.
    config = TrainConfig(epochs=3, lr=0.05, scheduler="step", step_size=1, gamma=0.5, accumulate=accumulate, seed=2)
    straight, straight_summary = run(dataset_root, tmp_path / "straight", config, model=_seeded(TinyNet))
    _, summary = run(dataset_root, tmp_path / "run", config, model=_seeded(InterruptAt, 14))
    assert summary["status"] == "interrupted" and summary["epochs"] == 1
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["partial_epoch"]["batches"] == 14 - 10 and state["step"] == (10 + 4) // accumulate
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1]  # a cut-short epoch is not validated or logged

    resumed, summary = run(dataset_root, tmp_path / "run", config, model=_seeded(TinyNet), resume=True)
    assert summary["status"] == "completed" and summary["steps"] == straight_summary["steps"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2, 3]
    for got, want in zip(logged, expected):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-9) and got["lr"] == want["lr"]
        assert (got["train_acc"], got["valid_acc"]) == (want["train_acc"], want["valid_acc"])


def test_ctrl_c_in_the_first_epoch_reports_no_accuracy(dataset_root: Path, tmp_path: Path):
    _, summary = run(dataset_root, tmp_path / "run", TrainConfig(epochs=2, lr=0.01), model=InterruptAt(3))
    assert (summary["status"], summary["epochs"], summary["steps"]) == ("interrupted", 0, 3)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["best_valid_acc"] is None and written["final_valid_acc"] is None  # not -Infinity
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_resuming_a_run_that_reached_max_steps_trains_no_further(dataset_root: Path, tmp_path: Path):
    config = TrainConfig(epochs=3, lr=0.01, max_steps=4)
    _, first = run(dataset_root, tmp_path / "run", config)
    before = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    model, second = run(dataset_root, tmp_path / "run", config, resume=True)
    assert first["steps"] == second["steps"] == 4 and second["status"] == "max-steps"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_freeze_backbone_trains_the_head_first_and_survives_resume(dataset_root: Path, tmp_path: Path):
    config = TrainConfig(epochs=2, lr=0.05, scheduler="none", freeze_backbone_epochs=1, seed=5)
    torch.manual_seed(5)
    initial = TinyNet().state_dict()
    steps_per_epoch = len(loaders(dataset_root)[0])
    _, summary = run(dataset_root, tmp_path / "split", TrainConfig(**{**config.__dict__, "max_steps": steps_per_epoch}))
    after_one = load_checkpoint(tmp_path / "split" / "last.pt")
    assert after_one["backbone_frozen"] and after_one["epoch"] == 1
    weights = after_one["model"]
    assert torch.equal(weights["features.0.weight"], initial["features.0.weight"])  # the conv stayed frozen
    assert not torch.equal(weights["features.1.weight"], initial["features.1.weight"])  # norms keep learning
    assert not torch.equal(weights["head.weight"], initial["head.weight"])
    resumed, _ = run(dataset_root, tmp_path / "split", config, resume=True)
    assert not torch.equal(resumed.state_dict()["features.0.weight"], initial["features.0.weight"])
    straight, _ = run(dataset_root, tmp_path / "straight", config)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["backbone_frozen"] for r in records] == [True, False]


def test_freezing_needs_a_head(dataset_root: Path, tmp_path: Path):
    from prep.errors import UsageError

    train, valid, classes = loaders(dataset_root)
    with pytest.raises(UsageError, match="--freeze-backbone"):
        fit(TinyNet(), train, valid, TrainConfig(freeze_backbone_epochs=1), tmp_path / "run", task=TASK, classes=classes, mean=MEAN, std=STD)


def test_a_run_folder_holding_a_run_is_never_overwritten(dataset_root: Path, tmp_path: Path):
    from prep.engine.run_folder import RunExistsError

    run(dataset_root, tmp_path / "run", TrainConfig(epochs=1, lr=0.01))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(RunExistsError, match="--resume"):
        run(dataset_root, tmp_path / "run", TrainConfig(epochs=1, lr=0.01))
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


class RecordingProgress:
    def __init__(self) -> None:
        self.tasks: list[tuple[str, int, list]] = []

    @contextmanager
    def task(self, description: str, total: int):
        updates: list = []
        self.tasks.append((description, total, updates))
        yield lambda n, status=None: updates.append((n, status))


def test_progress_shows_each_epoch_with_live_loss_and_images_per_second(dataset_root: Path, tmp_path: Path):
    progress = RecordingProgress()
    train, valid, classes = loaders(dataset_root)
    model = TinyNet()
    fit(model, train, valid, TrainConfig(epochs=2, lr=0.01), tmp_path / "run", task=TASK, classes=classes, mean=MEAN, std=STD, head=model.head, progress=progress)
    names = [(d, t) for d, t, _ in progress.tasks]
    assert names == [("Epoch 1/2", len(train)), ("Validating", len(valid)), ("Epoch 2/2", len(train)), ("Validating", len(valid))]
    epoch_updates = progress.tasks[0][2]
    assert sum(n for n, _ in epoch_updates) == len(train)
    assert all(re.fullmatch(r"loss \d+\.\d{4} · [\d,]+ img/s · loader [\d,]+ img/s", status) for _, status in epoch_updates)


class PlainNet(torch.nn.Module):
    """No batch norm and no dropout: a batch's gradient is then the mean of its parts'."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features(x))


def _plain_run(root: Path, run_dir: Path, batch_size: int, config: TrainConfig, world: World = World()) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = PlainNet()
    # The "none" preset only resizes, so every batch size sees the same pixels.
    train = ClassificationDataset(root, "train", transform=build_pipeline("none", 16, train=True))
    valid = ClassificationDataset(root, "valid", transform=build_pipeline("none", 16, train=False))
    place = {"rank": world.rank, "world_size": world.size}
    summary = fit(
        model, create_loader(train, batch_size, train=True, workers=0, **place),
        create_loader(valid, 16, train=False, workers=0, **place),
        config, run_dir, task=TASK, classes=train.classes, mean=MEAN, std=STD, head=model.head, world=world,
    )
    return model, summary


SGD_PLAIN = dict(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0, scheduler="none")


@pytest.mark.parametrize("micro, accumulate, steps", [(4, 2, 10), (8, 4, 3)])
def test_accumulating_small_batches_equals_one_full_batch(dataset_root: Path, tmp_path: Path, micro: int, accumulate: int, steps: int):
    # 80 images: 8 x 4 accumulates 4, 4 and then 2 batches, like full batches of 32, 32 and 16;
    # the last, shorter group must be averaged over its own 2 batches, not over 4.
    full, full_summary = _plain_run(dataset_root, tmp_path / "full", micro * accumulate, TrainConfig(**SGD_PLAIN))
    halves, half_summary = _plain_run(dataset_root, tmp_path / "halves", micro, TrainConfig(**SGD_PLAIN, accumulate=accumulate))
    assert half_summary["steps"] == full_summary["steps"] == steps
    for (name, a), b in zip(full.state_dict().items(), halves.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def _ddp_rank(rank: int, port: int, root: str, out: str, batch_size: int, accumulate: int) -> None:
    """One of two Gloo processes; saves its weights and step count at the end."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    model, summary = _plain_run(Path(root), Path(out) / "run", batch_size, TrainConfig(**SGD_PLAIN, accumulate=accumulate), World(rank, rank, 2))
    torch.save({"model": model.state_dict(), "steps": summary["steps"]}, Path(out) / f"rank{rank}.pt")
    # Both ranks finish before either tears down: a rank whose peer closes the Gloo
    # connection under it aborts ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _two_ranks(root: Path, out: Path, batch_size: int, accumulate: int = 1) -> list[dict]:
    """Train on two Gloo processes; a hang (a rank left waiting in a collective) fails the test."""
    run_two_gloo_ranks(_ddp_rank, (str(root), str(out), batch_size, accumulate), seconds=180)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_ddp_with_accumulation_equals_one_process_with_the_whole_batch(dataset_root: Path, tmp_path: Path):
    # Two ranks x batches of 4 x 2 accumulated = 16 images a step, and the ranks deal the shuffled
    # order between them, so each step sees the same 16 images as a single process's batch of 16.
    # DDP skips the all-reduce on the first batch of each pair (no_sync); if it skipped it on
    # the batch that steps too, the two ranks would drift apart.
    ranks = _two_ranks(dataset_root, tmp_path, batch_size=4, accumulate=2)
    single, summary = _plain_run(dataset_root, tmp_path / "single", 16, TrainConfig(**SGD_PLAIN))
    assert ranks[0]["steps"] == ranks[1]["steps"] == summary["steps"] == 5  # 80 images
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), name
        assert torch.allclose(ranks[0]["model"][name], value, atol=1e-6), name


@pytest.mark.slow
def test_ddp_ranks_skip_a_batch_of_corrupt_images_together(dataset_root: Path, tmp_path: Path):
    # Batches of 1: the rank that draws the corrupt image has an empty batch. Were it to skip
    # that batch alone, the other rank would wait in DDP's all-reduce forever.
    root = tmp_path / "data"
    shutil.copytree(dataset_root, root)
    (root / "train" / "warm" / "warm_0.png").write_bytes(b"not a png")  # one of the 80, unreadable
    ranks = _two_ranks(root, tmp_path, batch_size=1)
    assert ranks[0]["steps"] == ranks[1]["steps"] == 80 // 2 - 1
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name


def test_gradient_clipping_bounds_every_step(dataset_root: Path, tmp_path: Path):
    torch.manual_seed(0)
    before = [p.detach().clone() for p in PlainNet().parameters()]
    config = TrainConfig(epochs=1, lr=1.0, optimizer="sgd", momentum=0.0, weight_decay=0.0, scheduler="none", clip_grad_norm=1e-3)
    model, summary = _plain_run(dataset_root, tmp_path / "run", 8, config)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < float(moved) <= summary["steps"] * 1e-3 * (1 + 1e-5)  # each step moves at most lr x max norm


@pytest.mark.slow
def test_compile_trains_the_same_model_and_saves_plain_weights(dataset_root: Path, tmp_path: Path):
    # torch.compile wraps the module; a checkpoint of the wrapper would have "_orig_mod." keys
    # that no plain model loads. Inductor may reorder float sums, hence a tolerance, not equality;
    # it also draws dropout masks from its own generator, so dropout is off for the comparison.
    # SGD, because Adam turns the float noise in the conv bias's ~0 gradient (BatchNorm follows
    # it) into full-size steps.
    def without_dropout() -> TinyNet:
        torch.manual_seed(5)
        model = TinyNet()
        model.features[5].p = 0.0
        return model

    config = TrainConfig(epochs=1, lr=0.05, optimizer="sgd", seed=5)
    eager, _ = run(dataset_root, tmp_path / "eager", config, model=without_dropout())
    compiled, summary = run(dataset_root, tmp_path / "compiled", TrainConfig(**{**config.__dict__, "compile": True}), model=without_dropout())
    assert summary["status"] == "completed"
    saved = load_checkpoint(tmp_path / "compiled" / "last.pt")["model"]
    assert list(saved) == list(TinyNet().state_dict())
    for name, value in eager.state_dict().items():
        assert torch.allclose(value.float(), saved[name].float(), atol=1e-4), name
