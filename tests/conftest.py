"""Fixtures that build small image folders in tmp_path, and helpers to compare trees."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 32), fmt: str = "JPEG") -> bytes:
    """A small, distinct image (different seeds give different bytes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def run_two_gloo_ranks(target, args: tuple, seconds: float) -> None:
    """Run ``target(rank, port, *args)`` in two spawned processes that meet on a free local
    port (Gloo); a rank left waiting for the other fails the test after ``seconds``."""
    import socket
    import time

    import torch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = torch.multiprocessing.start_processes(target, args=(port, *args), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + seconds
    while not job.join(timeout=5):
        if time.monotonic() > deadline:
            for process in job.processes:
                process.kill()
            pytest.fail(f"the two ranks did not finish in {seconds:.0f} s: one is waiting for the other")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content hash, for every file under root (links as their target)."""
    result = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[rel] = "link:" + os.readlink(path)
            else:
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def dirs(root: Path) -> set[str]:
    return {Path(d).relative_to(root).as_posix() for d, _, _ in os.walk(root)}


@pytest.fixture
def flat_dataset(tmp_path: Path) -> Path:
    """Kaggle dogs-vs-cats shape: train/cat.N.jpg, train/dog.N.jpg, test1/N.jpg."""
    root = tmp_path / "dogsandcats"
    for i in range(20):
        write(root / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(root / "train" / f"dog.{i}.jpg", jpeg_bytes(1000 + i))
    for i in range(1, 6):
        write(root / "test1" / f"{i}.jpg", jpeg_bytes(5000 + i))
    return root


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run every test from its own working directory, so workspace state never leaks."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("PREP_DATA", raising=False)
    monkeypatch.delenv("PREP_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PREP_STRICT_PLUGINS", raising=False)
    yield
    from prep.plugins import reset_plugin_host

    reset_plugin_host()
