"""The training step and how often the host reads what the device computed: every batch on a
CPU, where a read is free; on a GPU about twice a second, never at every batch; and the
same decisions (a non-finite loss named at its step, a Ctrl-C, the epoch's loss) either way."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from prep.builtin_tasks.classification.task import ClassificationTask
from prep.data.datasets import ClassificationDataset
from prep.data.loader import create_loader
from prep.engine import epoch as epoch_module
from prep.engine.config import TrainConfig
from prep.engine.epoch import DeviceSums, NonFiniteLossError, Pacer
from prep.engine.fit import fit
from prep.testing import make_classification_dataset

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


class FakeClock:
    """Time that moves only when told: each batch "takes" ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_on_a_gpu_the_host_reads_about_twice_a_second_and_on_a_cpu_at_every_batch():
    gpu = Pacer(reads_are_free=False, clock=FakeClock(0.01))  # a batch every 10 ms
    assert gpu.due(last_batch=False)  # the first batch is read: the pace is not known yet
    gpu.read(gpu.seconds())
    reads = 1
    for _ in range(500):
        if gpu.due(last_batch=False):
            reads += 1
            gpu.read(gpu.seconds())
    assert 2 <= reads <= 15  # 500 batches of 10 ms: about every 0.5 s, not 500 times
    assert gpu.every >= 20
    cpu = Pacer(reads_are_free=True, clock=FakeClock(0.01))
    assert all(cpu.due(last_batch=False) for _ in range(50))
    cpu.read(cpu.seconds())
    assert cpu.every == 1
    assert Pacer(reads_are_free=False).due(last_batch=True)  # the epoch's end is always read


def test_device_sums_keep_the_first_step_whose_loss_was_not_finite():
    sums = DeviceSums(torch.device("cpu"))
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0]):
        sums.add(torch.tensor(value), 4, step)
    assert int(sums.bad_step) == 2 and torch.isnan(sums.bad_loss)
    with pytest.raises(NonFiniteLossError, match=r"The loss became nan at step 2 \(epoch 1\); stopped\. The last good checkpoint is x\.pt"):
        sums.look(epoch_module.World(), Pacer(True), False, step=4, epoch=1, checkpoint="x.pt")


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(4, 2)
        self.nan_from: int | None = None
        self.calls = 0

    def forward(self, x):
        self.calls += self.training
        out = self.head(self.body(x))
        return out * float("nan") if self.nan_from is not None and self.training and self.calls > self.nan_from else out


def _train(root: Path, run_dir: Path, model: Small, epochs: int = 2, max_steps: int | None = None) -> dict:
    train = ClassificationDataset(root, "train")
    valid = ClassificationDataset(root, "valid")
    loaders = create_loader(train, 2, train=True, workers=0), create_loader(valid, 4, train=False, workers=0)
    return fit(model, *loaders, TrainConfig(epochs=epochs, lr=0.01, max_steps=max_steps), run_dir, task=ClassificationTask(), classes=train.classes,
               mean=MEAN, std=STD, head=model.head)


def _digest(model: torch.nn.Module) -> str:
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()


@pytest.fixture
def gpu_pacing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pace the reads as on a GPU (batches of 10 ms), and count them."""
    looks: list[int] = []
    real_look = DeviceSums.look

    def look(self, *args, **kwargs):
        looks.append(kwargs["step"])
        return real_look(self, *args, **kwargs)

    monkeypatch.setattr(Pacer, "for_device", classmethod(lambda cls, device: cls(reads_are_free=False, clock=FakeClock(0.01))))
    monkeypatch.setattr(DeviceSums, "look", look)
    return looks


def test_pacing_reads_changes_no_weight_and_no_figure(tmp_path: Path, gpu_pacing: list[int], monkeypatch: pytest.MonkeyPatch):
    root = make_classification_dataset(tmp_path / "data", per_class=24)  # 24 batches an epoch
    torch.manual_seed(0)
    paced = Small()
    paced_summary = _train(root, tmp_path / "paced", paced)
    reads = len(gpu_pacing)
    monkeypatch.undo()  # back to a read after every batch, as on a CPU
    torch.manual_seed(0)
    every = Small()
    every_summary = _train(root, tmp_path / "every", every)
    assert reads < 2 * 24 / 4, reads  # 48 batches, a few reads an epoch
    assert _digest(paced) == _digest(every)
    metrics = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("paced", "every")]
    losses = [[line.split('"train_loss": ')[1].split(",")[0] for line in run] for run in metrics]
    assert losses[0] == losses[1] and paced_summary["best_valid_acc"] == every_summary["best_valid_acc"]


def test_a_loss_that_stops_being_finite_between_reads_is_named_at_its_own_step(tmp_path: Path, gpu_pacing: list[int]):
    root = make_classification_dataset(tmp_path / "data", per_class=24)
    model = Small()
    model.nan_from = 30  # the 31st training batch: step 30, in the second epoch
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 30 \(epoch 2\)"):
        _train(root, tmp_path / "run", model, epochs=3)
    assert gpu_pacing[-1] > 30  # read some batches later, and still named at step 30


def test_a_loss_that_stops_being_finite_after_the_last_read_never_reaches_a_checkpoint(tmp_path: Path, gpu_pacing: list[int]):
    root = make_classification_dataset(tmp_path / "data", per_class=24)
    model = Small()
    model.nan_from = 30  # step 30 ... and max_steps ends the run at step 32, between two reads
    with pytest.raises(NonFiniteLossError, match=r"became nan at step 30 \(epoch 2\)"):
        _train(root, tmp_path / "run", model, epochs=3, max_steps=32)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())
