"""Checkpoints: round trip, random states, malicious pickles, kills during a save."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prep.engine.checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


def tiny_state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 6)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "step": 120,
            "classes": ["cat", "dog"], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "config": {"lr": 1e-3}}


def test_round_trip_keeps_every_tensor_and_field(tmp_path: Path):
    state = tiny_state(0)
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["classes"] == ["cat", "dog"] and loaded["epoch"] == 3 and loaded["config"] == {"lr": 1e-3}
    for key, tensor in state["model"].items():
        assert torch.equal(loaded["model"][key], tensor)
    assert loaded["optimizer"]["state"][0]["exp_avg"].shape == state["optimizer"]["state"][0]["exp_avg"].shape


def test_random_states_resume_the_same_draws(tmp_path: Path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"prep_checkpoint": 1, "model": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="Refusing"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not (tmp_path / "pwned").exists()


def test_missing_corrupt_and_foreign_files(tmp_path: Path):
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a prep checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


SAVER = """
import sys, torch
from pathlib import Path
from prep.engine.checkpoint import save_checkpoint
path = Path(sys.argv[1])
big = {"model": {"w": torch.randn(4_000_000)}, "epoch": 0}
print("ready", flush=True)
epoch = 1
while True:
    big["epoch"] = epoch
    save_checkpoint(path, big)
    epoch += 1
"""


@pytest.mark.slow  # real processes killed while saving
def test_sigkill_during_saves_leaves_the_last_good_checkpoint(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 0})
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(path)  # never half-written
        assert isinstance(state["epoch"], int)
